"""The store's write transactions hold inserts and state changes back and write them together: what the
transaction does next must still see them, and a transaction that fails writes none of them."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, event, func, inspect, literal_column, select, text, update
from sqlalchemy.exc import DBAPIError

import hub.store as store_module
from hub.store import (
    RECEIPT_TIMEOUT_EVENT,
    RETRY_EVENT,
    Store,
    conversation_counts,
    conversations,
    events,
    message_counts,
    messages,
    new_id,
    work,
)
from hub.workqueue import ENQUEUE, DbWorkQueue, LeaseLost, enqueue_ready, work_rows
from tests.conftest import wait_for


@pytest.fixture
def store(store_url: str) -> Store:
    store = Store(store_url)
    store.create_schema()
    return store


def _received(store: Store, raw: bytes = b"<x/>") -> str:
    with store.begin() as conn:
        return store.add_message(conn, direction="in", partner="insurer", state="received", size=len(raw), raw=raw)


def test_held_state_changes_are_written_before_the_updates_and_reads_that_follow_them(store: Store) -> None:
    message = _received(store)
    with store.begin() as conn:
        store.set_state(conn, message, "accepted", "taken", message_id="MSG-1")
        assert store.get_message(conn, message).state == "accepted"
        # Not the transaction's first statement (on PostgreSQL that one writes what is held to send its lock).
        store.set_state(conn, message, "parked", "stuck", error_code="RETRIES_EXHAUSTED")
        assert store.advance(conn, message, "parked", "received", "replayed"), "the update saw the state change"
    with store.read() as conn:
        row = store.get_message(conn, message)
        history = [event.event for event in store.history(conn, message)]
    assert (row.state, row.message_id, row.error_code) == ("received", "MSG-1", "RETRIES_EXHAUSTED")
    assert history == ["received", "accepted", "parked", "received"]


def test_one_message_changed_again_and_again_in_a_transaction_ends_in_its_last_state(store: Store) -> None:
    """Held changes are grouped by the columns they set; a message's later change must still land last."""
    message = _received(store)
    with store.begin() as conn:
        store.set_state(conn, message, "accepted", message_id="MSG-3")
        store.set_state(conn, message, "parked", error_code="RETRIES_EXHAUSTED")
        store.set_state(conn, message, "rejected", message_id="MSG-3")
    with store.read() as conn:
        row = store.get_message(conn, message)
    assert (row.state, row.error_code) == ("rejected", "RETRIES_EXHAUSTED")


def test_strings_of_any_characters_are_written_and_looked_up_as_they_were(store: Store) -> None:
    """On PostgreSQL the hub writes a statement's strings as the text of arrays, where quotes, backslashes,
    braces, commas, spaces and NULL have meanings of their own: each string must come back as it went, and be
    found by the same look-ups, one at a time as several together."""
    awkward = ['say "hi"', "C:\\in\\", "{a,b}", "NULL", "", "two\nlines", " spaced ", "它's", '\\"']
    with store.begin() as conn:
        ids = [store.add_message(conn, direction="in", partner="insurer", state="received", size=1, raw=b"x",
                                 file_name=name, event_detail=name) for name in awkward]
        for message, name in zip(ids, awkward, strict=True):
            store.mark_seen(conn, "insurer", name, message)
    with store.begin() as conn:
        store.look_ahead(conn, ids, seen=[("insurer", name) for name in awkward], versions=[], conversations_=[],
                         answers=[])
        first_senders = [store.first_seen(conn, "insurer", name) for name in awkward]
        batch = store.batch_of(conn, ids, 1_000_000)
    alone = []  # each looked up on its own: lists of one, which PostgreSQL is sent as `= value`
    for message, name in zip(ids, awkward, strict=True):
        with store.begin() as conn:
            store.look_ahead(conn, [message], seen=[("insurer", name)], versions=[], conversations_=[], answers=[])
            alone.append((store.first_seen(conn, "insurer", name), store.batch_of(conn, [message], 1)[message]))
    with store.read() as conn:
        details = [store.history(conn, message)[0].detail for message in ids]
    assert first_senders == ids, "looked up by the same strings"
    assert [batch[message].file_name for message in ids] == awkward
    assert details == awkward
    assert alone == [(message, batch[message]) for message in ids], "the same alone as together"


def test_a_failed_transaction_writes_none_of_its_held_state_changes(store: Store) -> None:
    message = _received(store)
    with pytest.raises(RuntimeError), store.begin() as conn:
        store.set_state(conn, message, "accepted", message_id="MSG-2")
        raise RuntimeError("the decision failed")
    with store.read() as conn:
        row = store.get_message(conn, message)
        assert [event.event for event in store.history(conn, message)] == ["received"]
    assert (row.state, row.message_id) == ("received", None)


def test_a_store_made_by_an_earlier_version_loses_its_index_on_state_so_state_changes_stay_in_place(
    store: Store,
) -> None:
    """An index on the state made every state change write each index again (PostgreSQL then cannot update the
    row in place); create_schema drops the one earlier versions made and leaves room in new pages for updates."""
    with store.engine.begin() as conn:
        conn.execute(text("CREATE INDEX ix_messages_state ON messages (direction, state)"))
    store.create_schema()
    indexes = {index["name"] for index in inspect(store.engine).get_indexes("messages")}
    assert "ix_messages_state" not in indexes and "ix_messages_error" in indexes
    if not store.is_sqlite:
        with store.read() as conn:
            options = conn.execute(text("SELECT reloptions FROM pg_class WHERE oid = 'messages'::regclass")).scalar()
        assert options == ["fillfactor=70"]


def _churned_work(store: Store, steps: int) -> None:
    """`steps` work rows inserted, then deleted (as steps are done), and the server's statistics showing it."""
    message = _received(store)
    with store.begin() as conn:
        enqueue_ready(conn, "process", *[message] * steps)
    with store.begin() as conn:
        conn.execute(delete(work))
    wait_for(lambda: _vacuum_stats(store)["work"][0] >= steps, what="the dead rows in the server's statistics")


def _vacuum_stats(store: Store) -> dict[str, tuple[int, bool, bool]]:
    """Each table's dead rows, and whether it was ever vacuumed and analyzed (by hand, not by autovacuum)."""
    with store.read() as conn:
        return {name: tuple(stats) for name, *stats in conn.execute(text(
            "SELECT relname, n_dead_tup, last_vacuum IS NOT NULL, last_analyze IS NOT NULL FROM pg_stat_user_tables"))}


def _live_messages(store: Store) -> int:
    with store.read() as conn:
        return int(conn.execute(text("SELECT n_live_tup FROM pg_stat_user_tables WHERE relname = 'messages'")).scalar())


def _add_messages(store: Store, count: int, total: int) -> None:
    """`count` messages received, and the server's statistics showing `total` live ones and none dead."""
    for _ in range(count):
        _received(store)
    wait_for(lambda: _vacuum_stats(store)["messages"][0] == 0 and _live_messages(store) == total,
             what="the new messages in the server's statistics")


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_postgresql_a_table_whose_changes_pass_the_threshold_is_vacuumed_and_analyzed_and_the_others_left(
    store: Store,
) -> None:
    """On a server whose autovacuum is off (this machine's) the planner had no statistics, and a look-up of the
    receipts a batch's conversations await read every message of their families; and each step's row in the work
    table is inserted, changed and deleted, dead rows that every claim passed."""
    _churned_work(store, 300)
    assert store.vacuum(1000) == [], "600 changed rows, 300 of them dead, are under the threshold"
    assert store.vacuum(100) == ["work"]
    stats = _vacuum_stats(store)
    assert stats["work"] == (0, True, True)
    assert stats["messages"] == (0, False, False), "one message added: under the threshold"
    assert store.vacuum(100) == [], "nothing left to do"


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_postgresql_a_table_that_only_grows_is_analyzed_once_it_passes_the_threshold_then_once_it_doubles(
    store: Store,
) -> None:
    """ANALYZE reads a sample of the table (on the messages table, 33-107 ms of the server's time): statistics
    that exist matter, fresh ones hardly."""
    _add_messages(store, 150, 150)
    # message_counts: a row added with each message (its triggers), so analyzed with it
    assert store.vacuum(100) == ["events", "message_counts", "messages"], "never analyzed, and 150 rows added"
    assert _vacuum_stats(store)["messages"] == (0, False, True), "analyzed, not vacuumed: no dead rows"
    _add_messages(store, 200, 350)
    assert store.vacuum(100) == [], "200 rows added to 150: under a hundred and half of 350"
    _add_messages(store, 200, 550)
    assert store.vacuum(100) == ["events", "message_counts", "messages"], \
        "400 added to 150: past a hundred and half of 550"


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_postgresql_tables_are_left_to_autovacuum_when_the_threshold_is_0(store: Store) -> None:
    _churned_work(store, 300)
    assert store.vacuum(0) == []
    assert _vacuum_stats(store)["work"] == (300, False, False)


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_postgresql_compresses_message_bytes_with_lz4_and_reads_earlier_rows_as_before(store: Store) -> None:
    """pglz, PostgreSQL's default, took 2.3 times the server's CPU of lz4 to store a message's bytes; create_schema
    has the server compress new rows with lz4, and rows stored before (with pglz) read as they were."""
    document = b"<PendingPolicy>" + b"<Goods>HS 8471300000 laptops</Goods>" * 400 + b"</PendingPolicy>"
    with store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE messages ALTER COLUMN raw SET COMPRESSION pglz, "
                          "ALTER COLUMN canonical SET COMPRESSION pglz"))
    earlier = _received(store, raw=document)
    store.create_schema()
    later = _received(store, raw=document)
    with store.read() as conn:
        methods = dict(conn.execute(text(
            "SELECT id, pg_column_compression(raw) FROM messages WHERE id IN (:earlier, :later)"),
            {"earlier": earlier, "later": later}).all())
        assert (methods[earlier], methods[later]) == ("pglz", "lz4")
        assert store.get_message(conn, earlier).raw == store.get_message(conn, later).raw == document


def test_sqlite_log_starts_over_at_a_checkpoint_that_a_reader_held_up(tmp_path: Path) -> None:
    """A passive checkpoint stops at the oldest reader's snapshot, and under a steady load a reader, or a write
    after it, is always there: the log never started over and held everything written since the load began
    (600 MB after 6,000 messages; each new page of it cost the kernel an allocation). The checkpoint now waits,
    holding the writers back, for such a reader to finish, so that the next write starts the log over."""
    store = Store(f"sqlite:///{tmp_path / 'hub.db'}")
    store.create_schema()
    for _ in range(20):
        _received(store)
    with store.read() as reader:
        reader.execute(text("SELECT count(*) FROM messages")).scalar()  # its snapshot: the first 20 messages
        for _ in range(20):
            _received(store)
        finishing = threading.Timer(0.02, reader.rollback)  # the reader finishes while the checkpoint waits
        finishing.start()
        store.checkpoint()
        finishing.join()
    _received(store)
    with store.engine.connect() as conn:
        _busy, frames, _copied = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
    store.close()
    assert frames < 20, f"the log was not started over: it holds {frames} pages after one more message"


def test_sqlite_checkpoint_holds_the_writers_back_only_briefly_for_a_reader_that_does_not_finish(
    tmp_path: Path,
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'hub.db'}")
    store.create_schema()
    _received(store)
    with store.read() as reader:
        reader.execute(text("SELECT count(*) FROM messages")).scalar()
        _received(store)
        started = time.monotonic()
        store.checkpoint()
        waited = time.monotonic() - started
        _received(store)  # the writers go on while the reader stays
    store.close()
    assert waited < 5, f"the checkpoint held the writers for {waited:.1f} s (the store's busy timeout is 30 s)"


def test_a_batch_of_new_messages_writes_few_pages_to_the_sqlite_log(tmp_path: Path) -> None:
    """New hub ids sort after the ones before them (hub.identifiers.time_ordered_id), so a batch's rows land
    together at the end of each index on them; with random ids each row wrote a page of its own to the log."""
    store = Store(f"sqlite:///{tmp_path / 'hub.db'}")
    store.create_schema()
    for _ in range(30):
        with store.begin() as conn:
            for _ in range(100):
                store.add_message(conn, direction="in", partner="insurer", state="received", size=4, raw=b"<x/>")
    store.checkpoint()
    with store.begin() as conn:
        for _ in range(50):
            store.add_message(conn, direction="in", partner="insurer", state="received", size=4, raw=b"<x/>")
    with store.engine.connect() as conn:
        _busy, frames, _copied = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
    store.close()
    assert frames < 30, f"a batch of 50 new messages wrote {frames} pages to the log"


def test_a_transaction_whose_last_statement_fails_leaves_none_of_its_earlier_ones(store: Store) -> None:
    """An intake's transaction goes to PostgreSQL whole, in one pipeline, without BEGIN and COMMIT: the pipeline's
    statements are one transaction there too, and the new input's row goes with the failed statement after it."""
    new = new_id()
    with pytest.raises(DBAPIError), store.begin(serial=False) as conn:
        store.add_inputs(conn, [{"id": new, "direction": "in", "partner": "insurer", "state": "received",
                                 "file_name": "a.xml", "size": 4, "raw": b"<x/>"}], ["insurer/in/a.xml, 4 bytes"])
        store.add_event(conn, "no-such-message", "received")  # the events' insert breaks its foreign key
    with store.read() as conn:
        assert store.get_message(conn, new) is None


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_postgresql_rows_inserted_at_commit_are_told_by_id_once_it_has_committed_and_never_if_it_fails(
        store: Store) -> None:
    """insert_at_commit's rows go with the transaction's last statements, and their ids reach the caller once it has
    committed (the RabbitMQ relay publishes them then); a transaction that fails, in the server or before it ends,
    inserts none of them and tells nothing."""
    message, told = _received(store), list[list[int]]()
    with store.begin(serial=False) as conn:
        Store.insert_at_commit(conn, ENQUEUE, work_rows("process", [message, message], "queued"), told.append)
        store.add_event(conn, message, "noted")
        assert told == []
    with store.read() as conn:
        assert sorted(told[0]) == sorted(conn.execute(select(work.c.id)).scalars())
    assert len(told) == 1 and len(told[0]) == 2

    with pytest.raises(DBAPIError), store.begin(serial=False) as conn:
        Store.insert_at_commit(conn, ENQUEUE, work_rows("process", [message], "queued"), told.append)
        Store.insert_at_commit(conn, ENQUEUE, work_rows("process", ["no-such-message"], "queued"), told.append)
    with pytest.raises(RuntimeError), store.begin() as conn:
        Store.insert_at_commit(conn, ENQUEUE, work_rows("process", [message], "queued"), told.append)
        raise RuntimeError("the decision failed")
    assert len(told) == 1
    with store.read() as conn:
        assert len(conn.execute(select(work.c.id)).all()) == 2


def test_retries_and_receipt_timeouts_are_counted_from_their_own_index_which_an_older_store_gets_at_start(
        store: Store) -> None:
    """/metrics counts retries and receipt timeouts at every scrape, among the history events that every message adds
    and retention keeps for 90 days: each count reads its own partial index, never the whole history (the plan is
    the server's, for the statement as it ran; PostgreSQL told to avoid a whole-table scan where it can, since on a
    few rows that is cheapest, and on PostgreSQL the generic plan of a statement psycopg has prepared, which cannot
    count on a parameter's value). A store made before these indexes existed gets them when a hub next starts on it."""
    message = _received(store)
    with store.begin() as conn:
        for name in ["accepted", "delivered", "settled"] * 20 + [RETRY_EVENT] * 3 + [RECEIPT_TIMEOUT_EVENT]:
            store.add_event(conn, message, name)
    ran: list[tuple[str, Any]] = []

    def note(_conn: object, _cursor: object, sql: str, params: Any, *_: object) -> None:
        ran.append((sql, params))

    event.listen(store.engine, "before_cursor_execute", note)
    with store.read() as conn:
        counted = {name: store.count_events(conn, name) for name in (RETRY_EVENT, RECEIPT_TIMEOUT_EVENT)}
        event.remove(store.engine, "before_cursor_execute", note)
        plans = []
        for sql, params in ran:
            if store.is_sqlite:
                plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params).all()
            else:  # as psycopg prepares a statement after its fifth run: a generic plan, for any parameters' values
                names, numbered = list(params or {}), sql
                for n, name in enumerate(names, 1):
                    numbered = numbered.replace(f"%({name})s", f"${n}")
                conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off")
                conn.exec_driver_sql(f"PREPARE counted AS {numbered}")
                values = ", ".join(f"'{params[name]}'" for name in names)
                plan = conn.exec_driver_sql(f"EXPLAIN EXECUTE counted{f'({values})' if values else ''}").all()
                conn.exec_driver_sql("DEALLOCATE counted; RESET plan_cache_mode; RESET enable_seqscan")
            plans.append(" ".join(str(row[-1]) for row in plan))
    assert counted == {RETRY_EVENT: 3, RECEIPT_TIMEOUT_EVENT: 1}
    assert len(plans) == 2
    assert "ix_events_retry" in plans[0] and "ix_events_receipt_timeout" in plans[1], plans

    with store.begin() as conn:
        conn.execute(text("DROP INDEX ix_events_retry"))
    store.create_schema()
    assert "ix_events_retry" in {index["name"] for index in inspect(store.engine).get_indexes("events")}


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_postgresql_a_transaction_begun_not_durable_commits_without_waiting_for_the_disk_and_the_next_one_waits(
        store: Store) -> None:
    """An intake's transaction and a batch's follow-through commit without waiting for their write-ahead log to reach
    the disk (a server crash that forgets them is made good: the input is still in intake/, the items run again).
    That holds for the transaction alone, whether it goes to the server whole in one pipeline (no BEGIN) or statement
    by statement, and the connection's next transaction, from the same pool, waits for the disk again."""
    setting = select(func.current_setting("synchronous_commit"), func.pg_backend_pid())

    def inside(durable: bool, whole: bool) -> tuple[str, int]:
        message = new_id()
        with store.begin(serial=False, durable=durable) as conn:
            store.add_inputs(conn, [{"id": message, "direction": "in", "partner": "insurer", "state": "received",
                                     "file_name": f"{message}.xml", "size": 4, "raw": b"<x/>"}], ["a test"])
            if not whole:  # a statement of its own first: BEGIN goes with it, the rest after it
                conn.execute(select(func.count()).select_from(work)).scalar()
            found = Store.read_together(conn, [(setting, {})], last=True)[0][0]
        with store.read() as conn:
            assert store.get_message(conn, message) is not None, "committed"
        return found[0], found[1]

    setting_of, backend = inside(durable=False, whole=True)
    assert setting_of == "off"
    assert inside(durable=True, whole=True) == ("on", backend), "the same connection, waiting for the disk again"
    assert inside(durable=False, whole=False) == ("off", backend)
    assert inside(durable=True, whole=False) == ("on", backend)
    with store.read() as conn:
        assert conn.execute(setting).one() == ("on", backend)


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_postgresql_a_batch_on_its_own_keys_holds_off_only_those_keys_and_other_writers(store: Store) -> None:
    """Two processes' batches of decisions on different keys are decided at the same time; one on the same key, or
    any other serial writer (an operator's replay, a receipt's decision), waits until the first commits."""
    one = select(literal_column("1"))
    holding, release = threading.Event(), threading.Event()

    def writer(keys: list[str] | None, hold: bool = False) -> threading.Thread:
        def run() -> None:
            with store.begin() as conn:
                if keys is not None:
                    store.lock_keys_only(conn, [("conversation", "underwriting", key) for key in keys])
                store.read_together(conn, [(one, {})])  # the transaction's first statement, with its locks
                if hold:
                    holding.set()
                    release.wait(30)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    first = writer(["TBX2026000001", "TBX2026000002"], hold=True)
    assert holding.wait(10)
    other_keys = writer(["TBX2026000003"])
    other_keys.join(10)
    assert not other_keys.is_alive(), "a batch of other keys was held up"
    waiting = [writer(["TBX2026000002"]), writer(None)]
    for thread in waiting:
        thread.join(1)
    assert all(thread.is_alive() for thread in waiting), "the same key, and a writer of anything, wait"
    release.set()
    for thread in (first, *waiting):
        thread.join(10)
        assert not thread.is_alive()


def test_completing_work_whose_lease_ran_out_undoes_the_whole_transaction(store: Store) -> None:
    """A worker that stalled past its lease finds its item taken by another: completing it raises LeaseLost before
    its transaction commits, and nothing it wrote there stays; the new holder completes it."""
    queue = DbWorkQueue(store, lease_seconds=30)
    message = _received(store)
    with store.begin() as conn:
        queue.enqueue(conn, "process", message)
    [stalled] = queue.claim("worker-1", 1)
    with store.begin() as conn:
        conn.execute(update(work).values(lease_until=0))  # its lease ran out
    assert queue.reap() == 1
    [taken] = queue.claim("worker-2", 1)
    with pytest.raises(LeaseLost, match="no longer leased by worker-1"), store.begin() as conn:
        queue.complete(conn, stalled)
        store.add_event(conn, message, "stalled-worker-finished")
        store.set_state(conn, message, "accepted")
    with store.read() as conn:
        assert store.get_message(conn, message).state == "received"
        assert "stalled-worker-finished" not in [event.event for event in store.history(conn, message)]
    with store.begin() as conn:
        queue.complete(conn, taken)
    with store.read() as conn:
        assert not conn.execute(select(work.c.id)).all()


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_postgresql_tables_are_analyzed_from_a_small_sample_and_later_statements_keep_the_server_s_default(
    store: Store,
) -> None:
    """At the server's default statistics target ANALYZE of the messages table took up to 440 ms of the server's
    time at 100 messages/s, and the messages that came meanwhile were the slowest of the run: the hub's look-ups,
    equalities on indexed keys, are planned as well from 10 values a column as from 100."""
    _add_messages(store, 150, 150)
    assert "messages" in store.vacuum(100)
    with store.read() as conn:
        bounds = conn.execute(text("SELECT array_length(histogram_bounds, 1) FROM pg_stats "
                                   "WHERE tablename = 'messages' AND attname = 'id'")).scalar()
        default = conn.execute(text("SELECT setting = reset_val FROM pg_settings "
                                    "WHERE name = 'default_statistics_target'")).scalar()
    assert bounds == 11, "150 distinct ids: 10 buckets of them, not 100"
    assert default, "the sample size was set for the ANALYZE alone, not for the connection"


def _tallies(store: Store) -> tuple[list[Any], list[Any]]:
    """The messages and conversations as the store's counts have them, and as a count of their rows has them."""
    keys = [messages.c[name] for name in ("family", "message_type", "direction", "partner", "state")]
    with store.read() as conn:
        counted = store.message_tally(conn) + store.conversation_tally(conn)
        rows = store.count_by(conn, *keys) + store.count_by(conn, conversations.c.family, conversations.c.state)
    return sorted(map(tuple, counted), key=str), sorted(map(tuple, rows), key=str)


def _flow(store: Store, n: int) -> None:
    """`n` messages through what the hub writes: received, read, accepted, a conversation opened and moved on, one
    in three parked, and one in five removed (as retention does, its history first)."""
    ids = [_received(store) for _ in range(n)]
    with store.begin() as conn:
        for i, message in enumerate(ids):
            store.set_state(conn, message, "accepted", family="claims", message_type="ClaimApplication")
            store.set_state(conn, message, "parked" if i % 3 == 0 else "accepted", error_code=None)
            key = f"K-{message}"
            store.set_conversation(conn, "claims", key, "91330000MA2AB3CD4X", "submitted", opens=True)
    with store.begin() as conn:
        for message in ids:
            store.set_conversation(conn, "claims", f"K-{message}", "91330000MA2AB3CD4X", "accepted", opens=False)
    with store.begin() as conn:
        gone = ids[::5]
        conn.execute(delete(events).where(events.c.message.in_(gone)))
        conn.execute(delete(messages).where(messages.c.id.in_(gone)))


def test_messages_and_conversations_are_counted_through_every_write_and_summing_the_counts_keeps_them(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """/status and /metrics read the counts (message_counts, conversation_counts), not the rows: the counts follow
    every insert, change and removal, a failed transaction changes none, and summing them (each hub's upkeep, past
    _COMPACT_PAST_ROWS rows) leaves one row a key and the counts as they were."""
    _flow(store, 30)
    unchanged = _received(store)
    with pytest.raises(RuntimeError), store.begin() as conn:
        store.set_state(conn, unchanged, "rejected", family="claims", message_type="ClaimApplication")
        raise RuntimeError("a transaction that fails")
    counted, rows = _tallies(store)
    assert counted == rows
    assert ("claims", "ClaimApplication", "in", "insurer", "parked", 8) in counted, "10 parked, 2 of them removed"
    assert (None, None, "in", "insurer", "received", 1) in counted, "the failed transaction's message, unchanged"
    assert store.compact_counts() == [], "under the threshold"
    monkeypatch.setattr(store_module, "_COMPACT_PAST_ROWS", 0)
    assert store.compact_counts() == ["message_counts", "conversation_counts"]
    assert _tallies(store) == (counted, rows)
    with store.read() as conn:
        assert [conn.execute(select(func.count()).select_from(t)).scalar() for t in (message_counts,
                                                                                    conversation_counts)] == [3, 1]


def test_counts_summed_by_two_hubs_while_workers_write_lose_nothing(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each hub process sums the counts in its upkeep while the workers add to them: what one sums it removes, what
    a transaction adds meanwhile stays, and two summing at once do not count anything twice."""
    monkeypatch.setattr(store_module, "_COMPACT_PAST_ROWS", 0)
    writing, failed = threading.Event(), []

    def write() -> None:
        try:
            for _ in range(15):
                _flow(store, 6)
        except Exception as exc:  # reported below
            failed.append(exc)
        finally:
            writing.set()

    def sum_counts() -> None:
        try:
            while not writing.is_set():
                store.compact_counts()
        except Exception as exc:
            failed.append(exc)

    threads = [threading.Thread(target=write), threading.Thread(target=write)] + \
        [threading.Thread(target=sum_counts) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failed, failed
    counted, rows = _tallies(store)
    assert counted == rows
    assert sum(n for *_key, n in counted if len(_key) == 5) == 2 * 15 * (6 - 2), "2 of each 6 removed"


def test_a_store_made_before_its_counts_is_counted_from_its_rows_when_a_hub_next_starts(store: Store) -> None:
    """It gets the counts and their triggers, counted from its rows as they are, and loses the index that counted
    them before (on SQLite; every change of a message's state wrote it)."""
    _flow(store, 10)
    with store.begin() as conn:
        for counted, table in (("messages", message_counts), ("conversations", conversation_counts)):
            for change in ("insert", "delete", "update"):
                conn.execute(text(f"DROP TRIGGER hub_count_{counted}_{change}"
                                  f"{'' if store.is_sqlite else f' ON {counted}'}"))
            conn.execute(text(f"DROP TABLE {table.name}"))
        conn.execute(text("CREATE INDEX ix_messages_tally ON messages (family, message_type, direction, partner, "
                          "state)"))  # what counted them then, on SQLite
    _flow(store, 10)
    store.create_schema()
    assert "ix_messages_tally" not in {index["name"] for index in inspect(store.engine).get_indexes("messages")}
    counted, rows = _tallies(store)
    assert counted == rows and sum(n for *_key, n in counted if len(_key) == 5) == 16
    _flow(store, 5)
    assert _tallies(store)[0] == _tallies(store)[1], "and counted from then on"
