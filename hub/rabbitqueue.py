"""The work queue on RabbitMQ (kombu), with the store still the truth.

The `work` table stays the record of every step (the outbox): enqueue inserts a row in the caller's
transaction, exactly as on the DB queue. A relay publishes ready rows to RabbitMQ with publisher confirms, on
a connection of its own, up to ITEMS_PER_MESSAGE row ids to a message, and only then marks them "queued"; a
crash in between publishes a row twice, never zero times. A worker claims a delivered row only if it is still
waiting and due (one atomic UPDATE): a stale or duplicate one is dropped. The worker acks a message once the
pipeline's transactions for all the rows it carried have committed. The broker carries wake-ups; what is owed
lives in the table, so nothing RabbitMQ forgets is lost: expired leases (dead workers) are reaped and published
again, as are rows queued long ago and never claimed.

Work that the hub's own process enqueues, due now, while its relay is connected (an input's process step above all)
skips the relay's transaction: it is stored "queued" already, its ids come back with that transaction's last
statements (Store.insert_at_commit), and once it has committed the relay publishes them. At 100 inputs a second
each input came alone, and the relay's transaction for it (BEGIN, the UPDATE that marks it queued, COMMIT: two
round trips) was 3 of PostgreSQL's 14 statements a message (measured); without it the hub's own process spent
2.6-3.1 ms of CPU a message instead of 3.1-3.6. A crash between that commit and the broker's confirm leaves rows
queued that no message carries: a relay that starts makes every queued row that is due ready again, and publishes
it (a row the broker still holds is delivered twice, and its second delivery dropped); rows that another hub left
so are published again after requeue_after_seconds.

Topology, all quorum queues on the default exchange, names under queue.name_prefix:
- PREFIX.work: what workers consume (prefetch bounded); x-delivery-limit dead-letters a message the broker
  handed out that many times without an ack to PREFIX.parked. Its consumers rank by their worker's place in its
  hub (x-priority): the broker gives work to the first worker until it holds its prefetch, and to the next only
  what overflows. Handed out in turn (the broker's default), at 100 inputs a second each input came alone to one
  of two worker processes, and each paid a batch's round trips and wake-ups for it. Taken by the first, they came
  a few at a time: the hub's CPU a message went from 10.9-11.7 to 9.5-10.2 ms and the machine from 90-92 to 78-84 %
  busy, the median of 9 runs' p50 from 71 to 64 ms and of their p99 from 162 to 144 ms (measured side by side on
  this 2-core machine, 2026-11-23). A backlog fills the first worker's prefetch at once, and every worker shares it.
  At 100 inputs a second on an Intel Xeon VM the first worker was then busy most of the time (2026-11-24, traced: 10
  ms a message that comes alone, 3.6 of them in the decision's transaction; on an AMD EPYC one, with 1.7 times the
  CPU, it spent 4.7 ms of CPU a message and was half busy), so a slow commit queues the next few; yet a prefetch of 16
  or 32 (one or two messages: the overflow goes to the second worker at once) gave no better p99 over 30 s in three
  runs each, side by side (103/59/39 and 65/47/44 ms, against 61/44/31 with the default 128).
- PREFIX.retry.<ms>ms: one per retry tier, with a per-queue x-message-ttl and dead-lettering back to work.
  Per-message TTLs would block the queue's head (a 1 s message waited behind a 5 s one: ENGINEERING.md).
- PREFIX.parked: what the broker gave up on; its consumer parks the rows in the store, where `parked` and
  `replay` see it. Work the pipeline parks is parked in the store directly (park() is the DB queue's).

Jitter cannot be per message with per-queue TTLs, so a retry's delay is kept exact in the row (available_at)
and the relay sends it through the longest tier not longer than what remains; a row that comes back before its
time (the jittered remainder, under the shortest tier) is put back "ready" and the relay publishes it when due.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from threading import Event
from typing import Any

import amqp
from kombu import Connection, Consumer, Queue
from sqlalchemy import Connection as Database
from sqlalchemy import bindparam, select, update

from hub.config import HubConfig
from hub.errors import RETRIES_EXHAUSTED, HubError
from hub.store import Store, among, work
from hub.workqueue import (
    ASYNC_COMMIT_RETURNED,
    ENQUEUE,
    LEASED,
    WAITING,
    DbWorkQueue,
    WorkItem,
    first_unlocked,
    reap,
    work_rows,
)

log = logging.getLogger("hub.rabbitqueue")

RELAY_BATCH = 200
# Work items one broker message carries (its body: their row ids). One message each cost the broker 300-400 µs of
# CPU and the hub as much again in py-amqp's framing (measured), on a 2-core machine the hub shares with it. A
# quarter of a batch (queue.batch, 64), so that the workers still share a backlog's messages between them.
ITEMS_PER_MESSAGE = 16
CONFIRM_TIMEOUT_SECONDS = 10.0
REAP_EVERY_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 5.0
_A_MOMENT = 0.0005  # seconds a claim waits for more deliveries once it has one

# Ready as well as queued: a delivery can come before the relay's transaction commits; the UPDATE then waits
# for the relay's row lock and claims the row once it is queued (a WHERE on "queued" alone would read the old
# "ready" and pass the row by).
_CLAIM = (
    update(work)
    .where(among(work.c.id, "_ids"), work.c.state.in_(WAITING),
           work.c.available_at <= bindparam("_now"))
    .values(LEASED)
    .returning(work.c.id, work.c.kind, work.c.message, work.c.attempts, ASYNC_COMMIT_RETURNED)
)
# A delivery that came back from a retry tier before its row's time: the relay publishes it again when due.
_EARLY = (
    update(work)
    .where(among(work.c.id, "_ids"), work.c.state == "queued",
           work.c.available_at > bindparam("_now"))
    .values(state="ready")
)


def _to_publish(rows: Any) -> Any:
    """What the relay publishes: rows due now (to work) and rows due later than the shortest tier (to a tier); a
    row due sooner than that waits here until due."""
    return (rows.c.state == "ready") & (
        (rows.c.available_at <= bindparam("_now")) | (rows.c.available_at >= bindparam("_from")))


_ANY_TO_PUBLISH = select(work.c.id).where(_to_publish(work)).limit(1)
# A batch to publish, marked queued in the transaction that publishes it (rolled back if the broker does not
# confirm it), in one statement: the rows other relays hold are skipped. Its commit need not wait for the WAL
# flush (see ASYNC_COMMIT_RETURNED): a row a server crash forgets is published again, and its second delivery
# dropped.
_QUEUE_NEXT = (
    update(work).where(first_unlocked(_to_publish, RELAY_BATCH)).values(state="queued")
    .returning(work.c.id, work.c.available_at, ASYNC_COMMIT_RETURNED)
)
# A row of the batch that came under the shortest tier meanwhile: the relay publishes it when due.
_NOT_YET = update(work).where(among(work.c.id, "_ids")).values(state="ready")
# Rows queued long ago and never claimed: their message is gone (a broker that lost it): publish them again.
_REQUEUE = (
    update(work).where(work.c.state == "queued", work.c.available_at < bindparam("_before")).values(state="ready")
)
_PARK = (
    update(work).where(work.c.id == bindparam("_id"), work.c.state.in_(WAITING))
    .values(state="parked", last_error=bindparam("last_error"))
    .returning(work.c.kind, work.c.message)
)


def retry_tiers(config: HubConfig) -> list[float]:
    """Every delay the hub may ask for: the retry policy's, each route's and the signer wait."""
    delays = {*config.retry.delays_seconds, config.retry.wait_seconds}
    for route in config.routes:
        delays.update(config.route_retry(route).delays_seconds)
    return sorted(d for d in delays if d > 0)


class Topology:
    def __init__(self, prefix: str, tiers: list[float], delivery_limit: int) -> None:
        self.work = f"{prefix}.work"
        self.parked = f"{prefix}.parked"
        self.tiers = sorted({round(t * 1000) for t in tiers})  # TTLs in ms, shortest first
        back_to_work = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": self.work}
        self.queues = [
            _quorum(self.work, **{"x-delivery-limit": delivery_limit, "x-dead-letter-exchange": "",
                                  "x-dead-letter-routing-key": self.parked}),
            _quorum(self.parked),
            *(_quorum(self.tier(ms), **{"x-message-ttl": ms, **back_to_work}) for ms in self.tiers),
        ]

    def tier(self, ms: int) -> str:
        return f"{self.work.rsplit('.', 1)[0]}.retry.{ms}ms"

    def route(self, remaining: float) -> str | None:
        """The queue for a row due in `remaining` seconds: work when due, else the longest tier that does not
        overshoot; None while less than the shortest tier remains (the relay publishes it when due)."""
        if remaining <= 0:
            return self.work
        fitting = [ms for ms in self.tiers if ms <= remaining * 1000]
        return self.tier(fitting[-1]) if fitting else None

    def connect(self, url: str, **options: Any) -> Connection:
        """A connection with every queue declared (idempotent: after a broker restart, they are there)."""
        conn = Connection(url, connect_timeout=5, **options)
        conn.ensure_connection(max_retries=1)
        channel = conn.default_channel
        for queue in self.queues:
            queue.bind(channel).declare()
        return conn


def _quorum(name: str, **arguments: Any) -> Queue:
    return Queue(name, routing_key=name, durable=True, queue_arguments={"x-queue-type": "quorum", **arguments})


class QueueConsumer:
    """One thread's consumer on its own connection: kombu connections are not shared between threads."""

    def __init__(self, topology: Topology, url: str, queue: str, prefetch: int, priority: int = 0) -> None:
        """`prefetch`: work items held ahead, in whole messages. `priority`: the broker delivers to a consumer of
        lower priority only what those of higher priority have no room for."""
        self.conn = topology.connect(url)
        self.channel = self.conn.channel()
        self.channel.basic_qos(0, -(-prefetch // ITEMS_PER_MESSAGE), False)
        self.pending: deque[Any] = deque()
        Consumer(self.channel, queues=[Queue(queue, no_declare=True, consumer_arguments={"x-priority": priority})],
                 on_message=self.pending.append, auto_declare=False).consume()

    def next(self, timeout: float, limit: int = 1) -> list[Any]:
        """Deliveries carrying up to `limit` work items (at least one delivery, whatever it carries): those
        already here and those the broker has sent (each drain reads one), waiting up to `timeout` for the first."""
        taken: list[Any] = []
        items = 0
        with contextlib.suppress(TimeoutError):  # socket.timeout: nothing (more) came
            while items < limit:
                if not self.pending:
                    # A moment, not 0: a zero timeout puts the socket in non-blocking mode, whose EAGAIN mid-frame
                    # py-amqp has mishandled (celery/py-amqp#320).
                    self.conn.drain_events(timeout=_A_MOMENT if taken else timeout)
                    continue
                carried = len(item_ids(self.pending[0]))
                if taken and items + carried > limit:
                    break
                taken.append(self.pending.popleft())
                items += carried
        return taken

    def close(self) -> None:
        _close(self.conn)  # the broker returns our unacked messages


class RabbitWorkQueue(DbWorkQueue):
    """Complete, release, retry_later, park, depth and run_now are the DB queue's: they change only rows, and the
    relay carries ready rows to the broker (a delivery is acked by done(), whatever became of it); so is enqueue,
    but for work due now in a process whose relay is connected (the module's docstring). Claims come from RabbitMQ
    deliveries instead of table scans."""

    def __init__(self, store: Store, config: HubConfig, first_worker: int = 0) -> None:
        """`first_worker`: the place in its hub of this process's first worker (0 in the hub's own process), whose
        consumer ranks first (the module's docstring)."""
        queue = config.queue
        super().__init__(store, queue.lease_seconds, queue.poll_seconds)
        self.url = queue.url
        self.poll_seconds = queue.poll_seconds
        self.prefetch = queue.prefetch
        self.requeue_after = queue.requeue_after_seconds
        self.delivery_limit = queue.delivery_limit
        self.topology = Topology(queue.name_prefix, retry_tiers(config), queue.delivery_limit)
        self._local = threading.local()
        self._places = itertools.count(first_worker)  # each worker thread's, taken at its first claim
        self._relaying = False  # this process's relay is connected: what is enqueued here is handed to it
        self._handed: deque[int] = deque()  # rows committed as queued, for the relay to publish

    def enqueue(self, conn: Database, kind: str, *messages: str, delay: float = 0.0) -> None:
        """Rows due now, while this process's relay is connected: stored queued, and handed to the relay once the
        transaction has committed. Any other: stored ready, for the relay to find."""
        if delay > 0 or not self._relaying or not messages:
            super().enqueue(conn, kind, *messages, delay=delay)
            return
        Store.insert_at_commit(conn, ENQUEUE, work_rows(kind, messages, "queued"), self._hand_to_relay)

    def _hand_to_relay(self, ids: list[int]) -> None:
        self._handed.extend(ids)
        self._arrived.set()

    # -- workers --------------------------------------------------------------------------------------

    def claim(self, owner: str, limit: int = 1) -> list[WorkItem]:
        """The rows of whole deliveries (up to `limit` rows, waiting up to poll_seconds for the first) that still
        wait, claimed; a stale row is dropped, and a delivery is acked once none of its rows is open. A store error
        leaves the deliveries not yet acked for the next call."""
        consumer = self._consumer()
        try:
            deliveries = consumer.next(self.poll_seconds, limit)
        except (OSError, *consumer.conn.connection_errors, *consumer.conn.channel_errors):
            self._drop_consumer()
            raise
        if not deliveries:
            return []
        by_id: dict[int, _Carried] = {}
        carried = [_Carried(delivery) for delivery in deliveries]
        for each in carried:
            for item_id in item_ids(each.delivery):  # a row the relay published twice: one copy stands for both
                if by_id.setdefault(item_id, each) is each:
                    each.open += 1
            if not each.open:
                self._ack(each.delivery)
        now = time.time()
        try:
            with self.store.one_statement() as conn:
                [rows] = Store.read_together(conn, [(_CLAIM, {"_ids": sorted(by_id), "_now": now, "owner": owner,
                                                              "lease_until": now + self.lease_seconds})])
            unclaimed = sorted(by_id.keys() - {row.id for row in rows})
            if unclaimed:
                with self.store.one_statement() as conn:
                    conn.execute(_EARLY, {"_ids": unclaimed, "_now": now})
        except Exception:  # the deliveries not acked above wait for the next claim
            consumer.pending.extendleft(reversed([each.delivery for each in carried if each.open]))
            raise
        for item_id in unclaimed:
            self._settle(by_id[item_id])
        return [WorkItem(row.id, row.kind, row.message, row.attempts, owner, by_id[row.id])
                for row in sorted(rows, key=lambda r: r.id)]

    def idle(self) -> None:
        """No pause: claim() itself waits up to poll_seconds for a delivery."""

    def done(self, item: WorkItem) -> None:
        self._settle(item.delivery)

    def _settle(self, carried: _Carried) -> None:
        """One of the delivery's items finished with: the delivery is acked with the last."""
        carried.open -= 1
        if not carried.open:
            self._ack(carried.delivery)

    def _ack(self, delivery: Any) -> None:
        consumer = getattr(self._local, "consumer", None)
        if consumer is None or delivery.channel is not consumer.channel:
            return  # its connection broke since: the broker has put it back, and its row says what is left
        try:
            delivery.ack()
        except (OSError, *consumer.conn.connection_errors, *consumer.conn.channel_errors):
            log.warning("could not ack work item %s: the broker will deliver it again (and it will be dropped)",
                        delivery.body)
            self._drop_consumer()

    def _consumer(self) -> QueueConsumer:
        consumer: QueueConsumer | None = getattr(self._local, "consumer", None)
        if consumer is None:
            if not hasattr(self._local, "place"):
                self._local.place = next(self._places)
            consumer = self._local.consumer = QueueConsumer(self.topology, self.url, self.topology.work, self.prefetch,
                                                            priority=-self._local.place)
        return consumer

    def _drop_consumer(self) -> None:
        consumer = getattr(self._local, "consumer", None)
        if consumer is not None:
            consumer.close()
            self._local.consumer = None

    # -- relay: the outbox's rows to the broker ------------------------------------------------------

    def loops(self) -> list[tuple[str, Callable[[Event], None]]]:
        return [("relay", self._relay_loop), ("parking", self._parking_loop)]

    def relay(self, publisher: ConfirmedPublisher, look_first: bool = True) -> int:
        """Publish ready rows (due ones to work, later ones to their retry tier), marked queued in a transaction
        that commits once the broker has confirmed them all, holding their row locks (several hubs' relays skip
        each other's rows). `look_first`: see whether there are any before the transaction (not when this
        process has just committed some). Returns how many."""
        now = time.time()
        window = {"_now": now, "_from": now + self.topology.tiers[0] / 1000 if self.topology.tiers else math.inf}
        if look_first:
            with self.store.read() as conn:  # most passes find nothing: one statement, no transaction, no locks
                if not Store.read_together(conn, [(_ANY_TO_PUBLISH, window)])[0]:
                    return 0
        with self.store.begin(serial=False) as conn:
            by_queue: dict[str, list[int]] = {}
            not_yet = []
            [batch] = Store.read_together(conn, [(_QUEUE_NEXT, window)])  # with the transaction's BEGIN
            for row in sorted(batch, key=lambda r: (r.available_at, r.id)):
                queue = self.topology.route(row.available_at - time.time())
                if queue is None:
                    not_yet.append(row.id)
                else:
                    by_queue.setdefault(queue, []).append(row.id)
            published = []
            for queue, ids in by_queue.items():
                for start in range(0, len(ids), ITEMS_PER_MESSAGE):
                    publisher.publish(ids[start:start + ITEMS_PER_MESSAGE], queue)
                published += ids
            if not_yet:
                conn.execute(_NOT_YET, {"_ids": not_yet})
            if published:
                publisher.confirm()
        return len(published)

    def reap(self, queued_before: float | None = None) -> int:
        """Expired leases back to ready, and queued rows nobody claimed for requeue_after_seconds (or due before
        `queued_before`): the relay publishes both again."""
        before = time.time() - self.requeue_after if queued_before is None else queued_before
        with self.store.begin(serial=False) as conn:
            return reap(conn) + conn.execute(_REQUEUE, {"_before": before}).rowcount

    def _publish_handed(self, publisher: ConfirmedPublisher) -> int:
        """Publish the rows handed to the relay (stored queued) to work, confirmed; if the broker fails them, they
        stay handed, for the next call. Returns how many."""
        ids = [self._handed.popleft() for _ in range(len(self._handed))]
        try:
            for start in range(0, len(ids), ITEMS_PER_MESSAGE):
                publisher.publish(ids[start:start + ITEMS_PER_MESSAGE], self.topology.work)
            if ids:
                publisher.confirm()
        except BaseException:
            self._handed.extendleft(reversed(ids))  # a copy the broker did take is dropped at its second claim
            raise
        return len(ids)

    def _relay_loop(self, stop: Event) -> None:
        conn: Connection | None = None
        backoff = self.poll_seconds
        # Rows queued and due before this relay started may never have been published (the module's docstring): the
        # first reap makes them ready; later ones keep to requeue_after_seconds.
        unpublished_before: float | None = time.time()
        next_reap = next_look = 0.0
        look_first = False  # not at start, nor after a full batch
        while not stop.is_set():
            self._arrived.clear()  # before looking: what is handed from now on ends the wait below
            try:
                if conn is None:
                    conn = self.topology.connect(self.url)
                    publisher = ConfirmedPublisher(conn)
                    self._relaying = True
                self._publish_handed(publisher)
                if time.monotonic() >= next_reap:
                    self.reap(unpublished_before)
                    unpublished_before = None
                    next_reap = time.monotonic() + REAP_EVERY_SECONDS
                if time.monotonic() >= next_look:
                    look_first = self.relay(publisher, look_first) < RELAY_BATCH
                    next_look = time.monotonic() + self.poll_seconds * look_first
                backoff = self.poll_seconds
            except Exception as exc:
                # Broker or store away: the relay's own marks are undone unless confirmed, what was handed stays
                # handed, and what is enqueued meanwhile is stored ready.
                self._relaying = False
                log.warning("relay: %s: %s; trying again in %.1f s", type(exc).__name__, exc, backoff)
                _close(conn)
                conn = None
                stop.wait(backoff)
                backoff = min(backoff * 2 + 0.1, MAX_BACKOFF_SECONDS)
                continue
            self._arrived.wait(next_look - time.monotonic())
        self._relaying = False
        if conn is not None:  # what was handed last, if the broker takes it (else the next start publishes it)
            with contextlib.suppress(Exception):
                self._publish_handed(publisher)
        _close(conn)

    # -- parking: what the broker gave up on ---------------------------------------------------------

    def _parking_loop(self, stop: Event) -> None:
        backoff = self.poll_seconds
        while not stop.is_set():
            try:
                consumer = QueueConsumer(self.topology, self.url, self.topology.parked, 1)
                try:
                    while not stop.is_set():
                        for delivery in consumer.next(0.5):
                            for item_id in item_ids(delivery):
                                self.park_given_up(item_id, delivery.headers or {})
                            delivery.ack()
                        backoff = self.poll_seconds
                finally:
                    consumer.close()
            except Exception as exc:
                log.warning("parking consumer: %s: %s; trying again in %.1f s", type(exc).__name__, exc, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2 + 0.1, MAX_BACKOFF_SECONDS)

    def park_given_up(self, item_id: int, headers: dict[str, Any]) -> None:
        """Park a row the broker dead-lettered, if it is still waiting (a leased or finished one has moved on)."""
        reason = next((d.get("reason") for d in headers.get("x-death", ()) if d.get("queue") == self.topology.work),
                      "dead-lettered")
        err = HubError(RETRIES_EXHAUSTED, f"RabbitMQ gave up on work item {item_id} ({reason}): delivered "
                       f"{self.delivery_limit} times to workers that never acknowledged it")
        with self.store.begin() as conn:
            row = conn.execute(_PARK, {"_id": item_id, "last_error": str(err)}).first()
            if row is None:
                return
            if row.kind == "settle":  # recorded as the pipeline records what it parks
                self.store.add_event(conn, row.message, "settle-parked", str(err))
            else:
                self.store.set_state(conn, row.message, "parked", str(err), error_code=err.code,
                                     error_field=err.field, error_message=err.message)
        log.error("parked %s of %s: %s", row.kind, row.message, err)


class ConfirmedPublisher:
    """Publishes on a channel in confirm mode and waits for the broker's confirms once per batch, not once per
    message (kombu's confirm_publish waits for each: a round trip, and the relay's GIL time, per message). The
    broker numbers a channel's publishes 1, 2, … and acks them, several at once with `multiple`."""

    def __init__(self, conn: Connection) -> None:
        self.connection = conn.connection
        self.channel = self.connection.channel()  # py-amqp's own: kombu's types hide its confirm API
        self.channel.confirm_select()
        self.channel.events["basic_ack"].add(self._acked)
        self.channel.events["basic_nack"].add(self._nacked)
        self.published = 0  # the last delivery tag
        self.unconfirmed: dict[int, int] = {}  # delivery tag: how many work items its message carries
        self.refused = 0  # work items

    def publish(self, item_ids: Sequence[int], queue: str) -> None:
        message = amqp.Message(" ".join(map(str, item_ids)), delivery_mode=2, content_type="text/plain",
                               content_encoding="utf-8")
        self.channel.basic_publish(message, exchange="", routing_key=queue)
        self.published += 1
        self.unconfirmed[self.published] = len(item_ids)

    def confirm(self) -> None:
        """Returns once every message published so far is confirmed; raises if the broker refused any (the
        caller's transaction then marks nothing queued, and the rows are published again)."""
        deadline = time.monotonic() + CONFIRM_TIMEOUT_SECONDS
        while self.unconfirmed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(self.unconfirmed)} messages still unconfirmed by RabbitMQ after "
                                   f"{CONFIRM_TIMEOUT_SECONDS:.0f} s")
            self.connection.drain_events(timeout=remaining)
        if self.refused:
            refused, self.refused = self.refused, 0
            raise amqp.exceptions.MessageNacked(f"RabbitMQ refused {refused} of the work items published")

    def _settled(self, tag: int, multiple: bool) -> int:
        """How many work items the broker's answer settles."""
        settled = [t for t in self.unconfirmed if t <= tag] if multiple else [tag] if tag in self.unconfirmed else []
        return sum(self.unconfirmed.pop(t) for t in settled)

    def _acked(self, tag: int, multiple: bool) -> None:
        self._settled(tag, multiple)

    def _nacked(self, tag: int, multiple: bool) -> None:
        self.refused += self._settled(tag, multiple)


def item_ids(delivery: Any) -> list[int]:
    """The work items a broker message carries: their row ids."""
    return [int(each) for each in delivery.body.split()]


class _Carried:
    """A delivery and how many of the work items it carries are still open (claimed and not yet done)."""

    def __init__(self, delivery: Any) -> None:
        self.delivery = delivery
        self.open = 0


def _close(conn: Connection | None) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):  # a broken connection may fail to close: it is gone either way
            conn.release()
