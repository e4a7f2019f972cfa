"""Three backends, one behaviour: the embedded default (SQLite and its work table), PostgreSQL and its work table
(FOR UPDATE SKIP LOCKED), and RabbitMQ + PostgreSQL (the table as outbox, quorum queues, TTL retry tiers). The
same stories run on each: retry timing, parking, replay and resend, duplicates, a worker killed -9 mid-batch."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from threading import Event, Thread
from typing import Any

import pytest
from amqp.exceptions import MessageNacked
from kombu import Connection
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from hub import pipeline
from hub.app import Hub
from hub.config import DEFAULT_CONFIG, HubConfig, load_config
from hub.operations import Operations
from hub.rabbitqueue import ConfirmedPublisher, QueueConsumer, RabbitWorkQueue, item_ids
from hub.store import Store, metadata, work
from hub.workqueue import WorkItem
from tests import test_bad_input, test_operations, test_underwriting_flow
from tests.conftest import BACKENDS, REPO, Exchange, backend_environ, hub_environ, wait_for
from tests.test_hub_process import HubProcess, _pending_policy, drop_pending_policies, worker_pids
from tests.test_idempotency import APPLICATION, PENDING, PENDING_ID, _xml
from tests.test_operations import bring_back, parked, take_down


@pytest.fixture(params=BACKENDS)
def backend_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    with backend_environ(request.param) as env:
        yield env


@pytest.fixture
def hub_env(tmp_path: Path, backend_env: dict[str, str]) -> dict[str, str]:
    """Every story below that uses the conftest's hub (and the operator's CLI) runs on each backend."""
    return hub_environ(tmp_path, **backend_env)


# Parking with every attempt's history, replay (idempotent, from any state), resend, a route's own tiers.
test_a_parked_delivery_is_listed_with_every_attempt_then_replayed_once_and_resent = (
    test_operations.test_a_parked_delivery_is_listed_with_every_attempt_then_replayed_once_and_resent
)
test_resend_refuses_what_was_not_delivered_and_unknown_ids = (
    test_operations.test_resend_refuses_what_was_not_delivered_and_unknown_ids
)
test_a_parked_settle_step_is_replayed_and_the_input_archived = (
    test_operations.test_a_parked_settle_step_is_replayed_and_the_input_archived
)
slow_route_hub = test_operations.slow_route_hub
operator = test_operations.operator
test_a_route_retry_policy_overrides_the_default = test_operations.test_a_route_retry_policy_overrides_the_default
test_a_step_its_workers_keep_dying_on_is_parked_as_a_poison_message_then_replayed = (
    test_operations.test_a_step_its_workers_keep_dying_on_is_parked_as_a_poison_message_then_replayed
)
# Duplicates: by message id, and by business key and version.
test_the_same_file_twice_is_refused_the_second_time = test_bad_input.test_the_same_file_twice_is_refused_the_second_time
test_a_repeated_policy_receipt_is_acknowledged_not_forwarded_twice = (
    test_underwriting_flow.test_a_repeated_policy_receipt_is_acknowledged_not_forwarded_twice
)


def test_retries_wait_their_delay_and_a_partner_back_in_time_gets_everything_unparked(
    hub_env: dict[str, str], exchange: Exchange, start_hub: Callable[[HubConfig], Hub], operator: object
) -> None:
    """Five deliveries fail while the platform is down; each next attempt comes no sooner than the delay its
    retry announced, and not much later; the platform returns before the last tier and gets all five, once."""
    config = load_config(DEFAULT_CONFIG, environ={**hub_env, "HUB_RETRY__DELAYS_SECONDS": "[0.3, 0.6, 1.5, 5]"})
    hub = start_hub(config)
    take_down(exchange, "platform")
    sent = drop_pending_policies(exchange, 5)
    down_since = time.monotonic()

    def retries(message_id: str) -> list[tuple[float, float]]:
        """(when, announced delay) of each failed delivery of the message forwarded as `message_id`."""
        shown = hub.status_reader.message(message_id) or {"messages": []}
        return [(datetime.fromisoformat(e["at"]).timestamp(), float(e["detail"].rsplit("next in ", 1)[1].split()[0]))
                for m in shown["messages"] if m["direction"] == "out" for e in m["history"] if e["event"] == "retry"]

    wait_for(lambda: all(len(retries(m)) >= 2 for m in sent), 30, "two failed attempts of each delivery")
    time.sleep(max(0.0, 2.2 - (time.monotonic() - down_since)))
    bring_back(exchange, "platform")
    delivered = exchange.wait_files("platform", "out", 5, "PendingPolicy_*", timeout=30)
    assert sorted(json.loads(p.read_bytes())["messageId"] for p in delivered) == sorted(sent)
    assert parked(operator) == []
    for message_id in sent:
        failed = retries(message_id)
        for (at, delay), (next_at, _) in itertools.pairwise(failed):
            waited = next_at - at
            assert waited >= delay - 0.05, f"{message_id}: retried after {waited:.2f} s, before its {delay} s"
            assert waited <= delay + 3.0, f"{message_id}: retried after {waited:.2f} s, announced {delay} s"
        assert len(exchange.files("platform", "out", f"PendingPolicy_{message_id}*")) == 1


def test_copies_of_one_message_taken_at_once_are_accepted_once(hub_config: HubConfig, exchange: Exchange) -> None:
    """Four workers decide on twelve copies of one pending policy at the same moment: one is accepted and
    forwarded, every other copy is refused as a duplicate (none parked)."""
    copies = 12
    config = hub_config.model_copy(update={"queue": hub_config.queue.model_copy(update={"workers": 4})})
    message_id, payload = _pending_policy(1)
    for n in range(copies):
        exchange.drop("insurer", f"insurer-pending-policy-copy-{n:02d}.xml", payload)
    hub = Hub(config)
    hub.start()
    try:
        exchange.wait_files("insurer", "out", copies, "Receipt_*", timeout=30)
        codes = sorted(r["errors"][0]["code"] if r["errors"] else "accepted" for r in exchange.receipts("insurer"))
        assert codes == ["DUPLICATE_MESSAGE"] * (copies - 1) + ["accepted"]
        assert {r["refMessageId"] for r in exchange.receipts("insurer")} == {message_id}
        assert len(exchange.files("platform", "out", "PendingPolicy_*")) == 1
        assert hub.status_reader.status()["queue"]["parked"] == 0
    finally:
        hub.stop()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_one_batch_decides_each_message_as_if_it_came_alone(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker decides its batch in one transaction, the lookups read ahead and the inserts held back; each
    message must still see what the batch's earlier messages did. One batch of five: a pending policy, its exact
    copy, the same version under a new id, another pending policy, and the platform's application in the first
    one's conversation."""
    caplog.set_level(logging.INFO, logger="hub.pipeline")
    exchange = Exchange(tmp_path / "exchange")
    again_id = "6F1C2A4E-3B7D-4E21-9A55-0C8E7D1B2A71"
    other_id, other = _pending_policy(7)
    with backend_environ(backend) as env:
        hub = Hub(load_config(DEFAULT_CONFIG, environ=hub_environ(tmp_path, **env)))
        try:
            exchange.drop_fixture(PENDING)
            exchange.drop("insurer", "insurer-pending-policy-copy.xml", PENDING.read_bytes())
            exchange.drop("insurer", "insurer-pending-policy-again.xml", _xml(PENDING, guid=again_id))
            exchange.drop("insurer", "insurer-pending-policy-other.xml", other)
            hub.pipeline.take_in(hub.channels["insurer"].poll())
            exchange.drop_fixture(APPLICATION)
            hub.pipeline.take_in(hub.channels["platform"].poll())
            batch = hub.queue.claim("test", hub.config.queue.batch)
            assert [item.kind for item in batch] == ["process"] * 5
            hub.pipeline.handle(batch)
            [accepted] = [r for r in exchange.receipts("insurer")
                          if r["refMessageId"] == PENDING_ID and r["returnStatus"] == 120]
            original_receipt = exchange.folder("insurer", "out") / f"Receipt_{accepted['messageId']}.xml"
            original_receipt.unlink()
            [resend] = hub.queue.claim("test", hub.config.queue.batch)  # the copy's sender gets the receipt again
            hub.pipeline.handle([resend])
            status = hub.status_reader.status()
        finally:
            hub.stop()

    answers = {(r["refMessageId"], r["returnStatus"], r["errors"][0]["code"] if r["errors"] else "")
               for r in exchange.receipts("insurer")}
    assert answers == {(PENDING_ID, 120, ""), (PENDING_ID, 100, "DUPLICATE_MESSAGE"), (again_id, 120, ""),
                       (other_id, 120, "")}
    assert original_receipt.exists()
    assert f"repeats message {PENDING_ID}" in exchange.receipt_for("insurer", again_id)["returnInfo"]
    forwarded = [json.loads(p.read_bytes())["messageId"] for p in exchange.files("platform", "out", "PendingPolicy_*")]
    assert sorted(forwarded) == sorted([PENDING_ID, other_id])
    assert len(exchange.files("insurer", "out", "InsuranceApplication_*")) == 1
    assert exchange.receipts("platform")[0]["returnStatus"] == 120
    assert status["conversations"]["underwriting"]["applied"] == 1
    assert sum(status["conversations"]["underwriting"].values()) == 2
    assert status["queue"]["parked"] == 0 and status["queue"]["ready"] == 0
    assert "deciding each on its own" not in caplog.text, "the batch was decided in one transaction"


def test_a_batch_that_fails_logs_only_the_decisions_that_were_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose transaction fails is decided again, one message at a time. What the failed transaction
    decided was never kept, so the log must not say it: each message is said to be accepted once."""
    caplog.set_level(logging.INFO, logger="hub.pipeline")
    exchange = Exchange(tmp_path / "exchange")
    other_id, other = _pending_policy(7)
    hub = Hub(load_config(DEFAULT_CONFIG, environ=hub_environ(tmp_path)))
    try:
        exchange.drop_fixture(PENDING)
        exchange.drop("insurer", "insurer-pending-policy-other.xml", other)
        hub.pipeline.take_in(hub.channels["insurer"].poll())
        accept, failed = hub.pipeline._accept, []

        def failing_once(conn: Any, row: Any, prepared: Any, said: Any) -> None:
            if prepared.message.message_id == other_id and not failed:  # after the first message's decision
                failed.append(True)
                raise RuntimeError("a defect in the second decision")
            accept(conn, row, prepared, said)

        monkeypatch.setattr(hub.pipeline, "_accept", failing_once)
        batch = hub.queue.claim("test", hub.config.queue.batch)
        assert len(batch) == 2
        hub.pipeline.handle(batch)
    finally:
        hub.stop()
    assert "deciding each on its own" in caplog.text
    said = sorted(r.getMessage().split(" from ")[0] for r in caplog.records if r.getMessage().startswith("accepted"))
    assert said == sorted([f"accepted PendingPolicy {PENDING_ID}", f"accepted PendingPolicy {other_id}"])
    assert len(exchange.files("platform", "out", "PendingPolicy_*")) == 2


def test_a_batch_takes_no_more_bytes_than_it_may_and_gives_the_rest_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch holds its inputs' bytes several times over while it is prepared: beyond BATCH_BYTES (a claim may
    carry 54 MB) the rest of the claim goes back to the queue, unstarted, for the next claim."""
    exchange = Exchange(tmp_path / "exchange")
    made = [_pending_policy(n) for n in range(1, 5)]
    monkeypatch.setattr(pipeline, "BATCH_BYTES", 2 * len(made[0][1]) + 100)  # room for two
    hub = Hub(load_config(DEFAULT_CONFIG, environ=hub_environ(tmp_path)))
    try:
        for n, (_id, xml) in enumerate(made):
            exchange.drop("insurer", f"insurer-pending-policy-{n}.xml", xml)
        hub.pipeline.take_in(hub.channels["insurer"].poll())
        batch = hub.queue.claim("test", hub.config.queue.batch)
        assert len(batch) == 4
        hub.pipeline.handle(batch)
        assert len(exchange.files("platform", "out", "PendingPolicy_*")) == 2
        rest = hub.queue.claim("test", hub.config.queue.batch)
        assert [item.attempts for item in rest] == [1, 1], "given back unstarted: no attempt spent"
        hub.pipeline.handle(rest)
    finally:
        hub.stop()
    forwarded = [json.loads(p.read_bytes())["messageId"] for p in exchange.files("platform", "out", "PendingPolicy_*")]
    assert sorted(forwarded) == sorted(message_id for message_id, _xml in made)


def test_a_batch_is_decided_through_the_indexes_never_a_whole_table_scan(tmp_path: Path) -> None:
    """The seen ids, versions and conversations grow for as long as the hub runs: a batch's statements must search
    their indexes. SQLite answered the look-ahead's `(a, b) IN (VALUES …)` by scanning the whole table (93 ms a
    query at 200,000 seen ids), so a hub would have slowed down month by month. Each statement a batch runs that
    searches a table (SELECT, UPDATE, DELETE; through SQLAlchemy or straight to the driver) is explained here
    (EXPLAIN QUERY PLAN), as SQLite ran it with its parameters."""
    exchange = Exchange(tmp_path / "exchange")
    hub = Hub(load_config(DEFAULT_CONFIG, environ=hub_environ(tmp_path)))
    statements: list[str] = []
    tracing = False

    def note(statement: str) -> None:
        if tracing and statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
            statements.append(statement)

    sqlalchemy_event.listen(hub.store.engine, "checkout", lambda driver, *_: driver.set_trace_callback(note))
    try:
        exchange.drop_fixture(PENDING)
        hub.pipeline.take_in(hub.channels["insurer"].poll())
        hub.pipeline.handle(hub.queue.claim("test", hub.config.queue.batch))  # the application's conversation
        exchange.drop("insurer", "insurer-pending-policy-copy.xml", PENDING.read_bytes())
        exchange.drop("insurer", "insurer-pending-policy-other.xml", _pending_policy(7)[1])
        hub.pipeline.take_in(hub.channels["insurer"].poll())
        exchange.drop_fixture(APPLICATION)
        hub.pipeline.take_in(hub.channels["platform"].poll())
        tracing = True
        hub.pipeline.handle(hub.queue.claim("test", hub.config.queue.batch))
        tracing = False
        with hub.store.read() as conn:
            scans = {
                f"{detail} in: {statement}"
                for statement in statements
                for *_ids, detail in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}")
                if detail.startswith("SCAN ") and detail.split()[1] in metadata.tables  # not a subquery's few rows
            }
    finally:
        hub.stop()
    assert len(statements) >= 10, "the batch's lookups were seen"
    assert not scans, "\n".join(sorted(scans))


@pytest.mark.slow
def test_kill_9_mid_batch_delivers_every_pending_policy_exactly_once(
    backend_env: dict[str, str], tmp_path: Path
) -> None:
    """Three hub processes share the store and the drop folders (inputs claimed by rename, work by lease or by
    delivery); one is killed -9 mid-batch and restarted. Counted at the receiving folders: each policy forwarded
    once, answered once."""
    count = 300
    exchange = Exchange(tmp_path / "exchange")
    hubs = [HubProcess(tmp_path, **backend_env) for _ in range(3)]
    try:
        for hub in hubs:
            hub.start()
        for n in range(count):
            exchange.drop("insurer", f"insurer-pending-policy-{n:04d}.xml", _pending_policy(n)[1])
        exchange.wait_files("platform", "out", 30, "PendingPolicy_*", timeout=60)
        hubs[0].kill9()
        assert len(exchange.files("platform", "out", "PendingPolicy_*")) < count, "the kill must land mid-way"
        hubs[0].start(timeout=60)
        exchange.wait_files("platform", "out", count, "PendingPolicy_*", timeout=120)
        exchange.wait_files("insurer", "out", count, "Receipt_*", timeout=60)
        wait_for(lambda: len(exchange.files("insurer", "archive")) == count, 60, "every input archived")
        wait_for(lambda: _queue_empty(hubs[0]), 30, "an empty work queue (no delivery left to repeat)")
    finally:
        for hub in hubs:
            hub.stop()

    sent = sorted(_pending_policy(n)[0] for n in range(count))
    forwarded = [json.loads(p.read_bytes())["messageId"] for p in exchange.files("platform", "out", "PendingPolicy_*")]
    assert sorted(forwarded) == sent, "each pending policy forwarded exactly once"
    receipts = exchange.receipts("insurer")
    assert sorted(r["refMessageId"] for r in receipts) == sent, "exactly one receipt per pending policy"
    assert all(r["returnStatus"] == 120 for r in receipts)
    assert not exchange.files("insurer", "rejected") and not exchange.files("insurer", "intake")
    assert not exchange.files("insurer", "in")


def _queue_empty(hub: HubProcess) -> bool:
    queue = hub.get("/status")[1]["queue"]
    return bool(queue["ready"] == 0 and queue["leased"] == 0)


def test_rabbitmq_parks_work_its_workers_never_acknowledge_and_replay_brings_it_back(tmp_path: Path) -> None:
    """A delivery that workers take and die on before acknowledging (three times; delivery_limit = 2) is dead-
    lettered by RabbitMQ to the parking queue, and parked in the store with the reason; replay queues it again."""
    with backend_environ("rabbitmq") as env:
        config = load_config(DEFAULT_CONFIG, environ=hub_environ(tmp_path, **env, HUB_QUEUE__DELIVERY_LIMIT="2"))
        store = Store(config.store.url)
        store.create_schema()
        queue = RabbitWorkQueue(store, config)
        with store.begin() as conn:
            hub_id = store.add_message(conn, direction="in", partner="insurer", state="received", size=1, raw=b"x")
            queue.enqueue(conn, "process", hub_id)
        operations = Operations(config, store)
        try:
            with _looping(queue):
                taken = 0
                while not operations.parked():
                    consumer = QueueConsumer(queue.topology, config.queue.url, queue.topology.work, 1)
                    if consumer.next(1.0):
                        taken += 1
                    consumer.close()  # the worker dies: no ack
                    assert taken <= 3, "RabbitMQ should have given up after the delivery limit"
                [item] = wait_for(operations.parked, what="the work parked in the store")
                assert taken == 3
                assert item["hub_id"] == hub_id and item["step"] == "process"
                assert "RabbitMQ gave up on work item" in item["error"] and "delivery_limit" in item["error"]
                assert item["error"].startswith("RETRIES_EXHAUSTED")
                with store.read() as conn:
                    assert store.get_message(conn, hub_id).state == "parked"

                assert [o.said for o in operations.replay(hub_id)] == ["replayed: parked process runs now"]
                assert operations.parked() == []
                wait_for(lambda: _work_states(store) == ["queued"], what="the replayed work published again")
        finally:
            store.close()


def test_rabbitmq_relay_marks_nothing_queued_that_the_broker_refused(tmp_path: Path) -> None:
    """The relay waits for the broker's confirms once per batch: when RabbitMQ refuses a batch's messages (here its
    work queue is full, by a policy), none of the batch is marked queued, and a later relay publishes it all."""
    with _rabbitmq_queue(tmp_path) as (queue, conn):
        store, policy = queue.store, f"{queue.topology.work.rsplit('.', 1)[0]}-full"
        try:
            ids = _received_inputs(queue, 3)
            subprocess.run(["rabbitmqctl", "set_policy", "--apply-to", "queues", policy,
                            f"^{queue.topology.work.replace('.', '[.]')}$",
                            '{"max-length": 1, "overflow": "reject-publish"}'], check=True, capture_output=True)
            wait_for(lambda: _refuses(queue, conn), what="the policy in force")

            with pytest.raises(MessageNacked, match="RabbitMQ refused 3 of the work items published"):
                queue.relay(ConfirmedPublisher(conn))
            assert _work_states(store) == ["ready"] * 3, "a refused batch is not marked queued"

            subprocess.run(["rabbitmqctl", "clear_policy", policy], check=True, capture_output=True)
            wait_for(lambda: queue.relay(ConfirmedPublisher(conn)) == 3, what="the batch relayed again")
            assert _work_states(store) == ["queued"] * 3
            claimed: list[WorkItem] = []  # the policy's probes (work item 0) come first: dropped as stale
            wait_for(lambda: claimed.extend(queue.claim("worker-1", 10)) or len(claimed) >= 3, what="the work claimed")
            assert sorted(item.message for item in claimed) == sorted(ids)
        finally:
            subprocess.run(["rabbitmqctl", "clear_policy", policy], capture_output=True)


def test_rabbitmq_work_the_hub_enqueues_is_stored_queued_and_published_when_it_commits(tmp_path: Path) -> None:
    """While the hub's relay is connected, the work its own process enqueues (an input's process step) is stored
    "queued" by the transaction that takes the input and published once that has committed: the relay writes
    nothing of its own (each row is as that transaction wrote it, the same xmin as its input's) before a worker
    gets it."""
    with _rabbitmq_queue(tmp_path) as (queue, _conn), _looping(queue):
        consumer = QueueConsumer(queue.topology, queue.url, queue.topology.work, 64)
        carried: list[int] = []

        def published(count: int) -> None:
            wait_for(lambda: carried.extend(i for d in consumer.next(0.5, 64) for i in item_ids(d)) or
                     len(carried) >= count, what=f"{count} work items published")

        _received_inputs(queue, 1)  # stored ready or queued, as the relay is connected by then or not
        published(1)
        ids = _received_inputs(queue, 3)
        published(4)
        consumer.close()
        with queue.store.read() as db:
            rows = db.execute(text("SELECT work.id, work.state, work.xmin = messages.xmin AS untouched FROM work "
                                   "JOIN messages ON messages.id = work.message WHERE messages.id = ANY(:ids)"),
                              {"ids": ids}).all()
        assert len(carried) == 4 and sorted(row.id for row in rows) == sorted(carried[1:])
        assert [(row.state, row.untouched) for row in rows] == [("queued", True)] * 3


def test_rabbitmq_work_stored_queued_but_never_published_is_published_when_a_relay_starts(tmp_path: Path) -> None:
    """A hub that dies between committing its work (stored queued for its relay) and publishing it leaves rows that
    no message carries: the next relay to start publishes them again at once, not after requeue_after_seconds."""
    with backend_environ("rabbitmq") as env:
        config = load_config(DEFAULT_CONFIG, environ=hub_environ(tmp_path, **env))
        store = Store(config.store.url)
        store.create_schema()
        died = RabbitWorkQueue(store, config)
        died._relaying = True  # its relay was connected, and the hub died before it published what it was handed
        try:
            ids = _received_inputs(died, 2)
            assert _work_states(store) == ["queued"] * 2
            restarted = RabbitWorkQueue(store, config)
            claimed: list[WorkItem] = []
            with _looping(restarted):
                wait_for(lambda: claimed.extend(restarted.claim("worker-1", 10)) or len(claimed) >= 2, timeout=20,
                         what="the work published by the restarted hub's relay")
            assert sorted(item.message for item in claimed) == sorted(ids)
            assert config.queue.requeue_after_seconds >= 60, "a sweep of queued rows would not explain it"
        finally:
            store.close()


@contextmanager
def _looping(queue: RabbitWorkQueue) -> Iterator[None]:
    """The queue's background loops (relay, parking) running, as in a hub process."""
    stop = Event()
    loops = [Thread(target=loop, args=(stop,), daemon=True) for _name, loop in queue.loops()]
    for thread in loops:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in loops:
            thread.join(timeout=10)


@contextmanager
def _rabbitmq_queue(tmp_path: Path) -> Iterator[tuple[RabbitWorkQueue, Connection]]:
    """A RabbitMQ work queue on a fresh store, and the test's own connection to the broker."""
    with backend_environ("rabbitmq") as env:
        config = load_config(DEFAULT_CONFIG, environ=hub_environ(tmp_path, **env))
        store = Store(config.store.url)
        store.create_schema()
        queue = RabbitWorkQueue(store, config)
        conn = queue.topology.connect(config.queue.url)
        try:
            yield queue, conn
        finally:
            conn.release()
            store.close()


def _received_inputs(queue: RabbitWorkQueue, count: int) -> list[str]:
    """`count` inputs as received, each with its process step enqueued (ready for the relay)."""
    with queue.store.begin() as db:
        ids = [queue.store.add_message(db, direction="in", partner="insurer", state="received", size=1, raw=b"x")
               for _ in range(count)]
        queue.enqueue(db, "process", *ids)
    return ids


def _refuses(queue: RabbitWorkQueue, conn: Connection) -> bool:
    """Whether the work queue refuses a publish now (it then holds one message: the policy's maximum)."""
    publisher = ConfirmedPublisher(conn)
    publisher.publish([0], queue.topology.work)
    try:
        publisher.confirm()
    except MessageNacked:
        return True
    return False


def test_rabbitmq_carries_work_items_sixteen_to_a_message_acked_with_the_last_one_done(tmp_path: Path) -> None:
    """The relay publishes 40 ready rows as 3 broker messages (16, 16, 8 work items); a claim takes whole messages
    up to its limit; a message is acked only when every item it carries is done, so a worker that dies with one of
    them open has the broker deliver the whole message again."""
    with _rabbitmq_queue(tmp_path) as (queue, conn):
        ids = _received_inputs(queue, 40)
        assert queue.relay(ConfirmedPublisher(conn)) == 40
        assert _messages_ready(conn, queue.topology.work) == 3

        claims = [queue.claim("worker-1", 20) for _ in range(3)]
        assert [len(claim) for claim in claims] == [16, 16, 8], "whole messages, up to the claim's limit"
        assert sorted(item.message for claim in claims for item in claim) == sorted(ids)
        for item in claims[0] + claims[1][:-1] + claims[2]:
            queue.done(item)
        queue._drop_consumer()  # the worker dies with one item open
        assert _messages_ready(conn, queue.topology.work) == 1, "only the message with the open item comes back"


def test_rabbitmq_gives_work_to_the_first_worker_and_the_next_only_what_overflows_its_prefetch(
        tmp_path: Path) -> None:
    """Two workers' consumers, the first of its hub and the second (two processes' queues, as a hub and its worker
    processes have), each with room for 2 messages: work goes to the first while it has room, and only what it has
    no room for to the second. Taken in turn, as the broker does by default, the first two would have been one
    each."""
    with backend_environ("rabbitmq") as env:
        config = load_config(DEFAULT_CONFIG, environ=hub_environ(tmp_path, **env, HUB_QUEUE__PREFETCH="32"))
        store = Store(config.store.url)
        store.create_schema()
        first, second = RabbitWorkQueue(store, config), RabbitWorkQueue(store, config, first_worker=1)
        conn = first.topology.connect(config.queue.url)
        try:
            _first_then_overflow(first, second, conn)
        finally:
            for queue in (first, second):
                queue._drop_consumer()
            conn.release()
            store.close()


def _first_then_overflow(first: RabbitWorkQueue, second: RabbitWorkQueue, conn: Connection) -> None:
    assert first.claim("worker-1", 64) == second.claim("worker-2", 64) == []  # both consuming
    publisher = ConfirmedPublisher(conn)

    def publish(ids: list[str]) -> None:
        with first.store.read() as db:
            rows = db.execute(select(work.c.id).where(work.c.message.in_(ids)).order_by(work.c.id)).scalars()
        for row in rows:  # one message each
            publisher.publish([row], first.topology.work)
        publisher.confirm()

    def claimed(queue: RabbitWorkQueue, owner: str, count: int) -> list[WorkItem]:
        got: list[WorkItem] = []
        wait_for(lambda: got.extend(queue.claim(owner, 64)) or len(got) >= count, 10, f"{count} claimed")
        return got

    early = _received_inputs(first, 2)
    publish(early)
    held = claimed(first, "worker-1", 2)
    assert sorted(item.message for item in held) == sorted(early)
    assert second.claim("worker-2", 64) == [], "the second worker got work the first had room for"
    late = _received_inputs(first, 1)
    publish(late)  # the first holds 2 messages unacked: no room
    assert [item.message for item in claimed(second, "worker-2", 1)] == late
    for item in held:
        first.done(item)
    again = _received_inputs(first, 1)
    publish(again)
    assert [item.message for item in claimed(first, "worker-1", 1)] == again


def test_rabbitmq_a_trickle_of_inputs_is_worked_by_the_first_worker_process_alone(tmp_path: Path) -> None:
    """A hub's worker processes rank their consumers by their place in it: inputs that come one at a time all go to
    the first worker process (its room is never full). Handed out in turn, they would alternate between the two."""
    count = 4
    exchange = Exchange(tmp_path / "exchange")
    with backend_environ("rabbitmq") as env:
        process = HubProcess(tmp_path, **env, HUB_QUEUE__PROCESSES="2", HUB_QUEUE__WORKERS="1")
        process.start()
        try:
            # A worker consumes from its first claim on: both are, before the first input comes.
            with Connection(env["HUB_QUEUE__URL"]) as broker:
                wait_for(lambda: broker.default_channel.queue_declare(
                    f"{env['HUB_QUEUE__NAME_PREFIX']}.work", passive=True).consumer_count == 2, 20,
                    "both worker processes consuming")
            for n in range(count):
                exchange.drop("insurer", f"insurer-pending-policy-{n:04d}.xml", _pending_policy(n)[1])
                exchange.wait_files("insurer", "out", n + 1, "Receipt_*", timeout=30)
        finally:
            process.stop()
    log = process.log.read_text()
    first = re.search(r"worker process 1 started \(pid (\d+)\)", log)
    assert first is not None and len(worker_pids(log)) == 2
    deciders = re.findall(r"\[worker process (\d+)\] hub.pipeline: accepted PendingPolicy", log)
    assert deciders == [first.group(1)] * count


def _messages_ready(conn: Connection, name: str) -> int:
    """Messages waiting in a queue once the count holds for half a second (the broker puts back what a closed
    consumer held a moment after it closes)."""
    found: list[int] = []
    wait_for(lambda: found.append(conn.default_channel.queue_declare(name, passive=True).message_count) or time.sleep(
        0.1) or (len(found) > 5 and len(set(found[-6:])) == 1), 10, f"the messages in {name} to settle")
    return found[-1]


def test_rabbitmq_claim_that_fails_in_the_store_leaves_its_deliveries_for_the_next_claim(tmp_path: Path) -> None:
    """A claim whose UPDATE fails in the store keeps its deliveries for the next claim, but not one it has already
    acked (a copy of a row published twice): acking that again would make the broker close the channel, and every
    delivery on it would come back. The store refuses the claim for real: a constraint, for a while, that no work
    row may be leased."""
    with _rabbitmq_queue(tmp_path) as (queue, conn):
        store = queue.store
        ids = _received_inputs(queue, 2)
        assert queue.relay(ConfirmedPublisher(conn)) == 2
        with store.read() as db:
            [first, _second] = db.execute(select(work.c.id).order_by(work.c.id)).scalars()
        publisher = ConfirmedPublisher(conn)
        publisher.publish([first], queue.topology.work)  # the relay's crash after publishing, before marking
        publisher.confirm()
        assert _messages_ready(conn, queue.topology.work) == 2

        with store.begin(serial=False) as db:
            db.execute(text("ALTER TABLE work ADD CONSTRAINT no_lease CHECK (state <> 'leased') NOT VALID"))
        with pytest.raises(IntegrityError, match="no_lease"):
            queue.claim("worker-1", 20)
        with store.begin(serial=False) as db:
            db.execute(text("ALTER TABLE work DROP CONSTRAINT no_lease"))
        claimed = queue.claim("worker-1", 20)
        assert sorted(item.message for item in claimed) == sorted(ids)
        for item in claimed:
            queue.done(item)
        queue._drop_consumer()
        assert _messages_ready(conn, queue.topology.work) == 0, "every delivery acked once"


@pytest.mark.parametrize("backend", BACKENDS)
def test_work_given_back_unstarted_runs_again_without_an_attempt_spent(backend: str, tmp_path: Path) -> None:
    """A worker whose batch outlasts a third of its lease (a slow card) gives the unstarted rest back: the next
    claim takes them with the attempt count they had, and the worker finishing its batch (done) still works."""
    with backend_environ(backend) as env:
        hub = Hub(load_config(DEFAULT_CONFIG, environ=hub_environ(tmp_path, **env)))
        stop = Event()
        loops = [Thread(target=loop, args=(stop,), daemon=True) for _name, loop in hub.queue.loops()]
        for thread in loops:
            thread.start()
        try:
            with hub.store.begin() as conn:
                ids = [hub.store.add_message(conn, direction="in", partner="insurer", state="received", size=1,
                                             raw=b"x") for _ in range(3)]
                hub.queue.enqueue(conn, "process", *ids)
            hub.queue.notify()
            claimed: list[WorkItem] = []
            wait_for(lambda: claimed.extend(hub.queue.claim("worker-1", 3)) or len(claimed) == 3, 10, "3 claimed")
            assert [item.attempts for item in claimed] == [1, 1, 1]
            hub.queue.release(claimed[1:])
            for item in claimed:
                hub.queue.done(item)
            again: list[WorkItem] = []
            wait_for(lambda: again.extend(hub.queue.claim("worker-2", 3)) or len(again) == 2, 10, "2 claimed again")
            assert sorted(item.message for item in again) == sorted(item.message for item in claimed[1:])
            assert [item.attempts for item in again] == [1, 1], "giving back spends no attempt"
        finally:
            stop.set()
            for thread in loops:
                thread.join(timeout=10)
            hub.stop()


def _work_states(store: Store) -> list[str]:
    with store.read() as conn:
        return list(conn.execute(select(work.c.state)).scalars())


def test_rabbitmq_without_a_postgresql_store_stops_start_up_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, **hub_environ(tmp_path, HUB_QUEUE__KIND="rabbitmq")}
    done = subprocess.run([sys.executable, str(REPO / "run_hub.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert 'queue.kind = "rabbitmq" needs a PostgreSQL store' in line, line


@pytest.mark.parametrize("backend", BACKENDS)
def test_hub_processes_started_together_on_a_new_database_all_come_up(backend: str, tmp_path: Path) -> None:
    """Each process finds the tables missing and creates them: before the schema lock, all but one died of a
    unique violation in PostgreSQL's catalogue, or of "database is locked" on one SQLite file."""
    with backend_environ(backend) as env:
        env.setdefault("HUB_STORE__URL", f"sqlite:///{tmp_path / 'hub.db'}")  # SQLite: one file for all of them
        processes = [HubProcess(tmp_path / f"hub-{n}", **env) for n in range(5)]
        for process in processes:
            process.root.mkdir()
            process.launch()
        try:
            for process in processes:
                process.wait_up(timeout=30)
        finally:
            for process in processes:
                process.stop()
        for process in processes:
            assert "Traceback" not in process.log.read_text(), process.log.read_text()


@pytest.mark.slow
def test_two_hub_processes_on_one_sqlite_file_deliver_each_message_once(tmp_path: Path) -> None:
    """The embedded default scales to a second process on the same host: both take from the same folders and
    queue for SQLite's one writer (an flock beside the file); each message is forwarded and answered once."""
    count = 60
    exchange = Exchange(tmp_path / "exchange")
    # Batches of 8: the 60 policies are several claims, so both processes can take some.
    processes = [HubProcess(tmp_path, HUB_QUEUE__WORKERS="1", HUB_QUEUE__BATCH="8") for _ in range(2)]
    for n, process in enumerate(processes):
        process.log = tmp_path / f"hub-{n}.log"
        process.launch()
    try:
        for process in processes:  # each hub's workers run in its two worker processes: all of them up first
            process.wait_up()
        for n in range(count):
            exchange.drop("insurer", f"insurer-pending-policy-{n:04d}.xml", _pending_policy(n)[1])
        exchange.wait_files("insurer", "out", count, "Receipt_*", timeout=60)
        wait_for(lambda: len(exchange.files("insurer", "archive")) == count, 60, "every input archived")
    finally:
        for process in processes:
            process.stop()
    logs = [process.log.read_text() for process in processes]
    assert all("accepted PendingPolicy" in log for log in logs), "both processes took a share"
    forwarded = [json.loads(p.read_bytes())["messageId"] for p in exchange.files("platform", "out", "PendingPolicy_*")]
    assert sorted(forwarded) == sorted(_pending_policy(n)[0] for n in range(count))
    assert sorted(r["refMessageId"] for r in exchange.receipts("insurer")) == sorted(forwarded)
    assert all(r["returnStatus"] == 120 for r in exchange.receipts("insurer")), "none refused as a duplicate"
    assert not any("Traceback" in log for log in logs)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "rabbitmq"])
def test_run_workers_n_runs_n_workers_that_deliver_each_message_once(backend: str, tmp_path: Path) -> None:
    count = 60
    exchange = Exchange(tmp_path / "exchange")
    with backend_environ(backend) as env:
        process = HubProcess(tmp_path, **env)
        process.args = ["run", "--workers", "5"]
        process.start()
        try:
            for n in range(count):
                exchange.drop("insurer", f"insurer-pending-policy-{n:04d}.xml", _pending_policy(n)[1])
            exchange.wait_files("insurer", "out", count, "Receipt_*", timeout=60)
            wait_for(lambda: len(exchange.files("insurer", "archive")) == count, 60, "every input archived")
        finally:
            process.stop()
    assert "5 workers" in process.log.read_text()
    forwarded = [json.loads(p.read_bytes())["messageId"] for p in exchange.files("platform", "out", "PendingPolicy_*")]
    assert sorted(forwarded) == sorted(_pending_policy(n)[0] for n in range(count))
    assert sorted(r["refMessageId"] for r in exchange.receipts("insurer")) == sorted(forwarded)
    done = subprocess.run([sys.executable, str(REPO / "run_hub.py"), "run", "--workers", "0"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--workers: '0' is not a whole number from 1 to 64" in done.stderr
