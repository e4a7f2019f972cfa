"""The work queue: the store's own table, so storing a message and scheduling its work commit together.

Every backend keeps the `work` table as the record of each step (the outbox); the WorkQueue protocol is what
the pipeline and the worker loop see (dramatiq's broker protocol is the model). DbWorkQueue claims straight
from the table; hub.rabbitqueue.RabbitWorkQueue has RabbitMQ carry the rows to the workers.

Recipe measured on these machines (ENGINEERING.md): states ready/leased/parked, attempts, available_at,
lease_until; a claim is one short transaction on SQLite (BEGIN IMMEDIATE), one statement on PostgreSQL (an
UPDATE of the rows a FOR UPDATE SKIP LOCKED subquery picks); expired leases are returned by a separate query,
not an OR in the claim. A worker that dies holding a lease loses it when the lease runs out, and the item runs
again: every handler is idempotent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from threading import Event
from typing import Any, Protocol

from sqlalchemy import Connection, and_, bindparam, delete, func, insert, select, update

from hub.store import Store, among, work


class LeaseLost(Exception):
    """The item's lease ran out and another worker may have it: undo this attempt's effects."""


@dataclass(frozen=True)
class WorkItem:
    id: int
    kind: str  # "process" an inbound message, "deliver" an outbound one, "settle" an input file
    message: str
    attempts: int  # including this one
    owner: str
    delivery: Any = field(default=None, compare=False)  # the broker's message that brought it, acked when done


# A row waiting for a worker: "ready" in the table; "queued" once RabbitMQ carries it (hub.rabbitqueue).
WAITING = ("ready", "queued")


class WorkQueue(Protocol):
    """What the pipeline and the worker loop need from a work queue, whichever carries the work."""

    def notify(self) -> None:
        """Work was just committed in this process: idle workers look now rather than after their pause."""

    def idle(self) -> None:
        """A worker's pause after claim() found nothing: until notify(), or briefly."""

    def enqueue(self, conn: Connection, kind: str, *messages: str, delay: float = 0.0) -> None:
        """Schedule a step for each message, in the caller's transaction."""

    def claim(self, owner: str, limit: int = 1) -> list[WorkItem]:
        """Up to `limit` items leased to `owner`, oldest first (none: nothing is due)."""
        ...

    def complete(self, conn: Connection, *items: WorkItem) -> None:
        """Done, in the same transaction as the work's effects."""

    def release(self, items: Sequence[WorkItem]) -> None:
        """Claimed but not started: back to the queue as they were, no attempt spent."""

    def retry_later(self, conn: Connection, item: WorkItem, delay: float, error: str) -> None:
        """Back to the queue, due `delay` seconds from now, in the caller's transaction."""

    def park(self, conn: Connection, item: WorkItem, error: str) -> None: ...

    def done(self, item: WorkItem) -> None:
        """The worker has finished with the item (its transaction committed, or it gave up): called after."""

    def reap(self) -> int:
        """Return the work of dead workers (expired leases) to the queue; how many items."""
        ...

    def loops(self) -> list[tuple[str, Callable[[Event], None]]]:
        """Background loops the hub runs in threads of their own until the event is set."""
        ...


# Statements built once; the hot path passes only parameters.
ENQUEUE = insert(work)


def work_rows(kind: str, messages: Sequence[str], state: str, delay: float = 0.0) -> list[dict[str, Any]]:
    """New work rows: step `kind` for each message, due `delay` seconds from now."""
    now = time.time()
    return [{"kind": kind, "message": message, "state": state, "attempts": 0, "available_at": now + delay,
             "created_at": now} for message in messages]


def enqueue_ready(conn: Connection, kind: str, *messages: str, delay: float = 0.0) -> None:
    """Steps ready for whichever queue carries the work (its workers claim them, or its relay publishes them), in
    the caller's transaction."""
    Store.insert_rows(conn, ENQUEUE, work_rows(kind, messages, "ready", delay))


def _due(rows: Any) -> Any:
    """Rows ready to be claimed now."""
    return (rows.c.state == "ready") & (rows.c.available_at <= bindparam("_now"))


_NEXT_READY = (
    select(work.c.id, work.c.kind, work.c.message, work.c.attempts)
    .where(_due(work))
    .order_by(work.c.available_at, work.c.id)
    .limit(bindparam("_limit"))
)
_IDS = among(work.c.id, "_ids")
# A claimed row's new values, whichever queue claims it.
LEASED = {"state": "leased", "lease_owner": bindparam("owner"), "lease_until": bindparam("lease_until"),
          "attempts": work.c.attempts + 1}
_LEASE = update(work).where(_IDS).values(LEASED)
# PostgreSQL: a claim's commit (and the RabbitMQ relay's queue marks') need not wait for its WAL flush: a server
# crash may forget one, and then the row is simply claimed or published again (a worker still running it loses at
# complete(), which finds the row no longer leased to it; the worker that claims a row twice drops the second
# delivery). A statement says so in what it returns: set_config(..., true) lasts to the end of the statement's own
# transaction, and is evaluated only when a row is claimed (a claim that finds nothing writes nothing to flush).
# Measured here on a one-row UPDATE: 0.38 -> 0.22 ms, and the kernel's work for one fsync saved.
ASYNC_COMMIT_RETURNED = func.set_config("synchronous_commit", "off", True).label("async_commit")
_picked = work.alias("picked")


def first_unlocked(where: Callable[[Any], Any], limit: Any) -> Any:
    """PostgreSQL: up to `limit` rows that `where(rows)` selects, first due first, of those no other transaction
    holds (the rest skipped), locked: an UPDATE of these takes them in one statement. The alias keeps the
    subquery's own FROM (else it would be correlated with the UPDATE's)."""
    return work.c.id.in_(
        select(_picked.c.id).where(where(_picked)).order_by(_picked.c.available_at, _picked.c.id).limit(limit)
        .with_for_update(skip_locked=True))


# PostgreSQL: the claim in one statement, outside any transaction (one round trip, not five).
_CLAIM_NEXT = (
    update(work)
    .where(first_unlocked(_due, bindparam("_limit")))
    .values(LEASED)
    .returning(work.c.id, work.c.kind, work.c.message, work.c.attempts, work.c.available_at, ASYNC_COMMIT_RETURNED)
)
_REAP = (
    update(work)
    .where(work.c.state == "leased", work.c.lease_until < bindparam("_now"))
    .values(state="ready", lease_owner=None, lease_until=None)
)

_STILL_LEASED = and_(_IDS, work.c.state == "leased", work.c.lease_owner == bindparam("_owner"))  # this worker's
_COMPLETE = delete(work).where(_STILL_LEASED).returning(work.c.id)
_RELEASE = update(work).where(_STILL_LEASED)
_UNCLAIM = (
    update(work).where(_STILL_LEASED)
    .values(state="ready", lease_owner=None, lease_until=None, attempts=work.c.attempts - 1)
)


def reap(conn: Connection) -> int:
    """Return expired leases to the queue (their workers died or stalled)."""
    return conn.execute(_REAP, {"_now": time.time()}).rowcount


class DbWorkQueue:
    def __init__(self, store: Store, lease_seconds: float, poll_seconds: float = 0.05,
                 wake_others: Callable[[], None] = lambda: None) -> None:
        """`wake_others`: the workers of this hub's other processes (hub/processes.py), woken with this one's."""
        self.store = store
        self.lease_seconds = lease_seconds
        self.idle_wait = poll_seconds
        self.wake_others = wake_others
        self._arrived = Event()
        self._next_reap = 0.0

    def enqueue(self, conn: Connection, kind: str, *messages: str, delay: float = 0.0) -> None:
        enqueue_ready(conn, kind, *messages, delay=delay)

    def notify(self) -> None:
        self._arrived.set()
        self.wake_others()

    def idle(self) -> None:
        # Cleared after the wait, then the worker claims: work committed in between is claimed, not missed.
        self._arrived.wait(self.idle_wait)
        self._arrived.clear()

    def claim(self, owner: str, limit: int = 1) -> list[WorkItem]:
        now = time.time()
        if now >= self._next_reap:
            self.reap()
            self._next_reap = now + min(self.lease_seconds / 4, 5.0)
        lease = {"owner": owner, "lease_until": now + self.lease_seconds}
        if not self.store.is_sqlite:
            with self.store.one_statement() as conn:
                [claimed] = Store.read_together(conn, [(_CLAIM_NEXT, {"_now": now, "_limit": limit, **lease})])
            return [WorkItem(row.id, row.kind, row.message, row.attempts, owner)
                    for row in sorted(claimed, key=lambda row: (row.available_at, row.id))]
        with self.store.begin(serial=False) as conn:  # SQLite has no row locks: BEGIN IMMEDIATE serialises claims
            rows = conn.execute(_NEXT_READY, {"_now": now, "_limit": limit}).all()
            if not rows:
                return []
            conn.execute(_LEASE, {"_ids": [row.id for row in rows], **lease})
        return [WorkItem(row.id, row.kind, row.message, row.attempts + 1, owner) for row in rows]

    def reap(self) -> int:
        with self.store.begin(serial=False) as conn:
            return reap(conn)

    def complete(self, conn: Connection, *items: WorkItem) -> None:
        """Done, in the same transaction as the work's effects, sent with its next statements; LeaseLost is raised
        before it commits if a lease ran out (the transaction, every item's effects with it, is undone: another
        worker may be running that item)."""
        held = ", ".join(f"{i.id} ({i.kind})" for i in items)
        lost = (f"work item {held} is no longer leased by {items[0].owner}" if len(items) == 1 else
                f"work items {held} are no longer all leased by {items[0].owner}")
        Store.expect_rows(conn, _COMPLETE, {"_ids": [i.id for i in items], "_owner": items[0].owner}, len(items),
                          lambda: LeaseLost(lost))

    def release(self, items: Sequence[WorkItem]) -> None:
        if items:
            with self.store.begin(serial=False) as conn:
                conn.execute(_UNCLAIM, {"_ids": [i.id for i in items], "_owner": items[0].owner})

    @staticmethod
    def retry_later(conn: Connection, item: WorkItem, delay: float, error: str) -> None:
        conn.execute(_RELEASE, {"_ids": [item.id], "_owner": item.owner, "state": "ready", "lease_owner": None,
                                "lease_until": None, "available_at": time.time() + delay, "last_error": error})

    def park(self, conn: Connection, item: WorkItem, error: str) -> None:
        conn.execute(_RELEASE, {"_ids": [item.id], "_owner": item.owner, "state": "parked", "lease_owner": None,
                                "lease_until": None, "last_error": error})

    def done(self, item: WorkItem) -> None:
        """Nothing to do: the table is the queue, and complete() has already taken the row."""

    def loops(self) -> list[tuple[str, Callable[[Event], None]]]:
        return []  # claims reap expired leases themselves

    @staticmethod
    def depth(conn: Connection) -> dict[str, object]:
        by_state = conn.execute(select(work.c.state, func.count()).group_by(work.c.state))
        counts: dict[str, int] = {state: n for state, n in by_state}
        oldest = conn.execute(
            select(func.min(work.c.created_at)).where(work.c.state.in_((*WAITING, "leased")))
        ).scalar()
        return {
            "ready": counts.get("ready", 0) + counts.get("queued", 0),
            "leased": counts.get("leased", 0),
            "parked": counts.get("parked", 0),
            "oldest_waiting_age_seconds": round(time.time() - oldest, 3) if oldest else None,
        }

    @staticmethod
    def run_now(conn: Connection, message: str) -> list[tuple[str, str]]:
        """An operator's replay: the message's waiting or parked work runs now with a fresh attempt count.
        Leased work is left to its worker (taking it back would let two workers run it). Work RabbitMQ holds in
        a retry queue is made ready: the relay publishes it again, and whichever copy comes first runs it.
        Returns each item's (kind, state before)."""
        found = conn.execute(
            select(work.c.id, work.c.kind, work.c.state).where(work.c.message == message).with_for_update()
        ).all()
        waiting = [row.id for row in found if row.state in (*WAITING, "parked")]
        if waiting:
            conn.execute(
                update(work).where(work.c.id.in_(waiting), work.c.state.in_((*WAITING, "parked")))
                .values(state="ready", attempts=0, available_at=time.time(), lease_owner=None, lease_until=None)
            )
        return [(row.kind, row.state) for row in found]
