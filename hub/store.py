"""The store: the source of truth. Every message in and out with its raw bytes, canonical form, state and
history; conversations by business key; the ids already seen; the work queue's table.

Times are seconds since the epoch (float): portable across SQLite and PostgreSQL and cheap to index.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import threading
import time
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from operator import itemgetter
from pathlib import Path
from typing import Any

from psycopg.rows import namedtuple_row
from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    any_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement, Delete, Insert, Select, Update
from sqlalchemy.sql.dml import ReturningDelete, ReturningInsert, ReturningUpdate
from sqlalchemy.sql.visitors import InternalTraversal, _TraverseInternalsType

from hub.identifiers import time_ordered_id

metadata = MetaData()

messages = Table(
    "messages",
    metadata,
    Column("id", String(36), primary_key=True),  # the hub's id for this stored message
    Column("direction", String(3), nullable=False),  # "in" from a partner, "out" to a partner
    Column("partner", String(40), nullable=False),
    Column("message_id", String(36)),  # the message's own id (guid / messageId), once read
    Column("message_type", String(40)),
    Column("family", String(40)),
    Column("business_key", String(60)),
    Column("state", String(20), nullable=False),
    Column("file_name", String(255)),
    Column("size", Integer, nullable=False),
    Column("raw", LargeBinary),  # absent only for inputs over the partner's size limit (kept on disk)
    Column("canonical", Text),  # the canonical model as JSON, once read
    Column("answers", String(36), ForeignKey("messages.id")),  # outbound: the inbound message it forwards/answers
    Column("error_code", String(40)),
    Column("error_field", String(300)),
    Column("error_message", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_messages_message_id", "message_id"),
    # The conversation's messages, and those sent to one partner in it (answers end their wait for receipts).
    Index("ix_messages_conversation", "family", "business_key", "direction", "partner"),
    Index("ix_messages_answers", "answers"),
)
# What status and operators look for by state (inputs awaiting a signature, parked messages) has an error code,
# and few rows have one. No index holds the state itself: PostgreSQL then changes a message's state in place
# (a HOT update, with room left in each page for it: _FILLFACTOR), where an indexed state made every state change
# write a new entry in each of the table's indexes, and each forwarded copy and receipt changes state twice.
Index("ix_messages_error", messages.c.error_code, postgresql_where=messages.c.error_code.is_not(None),
      sqlite_where=messages.c.error_code.is_not(None))
_FILLFACTOR = 70  # percent of a messages page filled by inserts (measured: PostgreSQL's CPU a message -18 %)
# PostgreSQL compresses a message's bytes and canonical form with lz4 where the server has it: its default, pglz,
# took 2.3 times the server's CPU to store message rows (measured by COPY: 126 -> 54 µs a row, for 18 % more room).
_COMPRESSED = ("raw", "canonical")
# Created by earlier versions, dropped by create_schema: ix_messages_state (above); the tallies' (now counted by
# message_counts and conversation_counts, below).
_RETIRED_INDEXES = ("ix_messages_state", "ix_messages_tally", "ix_conversations_tally")

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message", String(36), ForeignKey("messages.id"), nullable=False),
    Column("at", Float, nullable=False),
    Column("event", String(30), nullable=False),
    Column("detail", Text, nullable=False, default=""),
    Index("ix_events_message", "message"),
)
# History events that /metrics counts, named once, here. Both are rare among the events every message adds (a failed
# attempt, a receipt that did not come), and the history is kept for retention's 90 days: each has a partial index,
# and its count (count_events) reads that index alone, not the whole history, at every scrape.
RETRY_EVENT = "retry"  # a failed attempt that will be tried again
RECEIPT_TIMEOUT_EVENT = "receipt-timeout"  # a receipt that did not come in time (a resend follows, or parking)
for _event in (RETRY_EVENT, RECEIPT_TIMEOUT_EVENT):
    Index(f"ix_events_{_event.replace('-', '_')}", events.c.event, postgresql_where=events.c.event == _event,
          sqlite_where=events.c.event == _event)
del _event

conversations = Table(
    "conversations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("family", String(40), nullable=False),
    Column("business_key", String(60), nullable=False),
    Column("enterprise", String(18), nullable=False),
    Column("state", String(30), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("family", "business_key"),
)

# How many messages and conversations the store holds, by what /status and /metrics count them by, kept by the
# database itself: its triggers (_counting_triggers) add a row of +1 or -1 for each row inserted or deleted and each
# change of a counted column, and Store.compact_counts sums those rows now and then. A count reads these few rows,
# not what retention keeps for 90 days: measured (2026-11-24), /status took 680 ms on PostgreSQL with a million
# messages, 23 with these counts; on SQLite with 320,000, 79 ms counting from an index of the counted columns (which
# every state change also wrote), 11 with these. Rows are only added, never updated: with a row a key, updated, every
# writer would wait for the others' commits.
_COUNTED: dict[Table, Table] = {}  # each counts table, and the table it counts


def _counts(name: str, counted: Table, *keys: str) -> Table:
    counts = Table(name, metadata, Column("id", Integer, primary_key=True, autoincrement=True),
                   *(Column(key, counted.c[key].type, nullable=counted.c[key].nullable) for key in keys),
                   Column("n", Integer, nullable=False))
    _COUNTED[counts] = counted
    return counts


message_counts = _counts("message_counts", messages, "family", "message_type", "direction", "partner", "state")
conversation_counts = _counts("conversation_counts", conversations, "family", "state")
_COMPACT_PAST_ROWS = 10_000  # a counts table's rows beyond which Store.compact_counts sums them

# Idempotent consumer: a (partner, message id) pair is taken once; repeats are answered, not processed.
seen_messages = Table(
    "seen_messages",
    metadata,
    Column("partner", String(40), primary_key=True),
    Column("message_id", String(36), primary_key=True),
    Column("first", String(36), ForeignKey("messages.id"), nullable=False),
)

# Idempotent consumer by business key and version: one document (its content, appTime included, but not its
# message id) is taken once under its key, whatever id its sender gives it when it sends it again.
seen_versions = Table(
    "seen_versions",
    metadata,
    Column("message_type", String(40), primary_key=True),
    Column("business_key", String(60), primary_key=True),
    Column("version", String(64), primary_key=True),  # sha-256 of the canonical content without the message id
    Column("first", String(36), ForeignKey("messages.id"), nullable=False),
)

# Delivered messages whose receipt has not come: due when the partner's receipt timeout passes.
awaited_receipts = Table(
    "awaited_receipts",
    metadata,
    Column("message", String(36), ForeignKey("messages.id"), primary_key=True),
    Column("partner", String(40), nullable=False),
    Column("due_at", Float, nullable=False),
    Column("resends", Integer, nullable=False),  # sent again for want of the receipt, since the last delivery
    Index("ix_awaited_receipts_due", "due_at"),
)

# Business identifiers other than a conversation's key that later messages cite (a claim names its policy by
# number; the policy's conversation is keyed by its proposal), recorded when the message is accepted.
references = Table(
    "references",
    metadata,
    Column("kind", String(20), primary_key=True),
    Column("key", String(60), primary_key=True),
    Column("message", String(36), ForeignKey("messages.id"), nullable=False),
)

work = Table(
    "work",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(20), nullable=False),
    Column("message", String(36), ForeignKey("messages.id"), nullable=False),
    Column("state", String(10), nullable=False),  # ready, leased, parked (done items are deleted)
    Column("attempts", Integer, nullable=False, default=0),
    Column("available_at", Float, nullable=False),
    Column("lease_until", Float),
    Column("lease_owner", String(80)),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    Index("ix_work_claim", "state", "available_at"),
    Index("ix_work_lease", "state", "lease_until"),
)

# Each run of a scheduled job, whichever process ran it: `jobs` and /status show the last, /metrics counts them.
# An operator's `jobs run NAME` while another process leads is a "requested" row that the leader runs.
job_runs = Table(
    "job_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job", String(60), nullable=False),
    Column("trigger", String(10), nullable=False),  # "schedule" or "operator"
    Column("state", String(10), nullable=False),  # requested, running, ok, failed
    Column("requested_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("runner", String(80)),  # host:pid of the process that ran it
    Column("result", Text),  # the job's one-line result
    Column("error", Text),
    Index("ix_job_runs_job", "job", "id"),
    Index("ix_job_runs_state", "state"),
)

# What retention removed from the hot store, counted, so the totals /metrics reports never go down.
retired_totals = Table(
    "retired_totals",
    metadata,
    Column("direction", String(3), primary_key=True),
    Column("partner", String(40), primary_key=True),
    Column("messages", Integer, nullable=False, default=0),
    Column("retries", Integer, nullable=False, default=0),
    Column("receipt_timeouts", Integer, nullable=False, default=0),
)
# Finished runs of each job that retention removed (hub/scheduler/retention.py), so /metrics' counters of runs and
# failures never go down.
retired_job_runs = Table(
    "retired_job_runs",
    metadata,
    Column("job", String(60), primary_key=True),
    Column("runs", Integer, nullable=False, default=0),
    Column("failures", Integer, nullable=False, default=0),
)


# How far a scheduled job has got (the risk feed's position, the last period compiled), moved in the same
# transaction as the work it records, so a crash leaves it where the store's facts are.
cursors = Table(
    "cursors",
    metadata,
    Column("name", String(80), primary_key=True),
    Column("position", String(200), nullable=False),
    Column("updated_at", Float, nullable=False),
)


_WRITE = "hub_write"
_EVENTS = "hub_events"  # a write transaction's events, inserted when it ends
# A write transaction's inserts (new messages, seen ids and versions, conversations, work, awaited receipts,
# events) and its messages' state changes (set_state), held back and written together, by statement: before the
# transaction reads or writes anything else, and when it ends. Other updates and deletes do not wait for held
# inserts (none touches a row not yet read or inserted), but do wait for held state changes (they may depend on them).
_HELD = "hub_held"
_CHANGED = "hub_changed"  # the messages whose state change is held (a second change of one writes the first)
_KNOWN = "hub_known"  # what a batch of decisions will look up, read ahead in one statement per table
# PostgreSQL: a write transaction owes its BEGIN (a serial one its lock too, _SERIAL_WRITES) until its first
# statement, and sends them with that one; its COMMIT goes with its last writes. psycopg, left to begin and commit
# on its own, spent a round trip on each (its BEGIN waits for the server's answer even in a pipeline).
_OWED = "hub_owed"  # statements and their parameters
_BEGIN = ("BEGIN", ())
_ENDED = "hub_ended"  # the transaction's last statements are sent (on PostgreSQL its COMMIT): nothing more runs in it
_CHECKS = "hub_checks"  # statements sent with the transaction's next ones, their rows counted (expect_rows)
_AFTER_LAST = "the write transaction has ended (its last statements are sent)"
_AT_COMMIT = "hub_at_commit"  # rows inserted with the transaction's last statements, whose ids are wanted after it
_COMMITTED = "hub_committed"  # what runs once the transaction has committed


_ONE_OF_EACH = "hub_one_of_each"  # compile among() as `= value` (see _sql)


class among(ColumnElement[bool]):
    """`column` is one of a list given when the statement runs (parameter `name`). On PostgreSQL `= ANY(array)`
    (a list of one: `= value`, see _sql): one statement text whatever the list's length, where an IN list's text
    (one per length) was expanded by SQLAlchemy, parsed by psycopg and planned by the server at each run (measured
    on a PostgreSQL backlog: 170 of the 1,900 µs a message the hub spent holding Python's lock); elsewhere an IN
    list."""

    inherit_cache = True
    _is_implicitly_boolean = True  # a condition in itself (else SQLite's WHERE gets "= 1")
    type = Boolean()
    # What the statement cache's key holds of it (SQLAlchemy declares this a list).
    _traverse_internals: _TraverseInternalsType = [  # noqa: RUF012
        ("column", InternalTraversal.dp_clauseelement), ("name", InternalTraversal.dp_string)]

    def __init__(self, column: Any, name: str) -> None:
        self.column, self.name = column, name


@compiles(among)
def _among_in_list(element: among, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.column.in_(bindparam(element.name, expanding=True)), **kw))


@compiles(among, "postgresql")
def _among_array(element: among, compiler: Any, **kw: Any) -> str:
    if kw.get(_ONE_OF_EACH):  # see _sql
        return str(compiler.process(element.column == bindparam(element.name, type_=element.column.type), **kw))
    return str(compiler.process(element.column == any_(bindparam(element.name, type_=ARRAY(element.column.type))),
                                **kw))


# Statements built once: the hot path passes only parameters. Building them per call (`.values(**kw)`) spent
# most of the hub's time in SQLAlchemy's statement coercion and cache-key generation (measured).
_INSERT_MESSAGE = insert(messages)
_INSERT_EVENT = insert(events)
_UPDATE_MESSAGE = update(messages).where(messages.c.id == bindparam("_id"))
_GET_MESSAGE = select(messages).where(messages.c.id == bindparam("_id"))
_AMONG = among(messages.c.id, "_ids")
# Messages of a list, oldest first (by hub id), as many as fit in `_bytes` together (always the first).
_RUNNING = select(messages.c.id, func.sum(messages.c.size).over(order_by=messages.c.id).label("bytes"),
                  func.row_number().over(order_by=messages.c.id).label("n")).where(_AMONG).subquery()
_GET_BATCH = (
    select(messages).join(_RUNNING, _RUNNING.c.id == messages.c.id)
    .where(or_(_RUNNING.c.n == 1, _RUNNING.c.bytes <= bindparam("_bytes")))
)
_PENDING_ANSWERS = (
    select(messages)
    .where(among(messages.c.answers, "_ids"), messages.c.state.in_(("pending", "delivering")))
    .order_by(messages.c.created_at)
)
_GET_HEADS = select(*(c for c in messages.c if c.name not in ("raw", "canonical"))).where(_AMONG)
_GET_STATES = select(messages.c.id, messages.c.state).where(_AMONG)
_STORED = select(messages.c.id).where(_AMONG)
_INSERT_SEEN = insert(seen_messages)
_FIRST_SEEN = select(seen_messages.c.first).where(
    seen_messages.c.partner == bindparam("_partner"), seen_messages.c.message_id == bindparam("_message_id")
)
_INSERT_VERSION = insert(seen_versions)
_FIRST_VERSION = select(seen_versions.c.first).where(
    seen_versions.c.message_type == bindparam("_type"), seen_versions.c.business_key == bindparam("_key"),
    seen_versions.c.version == bindparam("_version"),
)
_UPDATE_STATE_FROM = update(messages).where(messages.c.id == bindparam("_id"), messages.c.state == bindparam("_from"))
_ADVANCE_ALL = (
    update(messages).where(_AMONG, messages.c.state == bindparam("_from"))
    .values(state=bindparam("state"), updated_at=bindparam("updated_at")).returning(messages.c.id)
)
# Messages `_ids` now "delivered" await their receipts, due at `due_at`: those a receipt answered since their bytes
# landed have moved on and await nothing, and one awaiting already keeps its due time.
_AWAIT_DELIVERED = insert(awaited_receipts).from_select(
    ["message", "partner", "due_at", "resends"],
    select(messages.c.id, messages.c.partner, bindparam("due_at", type_=Float), literal(0))
    .where(_AMONG, messages.c.state == "delivered",
           ~select(awaited_receipts.c.message).where(awaited_receipts.c.message == messages.c.id).exists()),
).returning(awaited_receipts.c.message)
_STOP_AWAITING = delete(awaited_receipts).where(awaited_receipts.c.message == bindparam("_message"))
_ANSWERED_IN_CONVERSATION = delete(awaited_receipts).where(
    awaited_receipts.c.message.in_(
        select(messages.c.id).where(
            messages.c.direction == "out", messages.c.partner == bindparam("_partner"),
            messages.c.family == bindparam("_family"), messages.c.business_key == bindparam("_key"),
        )
    )
)


def _each_in(*columns: Any) -> Any:
    """Each of `columns` among a list given when the statement runs (_k0, _k1, …): every row whose key is asked is
    found, and perhaps other rows that exist as well. Not `(a, b) IN (VALUES …)`: SQLite answers that by scanning
    the whole table (the seen ids grow without end); it searches its index for these, as PostgreSQL does."""
    return and_(*(among(column, f"_k{n}") for n, column in enumerate(columns)))


_SEEN_KEY = (seen_messages.c.partner, seen_messages.c.message_id)
_VERSION_KEY = (seen_versions.c.message_type, seen_versions.c.business_key, seen_versions.c.version)
_CONVERSATION_KEY = (conversations.c.family, conversations.c.business_key)
_SENT_IN_CONVERSATION = (messages.c.partner, messages.c.family, messages.c.business_key)
# What a batch's decisions look up, read ahead (Store.look_ahead): by kind, the key's columns and a statement that
# selects them and what is known of the key (its last column; a conversation: the whole row).
_LOOK_AHEAD = {
    "seen": (_SEEN_KEY, select(*_SEEN_KEY, seen_messages.c.first).where(_each_in(*_SEEN_KEY))),
    "version": (_VERSION_KEY, select(*_VERSION_KEY, seen_versions.c.first).where(_each_in(*_VERSION_KEY))),
    "conversation": (_CONVERSATION_KEY, select(conversations).where(_each_in(*_CONVERSATION_KEY))),
    # How many messages the hub sent in a (partner, family, business key) conversation await their receipt.
    "awaited": (_SENT_IN_CONVERSATION, select(*_SENT_IN_CONVERSATION, func.count()).where(
        messages.c.id == awaited_receipts.c.message, messages.c.direction == "out", _each_in(*_SENT_IN_CONVERSATION)
    ).group_by(*_SENT_IN_CONVERSATION)),
}
_AWAITED = select(awaited_receipts).where(awaited_receipts.c.message == bindparam("_message"))
_OVERDUE = (
    select(awaited_receipts.c.message, awaited_receipts.c.partner)
    .join(messages, messages.c.id == awaited_receipts.c.message)
    .where(awaited_receipts.c.due_at <= bindparam("_now"), messages.c.state == "delivered")
    .order_by(awaited_receipts.c.due_at)
)
_POSTPONE = update(awaited_receipts).where(awaited_receipts.c.message == bindparam("_message"))
_RESENT = _POSTPONE.values(resends=awaited_receipts.c.resends + 1)
_CONVERSATION = select(conversations).where(
    conversations.c.family == bindparam("_family"), conversations.c.business_key == bindparam("_key")
)
_INSERT_CONVERSATION = insert(conversations)
_UPDATE_CONVERSATION = (
    update(conversations)
    .where(conversations.c.family == bindparam("_family"), conversations.c.business_key == bindparam("_key"))
    .values(state=bindparam("state"), updated_at=bindparam("updated_at"))
)


def new_id() -> str:
    return time_ordered_id()


def advisory_key(name: str) -> int:
    """PostgreSQL keys advisory locks by a 64-bit number: the name's hash, the same in every process."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


# PostgreSQL: a serial write transaction takes this lock first, so the pipeline's check-then-write decisions (seen
# before? the conversation's state?) are serialised across processes as SQLite serialises them; under READ
# COMMITTED alone two copies of one message both passed the seen-check. The queue's claims skip it (row locks).
_WRITES_KEY = advisory_key("hub writes")
_SERIAL_WRITES = (f"SELECT pg_advisory_xact_lock({_WRITES_KEY})", ())
# PostgreSQL: a transaction begun with durable=False commits without waiting for its WAL flush (set_config(..., true)
# lasts to the end of the transaction, explicit or a pipeline's implicit one).
_NOT_DURABLE = ("SELECT set_config('synchronous_commit', 'off', true)", ())
# A batch of decisions whose every check and write concerns its own keys alone (a message id from its sender, a
# conversation) takes the lock shared instead, then its keys' own locks, in one order (no deadlock between two
# such batches): other processes decide batches of other keys meanwhile, where each waited for the other's
# whole transaction; anything else still holds them all off, and waits for them. One statement: the array's
# first key is the writers' lock, taken shared; its rows are taken in order.
_SHARED_WRITES_THEN_KEYS = ("SELECT count(CASE WHEN n = 1 THEN pg_advisory_xact_lock_shared(k) ELSE "
                            "pg_advisory_xact_lock(k) END) FROM unnest(%b::int8[]) WITH ORDINALITY AS t(k, n)")


def _writing_held_rows_first(engine: Engine) -> Engine:
    @event.listens_for(engine, "before_execute")
    def _write_held(conn: Connection, clause: Any, *_args: Any) -> None:
        if conn.info.get(_ENDED):
            raise RuntimeError(f"{_AFTER_LAST}: {clause}")
        held = conn.info.get(_HELD)
        if conn.info.get(_OWED) or conn.info.get(_CHECKS) or (held and (not isinstance(clause, Update | Delete) or any(
                isinstance(statement, Update) for statement, _columns in held))):
            Store.write_held(conn)

    return engine


def make_engine(url: str, connections: int = 5) -> Engine:
    """`connections`: how many threads use the store at once; each holds at most one connection at a time."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # A worker never waits for a pooled connection. No ping before each checkout (a round trip, a quarter of
        # the end-to-end throughput here): after a server restart the first use of each stale connection fails,
        # SQLAlchemy discards the pool, and the step that met it is retried under the retry policy like any other
        # passing failure. The driver in autocommit mode on every connection: the store sends its transactions'
        # BEGIN and COMMIT itself (_OWED); a connection switched to it and back at each checkout cost 40-60 µs of
        # the client's CPU (measured), five or six times a message.
        return _writing_held_rows_first(create_engine(
            url, pool_size=connections, max_overflow=connections, future=True, isolation_level="AUTOCOMMIT"))
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = _writing_held_rows_first(
        create_engine(url, future=True, connect_args={"check_same_thread": False, "timeout": 30})
    )

    @event.listens_for(engine, "connect")
    def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (pysqlite's implicit transactions defeat BEGIN IMMEDIATE).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # No checkpoint inside a commit (it fsyncs: 100 ms and more on a busy disk, in whichever worker's
        # commit hit it): the running hub checkpoints in a thread of its own (Store.checkpoint).
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(conn: Connection) -> None:
        # Writers take the write lock at the start: two workers never claim the same row, and no
        # transaction fails half-way on a lock upgrade. Readers begin deferred and never block writers (WAL).
        # Straight to the driver: through SQLAlchemy's execute, a BEGIN cost as much as a statement.
        conn.connection.driver_connection.execute(  # type: ignore[union-attr]
            "BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN"
        )

    return engine


# PostgreSQL: each column type the tables use, as the array type an insert's column is sent in. Strings and integers
# go as the array's text, written by the hub (_array_text); raw bytes in binary form (in text form every byte of a
# message's raw bytes went as two hex digits, which the server then decoded), and floats too (their shortest text
# took longer to write than psycopg's binary form: 59 against 24 µs for 64 of them).
_ARRAY_TYPES = {String: "text[]", Text: "text[]", LargeBinary: "bytea[]", Float: "float8[]", Integer: "int4[]"}
_AS_TEXT = (String, Integer)  # Text is a String


def _array_text(values: Iterable[Any]) -> str:
    """Strings and integers (or None) as PostgreSQL's text form of an array: `{"a","b\\"c",NULL}`, `{1,2}`.
    psycopg's own dumping of a list looks at each element in Python: 15 µs for a list of one string, 26 for 64,
    against 1 and 17 µs here (measured), and a message's writes and reads pass about ninety lists."""
    return "{" + ",".join("NULL" if value is None else
                          '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' if isinstance(value, str) else
                          str(value) for value in values) + "}"


@functools.cache
def _write_text(dialect: Any, statement: Insert | Update, names: tuple[str, ...]) -> str:
    """SQLite: an insert of columns `names`, or a held state change (_UPDATE_MESSAGE) of them, the row's `_id`
    last, for executemany."""
    quote, table = dialect.identifier_preparer.quote, dialect.identifier_preparer.format_table(statement.table)
    if isinstance(statement, Update):
        assert statement is _UPDATE_MESSAGE and names[-1] == "_id"
        return f"UPDATE {table} SET {', '.join(f'{quote(n)} = ?' for n in names[:-1])} WHERE id = ?"
    return f"INSERT INTO {table} ({', '.join(quote(n) for n in names)}) VALUES ({', '.join('?' * len(names))})"


def _array_of(statement: Insert | Update, name: str) -> str:
    """The placeholder of column `name`'s array (`_id`: the row's id), as _ARRAY_TYPES says it goes."""
    column = statement.table.c["id" if name == "_id" else name]
    return f"%{'s' if isinstance(column.type, _AS_TEXT) else 'b'}::{_ARRAY_TYPES[type(column.type)]}"


@functools.cache
def _unnest_write(dialect: Any, statement: Insert | Update, names: tuple[str, ...]) -> str:
    """PostgreSQL: an insert of columns `names`, or held state changes (_UPDATE_MESSAGE) of them, the row's `_id`
    last, of any number of rows in one statement, each column one array. It goes in a pipeline with the
    transaction's other statements, where COPY (as cheap for the client) needed two round trips of its own and one
    more to send what came before it, and a statement a row cost the client about 100 µs each. Inserted in the
    arrays' order, so events keep theirs; a message changes once in an update (see _CHANGED)."""
    quote, table = dialect.identifier_preparer.quote, dialect.identifier_preparer.format_table(statement.table)
    columns = ", ".join(quote(name) for name in names)
    arrays = ", ".join(_array_of(statement, name) for name in names)
    if isinstance(statement, Update):
        assert statement is _UPDATE_MESSAGE and names[-1] == "_id"
        return (f"UPDATE {table} SET {', '.join(f'{quote(n)} = v.{quote(n)}' for n in names[:-1])} "
                f"FROM unnest({arrays}) AS v({columns}) WHERE {table}.id = v._id")
    return (f"INSERT INTO {table} ({columns}) SELECT {columns} FROM unnest({arrays}) WITH ORDINALITY "
            f"AS v({columns}, _n) ORDER BY _n")


def _row_values(rows: list[dict[str, Any]]) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    """Rows that each have the same columns: their names (an update's `_id` last) and each row's values."""
    names = tuple(sorted(rows[0], key=lambda name: name == "_id"))
    return names, list(map(itemgetter(*names), rows))  # tuples: every table has several columns


def _inserting_ids(dialect: Any, statement: Insert, rows: list[dict[str, Any]]) -> tuple[str, list[Any]]:
    """PostgreSQL: an insert of rows (as _unnest_write) that returns their ids."""
    names, values = _row_values(rows)
    return _unnest_write(dialect, statement, names) + " RETURNING id", _columns_of(statement, names, values)


def _as_one(writes: list[tuple[str, list[Any]]]) -> tuple[str, list[Any]]:
    """PostgreSQL: writes (each its statement and parameters) as one statement, each but the last a WITH clause of
    it, and its parameters: the server runs them together, checking the foreign keys at the statement's end (so a
    history event may come before the message it refers to), for the cost of one statement, where each statement
    cost about 100 µs of the client's CPU and as much of the server's (an input's intake was three statements, a
    decision's writes up to seven). Writes of one table must not touch one row twice (a held message changes
    once: see _CHANGED)."""
    *first, (last, _params) = writes
    if first:
        last = f"WITH {', '.join(f'w{n} AS ({each})' for n, (each, _) in enumerate(first))} {last}"
    return last, [param for _sql, params in writes for param in params]


@functools.cache
def _column_types(statement: Insert | Update, names: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(statement.table.c["id" if name == "_id" else name].type for name in names)


def _columns_of(statement: Insert | Update, names: tuple[str, ...], values: list[tuple[Any, ...]]) -> list[Any]:
    """Rows as the arrays of their columns, as _array_of sends them: strings and integers as text, bytes as they
    are, floats as floats (psycopg refuses an array of ints and floats)."""
    return [_array_text(column) if isinstance(kind, _AS_TEXT) else
            [None if value is None else float(value) for value in column] if isinstance(kind, Float) else list(column)
            for kind, column in zip(_column_types(statement, names), zip(*values, strict=True), strict=True)]


def _in_one_pipeline(driver: Any, writes: list[tuple[str, Any]], reads: list[tuple[str, Any]],
                     commit: bool = False) -> list[list[Any]]:
    """psycopg sends the writes, then `reads`, then COMMIT if `commit`, without waiting for each one's answer,
    then waits once for all of them; returns each read's rows (their columns' names are their attributes, as
    SQLAlchemy's rows)."""
    statements = len(writes) + len(reads) + commit
    if not statements:
        return []
    cursors = [driver.cursor(row_factory=namedtuple_row) for _ in reads]
    try:
        # psycopg's pipeline costs more client CPU than a plain statement (measured: 230 against 110 µs here), and
        # so does executemany, which makes a pipeline of its own.
        with driver.pipeline() if statements > 1 else nullcontext():
            for query, params in writes:
                driver.execute(query, params)
            for cursor, (query, params) in zip(cursors, reads, strict=True):
                cursor.execute(query, params)
            if commit:
                driver.execute("COMMIT")
        return [cursor.fetchall() for cursor in cursors]
    finally:
        for cursor in cursors:
            cursor.close()


_COMPILED: dict[tuple[Any, Any], Any] = {}  # SQLite's, by statement and dialect
# PostgreSQL's text and constants, by statement, dialect, form (see _sql) and the names of the parameters given
_EXPANDED: dict[tuple[Any, ...], tuple[str, dict[str, Any]]] = {}


@functools.cache
def _row_type(columns: tuple[str, ...]) -> Any:
    return namedtuple("Row", columns, rename=True)


def _sqlite_rows(driver: Any, query: str, params: Any) -> list[Any]:
    """A SELECT's rows straight from sqlite3, its columns' names their attributes, as SQLAlchemy's rows (through
    SQLAlchemy, the reads of a batch's decisions took a fifth of the time it held the writer lock)."""
    cursor = driver.execute(query, params)
    try:
        row = _row_type(tuple(column[0] for column in cursor.description))
        return [row._make(each) for each in cursor]
    finally:
        cursor.close()


Returning = Select[Any] | ReturningInsert[Any] | ReturningUpdate[Any] | ReturningDelete[Any]  # read_together's
_Check = tuple[Returning, dict[str, Any], int, Callable[[], Exception]]  # Store.expect_rows


def _sql(dialect: Any, statement: Returning, params: dict[str, Any]) -> tuple[str, Any]:
    """The statement's SQL for `dialect` with its lists expanded, and its parameters, for the driver (compiled
    once, not at each run: compiling is most of what SQLAlchemy spends on a statement)."""
    # PostgreSQL: a list (of ids or keys) is one array (`= ANY(...)`, cast in the statement), sent as its text. But
    # where every list holds one value (a batch of one message, the usual one below full load) the statement says
    # `= value`: the server plans that once and keeps the plan, where it planned the array's statement afresh at
    # each run for its values (measured: 50-330 µs a statement, the 7 of a batch's look-ups and reads 1 ms, against
    # 5-15 µs for a kept plan).
    lists = [value for value in params.values() if isinstance(value, list)]
    one_of_each = dialect.name == "postgresql" and bool(lists) and all(len(value) == 1 for value in lists)
    if one_of_each:
        params = {name: value[0] if isinstance(value, list) else value for name, value in params.items()}
    if dialect.positional:  # SQLite: its lists expanded at each run, one `?` a value
        compiled = _COMPILED.get((statement, dialect))
        if compiled is None:
            compiled = _COMPILED[(statement, dialect)] = statement.compile(dialect=dialect)
        expanded = compiled.construct_expanded_state(params)
        return expanded.statement, expanded.positional_parameters
    # PostgreSQL: the text is the same at each run (a list is one array), and so are the values the statement holds
    # itself (an IN of constants), which SQLAlchemy expanded afresh at each run (30 µs a statement, now 5).
    key = (statement, dialect, one_of_each, *params)
    found = _EXPANDED.get(key)
    if found is None:
        expanded = statement.compile(dialect=dialect, compile_kwargs={_ONE_OF_EACH: one_of_each}
                                     ).construct_expanded_state(params)
        found = _EXPANDED[key] = (expanded.statement, {name: value for name, value in expanded.parameters.items()
                                                       if name not in params})
    text, constants = found
    return text, {**constants, **{name: _array_text(value) if isinstance(value, list) else value
                                  for name, value in params.items()}}


def _tune_messages_table(conn: Connection) -> None:
    """PostgreSQL's storage settings for the messages table, each changed only if it differs (an ALTER TABLE
    locks the table). Both apply to rows written from now on: the earlier ones stay as they are."""
    fillfactor = f"fillfactor={_FILLFACTOR}"
    if fillfactor not in (conn.execute(text(
            "SELECT reloptions FROM pg_class WHERE oid = 'messages'::regclass")).scalar() or ()):
        conn.execute(text(f"ALTER TABLE messages SET ({fillfactor})"))
    if conn.execute(text(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")).scalar():
        other = conn.execute(text(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'messages'::regclass AND attname = ANY(:names) "
            "AND attcompression IS DISTINCT FROM 'l'"), {"names": list(_COMPRESSED)}).scalars().all()
        if other:
            conn.execute(text("ALTER TABLE messages " + ", ".join(f"ALTER COLUMN {c} SET COMPRESSION lz4"
                                                                  for c in other)))


def _counted_columns(counts: Table) -> list[str]:
    return [c.name for c in counts.c if c.name not in ("id", "n")]


def _counting_triggers(counts: Table, sqlite: bool) -> list[str]:
    """The triggers that keep `counts` (see message_counts): for the rows of its counted table inserted (+1), deleted
    (-1), or changed in a counted column (-1 for what each was, +1 for what it is now). SQLite's, a row at a time,
    fire only for a change of a counted column. PostgreSQL's, a statement at a time, count the rows it changed
    together (transition tables, which allow no column list, so each update fires them and what it did not change
    nets out): there a trigger a row cost 4 % of the throughput of the end-to-end bench (808-869 against 839-906
    messages/s, 4 runs each), these nothing measured (880-893)."""
    counted, keys = _COUNTED[counts].name, _counted_columns(counts)
    name, listed = f"hub_count_{counted}", ", ".join(keys)
    add = f"INSERT INTO {counts.name} ({listed}, n)"
    if sqlite:
        def row(which: str, n: int) -> str:
            return f"({', '.join(f'{which}.{key}' for key in keys)}, {n})"
        changed = " OR ".join(f"old.{key} IS NOT new.{key}" for key in keys)
        return [
            f"CREATE TRIGGER {name}_insert AFTER INSERT ON {counted} BEGIN {add} VALUES {row('new', 1)}; END",
            f"CREATE TRIGGER {name}_delete AFTER DELETE ON {counted} BEGIN {add} VALUES {row('old', -1)}; END",
            f"CREATE TRIGGER {name}_update AFTER UPDATE OF {listed} ON {counted} WHEN {changed} "
            f"BEGIN {add} VALUES {row('old', -1)}, {row('new', 1)}; END",
        ]
    function = f"""CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {add} SELECT {listed}, count(*) FROM new_rows GROUP BY {listed};
    ELSIF TG_OP = 'DELETE' THEN
        {add} SELECT {listed}, -count(*) FROM old_rows GROUP BY {listed};
    ELSE
        {add} SELECT {listed}, sum(n) FROM (
            SELECT {listed}, -1 AS n FROM old_rows UNION ALL SELECT {listed}, 1 FROM new_rows) AS changed
        GROUP BY {listed} HAVING sum(n) <> 0;
    END IF;
    RETURN NULL;
END $$"""
    return [function, *(
        f"CREATE TRIGGER {name}_{change} AFTER {change.upper()} ON {counted} REFERENCING {tables} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
        for change, tables in (("insert", "NEW TABLE AS new_rows"), ("delete", "OLD TABLE AS old_rows"),
                               ("update", "OLD TABLE AS old_rows NEW TABLE AS new_rows")))]


# PostgreSQL: a check of a write transaction (Store.expect_rows), made by the server, so that the transaction's COMMIT
# can go in the same round trip: a statement that finds other than the rows expected fails the transaction there.
_CHECK_FAILED = "HUB01"  # its SQLSTATE; the message is the check's number in its transaction
_EXPECT_ROWS_FUNCTION = f"""
CREATE OR REPLACE FUNCTION hub_expect_rows(bigint, bigint, int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF $1 <> $2 THEN  -- rows found, rows expected; $3: the check's number
        RAISE EXCEPTION USING ERRCODE = '{_CHECK_FAILED}', MESSAGE = $3::text;
    END IF;
END $$"""


def _checked(sql: str, params: dict[str, Any], rows: int, number: int) -> tuple[str, dict[str, Any]]:
    """PostgreSQL: statement `sql` wrapped so the server fails the transaction if it finds other than `rows` rows."""
    return (f"WITH checked AS ({sql}) SELECT hub_expect_rows(count(*), %(_expected)s, %(_check)s) FROM checked",
            {**params, "_expected": rows, "_check": number})


_NEEDS_VACUUM = text(
    "SELECT relname, n_dead_tup >= :rows + 0.2 * n_live_tup AS vacuum, n_mod_since_analyze >= :rows + 0.5 * n_live_tup "
    "OR (n_mod_since_analyze >= :rows AND last_analyze IS NULL AND last_autoanalyze IS NULL) AS analyze "
    "FROM pg_stat_user_tables WHERE relid = ANY(CAST(:tables AS regclass[]))"
)
_STATISTICS_TARGET = 10  # ANALYZE's, for the hub's tables (Store.vacuum says why)
_BUSY_TIMEOUT_MS = 30_000
_RESTART_WAIT_MS = 100  # the longest a checkpoint holds the writers back for a reader (Store.checkpoint)


class _SqliteWriter:
    """SQLite has one writer at a time. Threads of this process queue on a lock, and hub processes on one database
    queue on an flock of a file beside it, instead of in SQLite's busy handler, which sleeps in growing steps
    (measured: it cut throughput tenfold)."""

    def __init__(self, database: str | None) -> None:
        self._threads = threading.Lock()
        self._fd = None
        if database and database != ":memory:":
            self._fd = os.open(f"{database}.writer.lock", os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> None:
        self._threads.acquire()
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._threads.release()
                raise

    def __exit__(self, *_exc: object) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the flock, if a thread still held it
            self._fd = None


class Store:
    def __init__(self, url: str, connections: int = 5) -> None:
        self.engine = make_engine(url, connections)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._writer: _SqliteWriter | AbstractContextManager[object] = (
            _SqliteWriter(make_url(url).database) if self.is_sqlite else nullcontext())

    def create_schema(self, *others: Table) -> None:
        """The hub's tables, and `others` (a library's), if missing, under a lock: hub processes started together
        on a new database each found the tables missing, and all but one failed on creating them (PostgreSQL: a
        unique violation in its catalogue; SQLite: "database is locked", a read turned write after another's)."""
        # PostgreSQL: in a transaction of the driver's (its connections are in autocommit mode), holding the lock.
        options = {_WRITE: True} if self.is_sqlite else {_WRITE: True, "isolation_level": "READ COMMITTED"}
        with self._writer, self.engine.connect().execution_options(**options) as conn, conn.begin():
            if not self.is_sqlite:
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_key("hub schema")})
            uncounted = [t for t in _COUNTED if not inspect(conn).has_table(t.name)]
            metadata.create_all(conn)
            for counts in uncounted:  # a new store, or one made before they were: counted from its rows as they are
                for trigger in _counting_triggers(counts, self.is_sqlite):  # on PostgreSQL, writers wait from here
                    conn.exec_driver_sql(trigger)
                keys = [_COUNTED[counts].c[key] for key in _counted_columns(counts)]
                conn.execute(insert(counts).from_select([*_counted_columns(counts), "n"],
                                                        select(*keys, func.count()).group_by(*keys)))
            for table in metadata.sorted_tables:  # indexes added since a store's tables were made
                for index in table.indexes:
                    index.create(conn, checkfirst=True)
            for name in _RETIRED_INDEXES:
                conn.execute(text(f"DROP INDEX IF EXISTS {name}"))
            if not self.is_sqlite:
                _tune_messages_table(conn)
                conn.execute(text(_EXPECT_ROWS_FUNCTION))
            for table in others:
                table.create(conn, checkfirst=True)

    def close(self) -> None:
        self.engine.dispose()
        if isinstance(self._writer, _SqliteWriter):
            self._writer.close()

    @contextmanager
    def begin(self, serial: bool = True, durable: bool = True) -> Iterator[Connection]:
        """A write transaction: committed when the block ends, rolled back if it raises. `serial=False` only
        where row locks alone keep writers apart (the work queue's claim); SQLite serialises every writer. A block
        may send the transaction's last statements itself (read_together's `last`); nothing may run after them.
        `durable=False` (PostgreSQL; SQLite's commits never wait for the disk, see make_engine): the commit does not
        wait for its write-ahead log to reach the disk, so a server crash may forget it. Only for what is made good
        without it: what the transaction records is still kept elsewhere (an input in intake/) or done again (a step
        whose item comes back), and the next durable commit, which any effect outside the store waits for, flushes
        it with its own."""
        # PostgreSQL: the driver in autocommit mode (make_engine), and the transaction's BEGIN and COMMIT sent by the
        # hub (_OWED).
        committed: list[Callable[[], None]] = []  # insert_at_commit's
        with self._writer, self.engine.connect().execution_options(**{_WRITE: True}) as conn, conn.begin():
            if not self.is_sqlite:
                conn.info[_OWED] = [_BEGIN, *([] if durable else [_NOT_DURABLE]), *([_SERIAL_WRITES] if serial else [])]
            conn.info[_EVENTS], conn.info[_HELD], conn.info[_COMMITTED] = [], {}, committed
            try:
                yield conn
                if not conn.info.get(_ENDED):
                    Store.read_together(conn, [], last=True)
            finally:
                for name in (_EVENTS, _HELD, _CHANGED, _KNOWN, _OWED, _ENDED, _CHECKS, _AT_COMMIT, _COMMITTED):
                    conn.info.pop(name, None)
        for then in committed:
            then()

    @contextmanager
    def one_statement(self) -> Iterator[Connection]:
        """A write of one statement, atomic on its own: on PostgreSQL without BEGIN and COMMIT (autocommit: two
        round trips fewer, each a few hundred µs of a message's latency); on SQLite under the writer lock."""
        if self.is_sqlite:
            with self.begin(serial=False) as conn:
                yield conn
        else:
            with self.engine.connect() as conn:  # in autocommit mode (make_engine)
                yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only look. On SQLite at one consistent snapshot; on PostgreSQL each statement sees what was
        committed when it began, as it would in a transaction there (READ COMMITTED), so no BEGIN and ROLLBACK."""
        if self.is_sqlite:  # begun now, not at SQLAlchemy's first statement: read_together goes to the driver
            with self.engine.connect() as conn, conn.begin():
                yield conn
        else:
            with self.engine.connect() as conn:  # in autocommit mode (make_engine)
                yield conn

    def checkpoint(self) -> None:
        """Copy SQLite's write-ahead log into the database, and start the log over.

        A passive checkpoint alone stops at the oldest reader's snapshot and at the log's end, and under a steady
        load there is always a reader or a newer write: the log never started over, and held everything written
        since the load began (600 MB after 6,000 messages; each new page of it cost the kernel an allocation). So
        the bulk is copied passively while writers go on, and the rest with the writers held back, waiting
        briefly for readers to finish; a reader that takes longer leaves the restart to the next checkpoint."""
        if self.is_sqlite:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            with self._writer, self.engine.connect() as conn:
                conn.exec_driver_sql(f"PRAGMA busy_timeout={_RESTART_WAIT_MS}")
                try:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(RESTART)")
                finally:
                    conn.exec_driver_sql(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")

    def vacuum(self, rows: int) -> list[str]:
        """PostgreSQL: VACUUM those of the hub's tables whose dead rows (updated or deleted) pass `rows` and a fifth
        of the live ones (autovacuum's rule, with its default scale factor), and ANALYZE those whose rows changed
        since their last ANALYZE pass `rows` and half the live ones (one that only grows: once it has doubled), or
        `rows` alone if never analyzed. Returns them.

        The planner needs statistics: on a server whose autovacuum is off (this machine's), a batch's look-up of the
        receipts its conversations await read every sent message of their families (2.6 ms after 3,000 messages, and
        growing with each) where, analyzed, it reads the index for their keys (0.08 ms). They need be neither fresh
        nor detailed. At the server's default statistics target ANALYZE reads a sample of up to 30,000 rows and
        keeps 100 values a column: on the messages table 120 ms of the server's time for 9,600 messages, and up to
        440 ms under load at 100 messages/s, while the messages that came meanwhile waited, the slowest of the run.
        The hub's look-ups are equalities on indexed keys, whose plans a sample of 3,000 rows decides as well: at a
        target of 10 (_STATISTICS_TARGET) the same ANALYZE took 33 ms, and up to 107 under load. It also waits for
        half a table to change (autovacuum's tenth had it every few seconds on a young store at 100 messages/s). The
        work table's rows are each inserted, changed and deleted: dead rows that claims pass over. A table another
        process is vacuuming is skipped (SKIP_LOCKED)."""
        if self.is_sqlite or not rows:
            return []
        with self.engine.connect() as conn:  # in autocommit mode (make_engine), as VACUUM must be
            due = conn.execute(_NEEDS_VACUUM, {"tables": [t.name for t in metadata.sorted_tables], "rows": rows}).all()
            quote = conn.dialect.identifier_preparer.quote
            # ANALYZE's sample size set for it alone: the two statements are one implicit transaction.
            for command, wanted in (("VACUUM (SKIP_LOCKED, TRUNCATE false)", [t for t, vacuum, _ in due if vacuum]),
                                    (f"SET LOCAL default_statistics_target = {_STATISTICS_TARGET}; "
                                     "ANALYZE (SKIP_LOCKED)", [t for t, _, analyze in due if analyze])):
                if wanted:
                    conn.exec_driver_sql(f"{command} {', '.join(map(quote, wanted))}")
        return sorted(t for t, vacuum, analyze in due if vacuum or analyze)

    # -- messages and their history -------------------------------------------------------------------

    @staticmethod
    def write_held(conn: Connection) -> None:
        """Write the rows held back (see _HELD): new messages first (every other table refers to them), state
        changes last (they may change a row inserted in the same transaction)."""
        Store.read_together(conn, [])

    @staticmethod
    def read_together(conn: Connection, reads: list[tuple[Returning, dict[str, Any]]],
                      last: bool = False) -> list[list[Any]]:
        """Statements that return rows (SELECTs, and updates and deletes with RETURNING), each with its parameters,
        straight to the driver (through SQLAlchemy a statement cost a quarter more client CPU: 235-255 against
        190 µs here); in a write transaction after what it owes first (its BEGIN and lock, its held inserts, its
        checks: expect_rows): on PostgreSQL all in one round trip, else one by one. Returns each one's rows. `last`:
        the transaction's last statements, the events it noted with them; on PostgreSQL its COMMIT goes with them."""
        at_commit = conn.info.pop(_AT_COMMIT, []) if last else []
        if last:
            Store.insert_rows(conn, _INSERT_EVENT, conn.info.pop(_EVENTS, []))
            conn.info[_ENDED] = True
        held = conn.info.get(_HELD)
        sets = []
        if held:
            conn.info[_HELD] = {}
            conn.info.pop(_CHANGED, None)
            sets = sorted(((statement, rows) for (statement, _columns), rows in held.items()),
                          key=lambda each: (isinstance(each[0], Update), each[0].table is not messages))
        found = Store._write_then_read(conn, sets, reads, last, conn.info.pop(_CHECKS, []),
                                       [(statement, rows) for statement, rows, _then in at_commit])
        for (_statement, _rows, then), ids in zip(at_commit, found[len(reads):], strict=True):
            conn.info[_COMMITTED].append(functools.partial(then, [row.id for row in ids]))
        return found[:len(reads)]

    @staticmethod
    def expect_rows(conn: Connection, statement: Returning, params: dict[str, Any], rows: int,
                    error: Callable[[], Exception]) -> None:
        """In a write transaction: `statement` goes with the next statements it sends (after its held inserts,
        before its reads) and must find exactly `rows` rows, or the transaction is undone and `error()` raised.
        On PostgreSQL the server checks (hub_expect_rows), so the check costs no round trip of its own, nor one
        before the transaction's COMMIT (the check that waited for its rows to come back cost the follow-through
        of every batch a second round trip)."""
        if conn.info.get(_ENDED):
            raise RuntimeError(_AFTER_LAST)
        conn.info.setdefault(_CHECKS, []).append((statement, params, rows, error))

    @staticmethod
    def insert_at_commit(conn: Connection, statement: Insert, rows: list[dict[str, Any]],
                         then: Callable[[list[int]], None]) -> None:
        """PostgreSQL, in a write transaction: rows that each have the same columns, inserted with its last
        statements (no round trip of their own), and `then` given their ids once it has committed (never, if it
        fails)."""
        if conn.dialect.name != "postgresql":
            raise NotImplementedError("insert_at_commit is PostgreSQL's: its rows' ids come back in its pipeline")
        if conn.info.get(_ENDED):
            raise RuntimeError(_AFTER_LAST)
        conn.info.setdefault(_AT_COMMIT, []).append((statement, rows, then))

    @staticmethod
    def insert_rows(conn: Connection, statement: Insert, rows: list[dict[str, Any]]) -> None:
        """Rows that each have the same columns. In a write transaction they are held back with its other inserts
        (see _HELD); elsewhere inserted now."""
        if not rows:
            return
        held = conn.info.get(_HELD)
        if held is None:
            Store._write_then_read(conn, [(statement, rows)], [])
        else:
            held.setdefault((statement, tuple(rows[0])), []).extend(rows)

    @staticmethod
    def _write_then_read(conn: Connection, sets: list[tuple[Insert | Update, list[dict[str, Any]]]],
                         reads: list[tuple[Returning, dict[str, Any]]], last: bool = False,
                         checks: Sequence[_Check] = (),
                         returning_ids: Sequence[tuple[Insert, list[dict[str, Any]]]] = ()) -> list[list[Any]]:
        """Each set of rows in one statement, in order, straight to the driver (SQLAlchemy's executemany spent
        about 0.5 ms a message preparing each row's parameters), then `reads`; returns their rows. On SQLite by
        executemany. On PostgreSQL the inserts together as one statement and the state changes as another (_as_one),
        in one pipeline, with what the transaction owes (its BEGIN, its lock) before them, the reads after them and,
        if `last`, its COMMIT (neither BEGIN nor COMMIT for a transaction sent whole in this one pipeline): one round
        trip for all, not one or two each (a decision's few inserts took seven, and each decided message's state
        change one more). `checks` (expect_rows) go before the reads; `returning_ids` (PostgreSQL: insert_at_commit's
        rows) after them, each set's ids returned as a read's rows."""
        dialect, driver = conn.dialect, conn.connection.driver_connection
        owed = conn.info.pop(_OWED, [])
        if last and owed and not sets and not reads and not checks and not returning_ids:
            return []  # a transaction that wrote nothing sends nothing
        if last and owed and owed[0] is _BEGIN:
            # A transaction sent whole in one pipeline (an input's intake) needs no BEGIN and COMMIT: the
            # statements up to the pipeline's sync are one transaction, which the sync commits and an error undoes.
            owed, last = owed[1:], False
        pipelined: list[tuple[str, Any]] = list(owed)
        try:
            writes: dict[bool, list[tuple[str, list[Any]]]] = {False: [], True: []}  # inserts, updates
            for statement, rows in sets:
                names, values = _row_values(rows)
                if dialect.name != "postgresql":
                    driver.executemany(_write_text(dialect, statement, names), values)  # type: ignore[union-attr]
                else:
                    writes[isinstance(statement, Update)].append(
                        (_unnest_write(dialect, statement, names), _columns_of(statement, names, values)))
            # The updates after the inserts: they may change a row inserted in the same transaction.
            pipelined += map(_as_one, filter(None, writes.values()))
            if dialect.name != "postgresql":
                for check, params, expected, error in checks:
                    if len(_sqlite_rows(driver, *_sql(dialect, check, params))) != expected:
                        raise error()
                return [_sqlite_rows(driver, *_sql(dialect, read, params)) for read, params in reads]
            found = _in_one_pipeline(driver, pipelined, [
                *(_checked(*_sql(dialect, check, params), expected, n)
                  for n, (check, params, expected, _) in enumerate(checks)),
                *(_sql(dialect, read, params) for read, params in reads),
                *(_inserting_ids(dialect, statement, rows) for statement, rows in returning_ids)], last)
            return found[len(checks):]
        except dialect.loaded_dbapi.Error as exc:  # the same errors as any statement's (retry knows them)
            if getattr(exc, "sqlstate", None) == _CHECK_FAILED:
                raise checks[int(exc.diag.message_primary)][3]() from None
            tables = ", ".join(str(s.table) for s, _ in sets) or "no table"
            raise DBAPIError.instance(f"write held rows of {tables}; {len(reads)} reads", None, exc,
                                      dialect.loaded_dbapi.Error) from exc

    @staticmethod
    def lock_keys_only(conn: Connection, keys: Iterable[tuple[str, ...]]) -> None:
        """Before its first statement: every check and write of this serial transaction concerns one of `keys`
        alone. On PostgreSQL it takes the writers' lock shared, then their locks (_SHARED_WRITES_THEN_KEYS)."""
        owed = conn.info.get(_OWED)
        if owed and owed[-1] is _SERIAL_WRITES:
            locks = sorted({advisory_key("\x1f".join(key)) for key in keys})
            owed[-1] = (_SHARED_WRITES_THEN_KEYS, ([_WRITES_KEY, *locks],))

    @staticmethod
    def look_ahead(conn: Connection, ids: list[str], seen: list[tuple[str, str]], versions: list[tuple[str, str, str]],
                   conversations_: list[tuple[str, str]], answers: list[tuple[str, str, str]]) -> dict[str, str]:
        """The states of messages `ids` and what a batch of decisions on them will look up (first_seen,
        first_version, conversation, and whether a conversation awaits a partner's receipt), read at the start of
        the write transaction that decides them: one statement per table, all in one round trip on PostgreSQL.
        A key the batch then writes is read again. Decisions never add awaited receipts (deliveries do)."""
        asked = [(kind, keys) for kind, keys in (("seen", seen), ("version", versions),
                                                 ("conversation", conversations_), ("awaited", answers)) if keys]
        states, *found = Store.read_together(conn, [(_GET_STATES, {"_ids": ids}), *(
            (_LOOK_AHEAD[kind][1], {f"_k{n}": sorted({key[n] for key in keys}) for n in range(len(keys[0]))})
            for kind, keys in asked)])
        known: dict[tuple[str, ...], Any] = {}
        for (kind, keys), rows in zip(asked, found, strict=True):
            known.update({(kind, *key): None for key in keys})
            columns = [column.name for column in _LOOK_AHEAD[kind][0]]
            for row in rows:
                # seen and version: the first message's hub id; a conversation: its row; awaited: how many
                key = (kind, *(getattr(row, name) for name in columns))
                known[key] = row if kind == "conversation" else row[-1]
        conn.info[_KNOWN] = known
        return {row.id: row.state for row in states}

    @staticmethod
    def _looked_up(conn: Connection, key: tuple[str, ...]) -> tuple[bool, Any]:
        known = conn.info.get(_KNOWN)
        if known is None or key not in known:
            return False, None
        return True, known[key]

    @staticmethod
    def _written(conn: Connection, key: tuple[str, ...]) -> None:
        known = conn.info.get(_KNOWN)
        if known is not None:
            known.pop(key, None)

    @staticmethod
    def add_message(conn: Connection, *, event_detail: str = "", **values: Any) -> str:
        now = time.time()
        values.setdefault("id", new_id())
        values.setdefault("created_at", now)
        values.setdefault("updated_at", now)
        Store.insert_rows(conn, _INSERT_MESSAGE, [values])
        Store.add_event(conn, values["id"], values["state"], event_detail)
        return str(values["id"])

    @staticmethod
    def add_inputs(conn: Connection, inputs: list[dict[str, Any]], details: list[str]) -> None:
        """Inputs as received, in one statement: each with the same columns, its history's first line beside it."""
        now = time.time()
        Store.insert_rows(conn, _INSERT_MESSAGE, [{"created_at": now, "updated_at": now, **values}
                                                  for values in inputs])
        for values, detail in zip(inputs, details, strict=True):
            Store.add_event(conn, values["id"], values["state"], detail)

    @staticmethod
    def set_state(conn: Connection, message: str, state: str, detail: str = "", **values: Any) -> None:
        """In a write transaction held back with its inserts (see _HELD): a batch's decisions in one statement."""
        change = {"_id": message, "state": state, "updated_at": time.time(), **values}
        held = conn.info.get(_HELD)
        if held is None:
            conn.execute(_UPDATE_MESSAGE, change)
        else:
            if message in conn.info.get(_CHANGED, ()):  # held changes are grouped by their columns, not in order
                Store.write_held(conn)
                held = conn.info[_HELD]
            conn.info.setdefault(_CHANGED, set()).add(message)
            held.setdefault((_UPDATE_MESSAGE, tuple(change)), []).append(change)
        Store.add_event(conn, message, state, detail)

    @staticmethod
    def advance(conn: Connection, message: str, before: str, state: str, detail: str = "") -> bool:
        """Move a message from state `before` to `state`; False (and nothing recorded) if it has moved on."""
        moved = conn.execute(
            _UPDATE_STATE_FROM, {"_id": message, "_from": before, "state": state, "updated_at": time.time()}
        ).rowcount
        if moved:
            Store.add_event(conn, message, state, detail)
        return bool(moved)

    @staticmethod
    def advance_all(conn: Connection, ids: list[str], before: str, state: str) -> set[str]:
        """Move the messages still in state `before` to `state` (a passing state: no history event); which moved."""
        [moved] = Store.read_together(conn, [(_ADVANCE_ALL, {"_ids": ids, "_from": before, "state": state,
                                                              "updated_at": time.time()})])
        return {row.id for row in moved}

    @staticmethod
    def note_delivered(conn: Connection, ids: list[str], awaiting: dict[float, list[str]]) -> None:
        """Messages `ids` are delivered: those still "delivering" move to "delivered" (one whose partner's receipt
        came since its bytes landed keeps its state), and of those `awaiting` (due time: ids) await their receipts.
        Sent as the write transaction's last statements, on PostgreSQL with its COMMIT (the moved ones read back
        first cost a round trip): nothing may follow them in it."""
        Store.read_together(conn, [
            (_ADVANCE_ALL, {"_ids": ids, "_from": "delivering", "state": "delivered", "updated_at": time.time()}),
            *((_AWAIT_DELIVERED, {"_ids": due_ids, "due_at": due}) for due, due_ids in awaiting.items())], last=True)

    @staticmethod
    def add_event(conn: Connection, message: str, name: str, detail: str = "") -> None:
        """In a write transaction the events are inserted together when it ends (one statement, not one each)."""
        event = {"message": message, "at": time.time(), "event": name, "detail": detail}
        if _EVENTS in conn.info:
            conn.info[_EVENTS].append(event)
        else:
            conn.execute(_INSERT_EVENT, event)

    @staticmethod
    def get_message(conn: Connection, message: str) -> Any:
        return conn.execute(_GET_MESSAGE, {"_id": message}).one_or_none()

    @staticmethod
    def batch_of(conn: Connection, ids: list[str], most_bytes: int) -> dict[str, Any]:
        """Of messages `ids`, by id: the oldest (by hub id) as many as fit in `most_bytes` together, by their sizes
        as received or as stored to send, and the oldest one always. One statement (the sizes, then the messages,
        took two)."""
        [rows] = Store.read_together(conn, [(_GET_BATCH, {"_ids": ids, "_bytes": most_bytes})])
        return {row.id: row for row in rows}

    @staticmethod
    def decided(conn: Connection, ids: list[str]) -> tuple[dict[str, Any], list[Any]]:
        """Inbound messages `ids` as decided (without their bytes), and what the hub stored to send for them
        (forwarded copy, receipt, DxpRep) not yet sent (pending) or perhaps sent (delivering: staged, and perhaps
        shown to the partner), oldest first: read as the write transaction's last statements, on PostgreSQL with
        its held inserts and its COMMIT."""
        heads, pending = Store.read_together(conn, [(_GET_HEADS, {"_ids": ids}), (_PENDING_ANSWERS, {"_ids": ids})],
                                             last=True)
        return {row.id: row for row in heads}, pending

    @staticmethod
    def stored(conn: Connection, ids: list[str]) -> set[str]:
        """Which of these messages the store has."""
        return set(conn.execute(_STORED, {"_ids": ids}).scalars())

    @staticmethod
    def history(conn: Connection, message: str) -> list[Any]:
        return list(conn.execute(select(events).where(events.c.message == message).order_by(events.c.id)))

    @staticmethod
    def count_events(conn: Connection, event: str) -> int:
        """How many history events of a counted kind (RETRY_EVENT, RECEIPT_TIMEOUT_EVENT) are stored, read from
        its partial index. The name is written into the statement, as it is in the index's condition: psycopg
        prepares a statement after its fifth run, and PostgreSQL's generic plan for it, made for any value of a
        parameter, could not use the index."""
        return conn.execute(select(func.count()).select_from(events).where(
            events.c.event == bindparam("event", event, literal_execute=True))).scalar() or 0

    # -- idempotent consumer -------------------------------------------------------------------------

    @staticmethod
    def first_seen(conn: Connection, partner: str, message_id: str) -> str | None:
        known, first = Store._looked_up(conn, ("seen", partner, message_id))
        if known:
            return str(first) if first else None
        row = conn.execute(_FIRST_SEEN, {"_partner": partner, "_message_id": message_id}).first()
        return row[0] if row else None

    @staticmethod
    def mark_seen(conn: Connection, partner: str, message_id: str, first: str) -> None:
        Store._written(conn, ("seen", partner, message_id))
        Store.insert_rows(conn, _INSERT_SEEN, [{"partner": partner, "message_id": message_id, "first": first}])

    @staticmethod
    def first_version(conn: Connection, message_type: str, business_key: str, version: str) -> str | None:
        known, first = Store._looked_up(conn, ("version", message_type, business_key, version))
        if known:
            return str(first) if first else None
        row = conn.execute(_FIRST_VERSION, {"_type": message_type, "_key": business_key, "_version": version}).first()
        return row[0] if row else None

    @staticmethod
    def mark_version(conn: Connection, message_type: str, business_key: str, version: str, first: str) -> None:
        Store._written(conn, ("version", message_type, business_key, version))
        Store.insert_rows(conn, _INSERT_VERSION, [{"message_type": message_type, "business_key": business_key,
                                                   "version": version, "first": first}])

    @staticmethod
    def receipt_of(conn: Connection, message: str) -> Any:
        """The receipt the hub sent answering an inbound message (its hub id and message id), if any."""
        return conn.execute(
            select(messages.c.id, messages.c.message_id)
            .where(messages.c.answers == message, messages.c.message_type == "Receipt")
        ).first()

    # -- receipts awaited ----------------------------------------------------------------------------

    @staticmethod
    def stop_awaiting(conn: Connection, message: str) -> None:
        conn.execute(_STOP_AWAITING, {"_message": message})

    @staticmethod
    def answered_in_conversation(conn: Connection, partner: str, family: str, business_key: str) -> None:
        """The partner answered in this conversation: what the hub sent it there reached it (DOMAIN.md §9:
        business answers are receipts too), so none of it awaits a receipt any more."""
        known, awaited = Store._looked_up(conn, ("awaited", partner, family, business_key))
        if known and not awaited:
            return
        conn.execute(_ANSWERED_IN_CONVERSATION, {"_partner": partner, "_family": family, "_key": business_key})

    @staticmethod
    def awaited(conn: Connection, message: str) -> Any:
        return conn.execute(_AWAITED, {"_message": message}).one_or_none()

    @staticmethod
    def overdue_receipts(conn: Connection, now: float, limit: int = 500) -> list[Any]:
        """Delivered messages whose receipt is overdue, most overdue first: (message, partner)."""
        return list(conn.execute(_OVERDUE.limit(limit), {"_now": now}))

    @staticmethod
    def postpone_receipt(conn: Connection, message: str, due_at: float, resent: bool = False) -> None:
        """A new due time; `resent`: the message was just sent again, one more resend counted."""
        conn.execute(_RESENT if resent else _POSTPONE, {"_message": message, "due_at": due_at})

    @staticmethod
    def receipts_awaited(conn: Connection, now: float) -> dict[str, dict[str, int]]:
        """By partner: messages awaiting their receipt, how many of them are overdue, how many were resent,
        and how many were parked for want of one."""
        counts: dict[str, dict[str, int]] = {}
        # Each awaited message's state looked up by its id: joined, SQLite without statistics read every message
        # and looked each up among the awaited (90 ms for 115,000 messages and one awaited; measured).
        state = select(messages.c.state).where(messages.c.id == awaited_receipts.c.message).scalar_subquery()
        for partner, awaited, overdue, resent in conn.execute(
            select(awaited_receipts.c.partner, func.count(),
                   func.count().filter(awaited_receipts.c.due_at <= now),
                   func.count().filter(awaited_receipts.c.resends > 0))
            .where(state == "delivered")
            .group_by(awaited_receipts.c.partner)
        ):
            counts[partner] = {"awaited": awaited, "overdue": overdue, "resent": resent, "timed_out": 0}
        for partner, timed_out in conn.execute(
            select(messages.c.partner, func.count())
            .where(messages.c.direction == "out", messages.c.state == "parked",
                   messages.c.error_code == "RECEIPT_TIMEOUT")
            .group_by(messages.c.partner)
        ):
            counts.setdefault(partner, {"awaited": 0, "overdue": 0, "resent": 0})["timed_out"] = timed_out
        return counts

    # -- conversations -------------------------------------------------------------------------------

    @staticmethod
    def conversation(conn: Connection, family: str, business_key: str) -> Any:
        known, found = Store._looked_up(conn, ("conversation", family, business_key))
        if known:
            return found
        return conn.execute(_CONVERSATION, {"_family": family, "_key": business_key}).one_or_none()

    @staticmethod
    def set_conversation(
        conn: Connection, family: str, business_key: str, enterprise: str, state: str, opens: bool
    ) -> None:
        """`opens`: the conversation is new (its key was looked up in this transaction and not found)."""
        now = time.time()
        Store._written(conn, ("conversation", family, business_key))
        if opens:
            Store.insert_rows(conn, _INSERT_CONVERSATION, [{"family": family, "business_key": business_key,
                                                            "enterprise": enterprise, "state": state,
                                                            "created_at": now, "updated_at": now}])
        else:
            conn.execute(_UPDATE_CONVERSATION, {"_family": family, "_key": business_key, "state": state,
                                                "updated_at": now})

    @staticmethod
    def enterprise_in_state(conn: Connection, family: str, enterprise: str, state: str) -> bool:
        return conn.execute(
            select(conversations.c.id).where(
                conversations.c.family == family, conversations.c.enterprise == enterprise,
                conversations.c.state == state,
            ).limit(1)
        ).first() is not None

    # -- references ----------------------------------------------------------------------------------

    @staticmethod
    def add_reference(conn: Connection, kind: str, key: str, message: str) -> None:
        """Latest wins: a reissued policy replaces the earlier one."""
        conn.execute(delete(references).where(references.c.kind == kind, references.c.key == key))
        conn.execute(insert(references).values(kind=kind, key=key, message=message))

    @staticmethod
    def referenced(conn: Connection, kind: str, key: str) -> str | None:
        """The canonical form of the message recorded under (kind, key)."""
        return conn.execute(
            select(messages.c.canonical)
            .join(references, references.c.message == messages.c.id)
            .where(references.c.kind == kind, references.c.key == key)
        ).scalar()

    # -- cursors ---------------------------------------------------------------------------------------

    @staticmethod
    def cursor(conn: Connection, name: str) -> str | None:
        return conn.execute(select(cursors.c.position).where(cursors.c.name == name)).scalar()

    @staticmethod
    def set_cursor(conn: Connection, name: str, position: str) -> None:
        now = time.time()
        if not conn.execute(
            update(cursors).where(cursors.c.name == name).values(position=position, updated_at=now)
        ).rowcount:
            conn.execute(insert(cursors).values(name=name, position=position, updated_at=now))

    @staticmethod
    def count_by(conn: Connection, *columns: Any) -> list[Any]:
        return list(conn.execute(select(*columns, func.count()).group_by(*columns)))

    @staticmethod
    def message_tally(conn: Connection) -> list[Any]:
        """How many messages the store holds, by family, message type, direction, partner and state."""
        return Store._sums(conn, message_counts)

    @staticmethod
    def conversation_tally(conn: Connection) -> list[Any]:
        """How many conversations the store holds, by family and state."""
        return Store._sums(conn, conversation_counts)

    @staticmethod
    def _sums(conn: Connection, counts: Table) -> list[Any]:
        keys = [counts.c[key] for key in _counted_columns(counts)]
        total = func.sum(counts.c.n)
        return list(conn.execute(select(*keys, total).group_by(*keys).having(total != 0)))

    def compact_counts(self) -> list[str]:
        """Sum each counts table's rows into one a key, if it holds more than _COMPACT_PAST_ROWS. Returns those
        summed. On PostgreSQL one statement, so what it deletes is what it sums (rows another transaction adds
        meanwhile stay as they are), and another process's compaction at the same time sums only what it deleted;
        on SQLite under the writer lock. Not durable: forgotten, it is done again."""
        summed = []
        for counts in _COUNTED:
            keys = _counted_columns(counts)
            with self.read() as conn:
                if conn.execute(select(func.count()).select_from(counts)).scalar_one() <= _COMPACT_PAST_ROWS:
                    continue
            with self.begin(serial=False, durable=False) as conn:
                if self.is_sqlite:
                    top = conn.execute(select(func.max(counts.c.id))).scalar_one()
                    source: Any = select(counts).where(counts.c.id <= top).subquery()
                else:
                    source = delete(counts).returning(*counts.c).cte()
                total = func.sum(source.c.n)
                conn.execute(insert(counts).from_select(
                    [*keys, "n"], select(*(source.c[key] for key in keys), total)
                    .group_by(*(source.c[key] for key in keys)).having(total != 0)))
                if self.is_sqlite:
                    conn.execute(delete(counts).where(counts.c.id <= top))
            summed.append(counts.name)
        return summed
