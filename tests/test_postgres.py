"""The same hub on PostgreSQL: the end-to-end stories of the SQLite suite replayed on a fresh PostgreSQL database,
and several hub processes sharing one store and the same drop folders, one of them killed -9 mid-batch."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.app import Hub
from hub.config import DEFAULT_CONFIG, HubConfig, load_config
from tests import test_bad_input, test_families, test_underwriting_flow
from tests.conftest import Exchange, fresh_postgres_database, hub_environ, wait_for
from tests.test_hub_process import HubProcess, _pending_policy


@pytest.fixture
def hub_config(tmp_path: Path) -> Iterator[HubConfig]:
    """The conftest's hub, on PostgreSQL: the stories below run there as they run on SQLite in their own modules."""
    with fresh_postgres_database() as url:
        yield load_config(DEFAULT_CONFIG, environ=hub_environ(tmp_path, HUB_STORE__URL=url))


test_issued_ending_flows_both_ways = test_underwriting_flow.test_issued_ending_flows_both_ways
test_returned_ending_flows_both_ways = test_underwriting_flow.test_returned_ending_flows_both_ways
test_a_repeated_policy_receipt_is_acknowledged_not_forwarded_twice = (
    test_underwriting_flow.test_a_repeated_policy_receipt_is_acknowledged_not_forwarded_twice
)
test_story_flows_through_the_hub = test_families.test_story_flows_through_the_hub
test_invalid_fixture_is_rejected_with_its_code_and_field = (
    test_bad_input.test_invalid_fixture_is_rejected_with_its_code_and_field
)
test_the_same_file_twice_is_refused_the_second_time = test_bad_input.test_the_same_file_twice_is_refused_the_second_time


@pytest.mark.slow
def test_kill_9_mid_batch_delivers_every_pending_policy_exactly_once(store_url: str, tmp_path: Path) -> None:
    """Three hub processes share the store and the drop folders (inputs claimed by rename, work by lease); one is
    killed -9 mid-batch and restarted. Counted at the receiving folders: each policy forwarded once, answered once."""
    count = 300
    exchange = Exchange(tmp_path / "exchange")
    hubs = [HubProcess(tmp_path, HUB_STORE__URL=store_url) for _ in range(3)]
    try:
        for hub in hubs:
            hub.start()
        for n in range(count):
            exchange.drop("insurer", f"insurer-pending-policy-{n:04d}.xml", _pending_policy(n)[1])
        exchange.wait_files("platform", "out", 30, "PendingPolicy_*", timeout=60)
        hubs[0].kill9()
        assert len(exchange.files("platform", "out", "PendingPolicy_*")) < count, "the kill must land mid-way"
        hubs[0].start()
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


def test_copies_of_one_message_taken_at_once_are_accepted_once(store_url: str, tmp_path: Path) -> None:
    """Four workers decide on twelve copies of one pending policy at the same moment: one is accepted and
    forwarded, every other copy is refused as a duplicate (none parked), on either backend."""
    copies = 12
    config = load_config(DEFAULT_CONFIG, environ=hub_environ(tmp_path, HUB_STORE__URL=store_url,
                                                             HUB_QUEUE__WORKERS="4"))
    exchange = Exchange(tmp_path / "exchange")
    message_id, payload = _pending_policy(1)
    for n in range(copies):
        exchange.drop("insurer", f"insurer-pending-policy-copy-{n:02d}.xml", payload)
    hub = Hub(config)
    hub.start()
    try:
        exchange.wait_files("insurer", "out", copies, "Receipt_*")
        codes = sorted(r["errors"][0]["code"] if r["errors"] else "accepted" for r in exchange.receipts("insurer"))
        assert codes == ["DUPLICATE_MESSAGE"] * (copies - 1) + ["accepted"]
        assert {r["refMessageId"] for r in exchange.receipts("insurer")} == {message_id}
        assert len(exchange.files("platform", "out", "PendingPolicy_*")) == 1
        assert hub.status_reader.status()["queue"]["parked"] == 0
    finally:
        hub.stop()
