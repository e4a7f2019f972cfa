"""GET /metrics: Prometheus text format that the Prometheus client's own parser reads, counters that move when
messages flow and never go down (not even when retention removes what they counted)."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, func, select

import hub.store as store_module
from hub.app import Hub
from hub.config import HubConfig
from hub.scheduler.retention import retire
from hub.store import events, message_counts, work
from tests.conftest import Exchange, platform_receipt, wait_for
from tests.signing.conftest import FIXTURES
from tests.test_hub_process import _pending_policy
from tests.test_operations import bring_back, take_down
from tests.test_signed_messages import signing_config
from tests.test_underwriting_flow import play

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(hub: Hub) -> str:
    assert hub.status_server is not None
    host, port = hub.status_server.address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return str(response.read().decode())


def samples(text: str) -> tuple[Samples, dict[str, str]]:
    """Every sample by (name, labels), and each family's type, as the Prometheus client's parser reads them."""
    found: Samples = {}
    types = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found, types


def count(store_hub: Hub, event: str) -> int:
    with store_hub.store.read() as conn:
        return int(conn.execute(select(func.count()).select_from(events).where(events.c.event == event)).scalar())


def idle(hub: Hub) -> bool:
    with hub.store.read() as conn:
        return not conn.execute(select(func.count()).select_from(work)).scalar()


@pytest.fixture
def signing_hub(tmp_path: Path, start_hub: Callable[[HubConfig], Hub]) -> Hub:
    config, _ = signing_config(
        tmp_path,
        f'[signers.hub-key]\nkind = "software"\nkey = "{FIXTURES / "pengcheng-rsa.key.pem"}"\n'
        f'certificate = "{FIXTURES / "pengcheng-rsa.cert.pem"}"\n\n'
        '[partners.insurer.signing]\nsigner = "hub-key"\n',
    )
    return start_hub(config)


def test_metrics_parse_and_their_counters_move_with_messages_and_survive_retention(
    signing_hub: Hub, exchange: Exchange, tmp_path: Path
) -> None:
    hub = signing_hub
    wait_for(lambda: hub.jobs.role == "leader", 10, "the hub to lead its jobs")
    before, types = samples(scrape(hub))
    assert types["hub_messages"] == types["hub_retries"] == types["hub_job_runs"] == "counter"
    assert types["hub_stored_messages"] == types["hub_queue_depth"] == "gauge"
    assert not [key for key in before if key[0] == "hub_messages_total"]
    assert before[("hub_retries_total", ())] == 0
    assert before[("hub_signer_ready", (("signer", "hub-key"),))] == 1
    assert before[("hub_signer_state", (("signer", "hub-key"), ("state", "ready")))] == 1
    assert before[("hub_signer_certificate_expiry_timestamp_seconds", (("signer", "hub-key"),))] == \
        datetime(2045, 1, 1, tzinfo=UTC).timestamp()
    assert before[("hub_scheduler_leader", ())] == 1

    # A pending policy whose delivery to the platform fails once, then goes through.
    take_down(exchange, "platform")
    policy_id, policy = _pending_policy(1)
    exchange.drop("insurer", "policy.xml", policy)
    wait_for(lambda: count(hub, "retry") >= 1, 10, "a retry")
    bring_back(exchange, "platform")
    exchange.wait_files("insurer", "archive", 1)
    # The platform's receipt ends the wait for it: only then is the step settled, and retention may take it.
    exchange.drop("platform", "receipt.json", platform_receipt(policy_id))
    exchange.wait_files("platform", "archive", 1)
    wait_for(lambda: idle(hub), 10, "everything settled")
    hub.jobs.run("reap_leases", "operator")

    flowed, _ = samples(scrape(hub))
    assert flowed[("hub_messages_total", (("direction", "in"), ("partner", "insurer")))] == 1
    assert flowed[("hub_messages_total", (("direction", "out"), ("partner", "platform")))] == 1
    assert flowed[("hub_messages_total", (("direction", "out"), ("partner", "insurer")))] == 1  # the receipt
    assert flowed[("hub_messages_total", (("direction", "in"), ("partner", "platform")))] == 1  # the platform's
    retries = flowed[("hub_retries_total", ())]
    assert retries == count(hub, "retry") >= 1
    state = (("direction", "in"), ("family", "underwriting"), ("state", "accepted"))
    assert flowed[("hub_stored_messages", state)] == 1
    assert flowed[("hub_job_runs_total", (("job", "reap_leases"),))] == 1
    assert flowed[("hub_job_failures_total", (("job", "reap_leases"),))] == 0

    # Retention removes all of it from the store: the gauges drop, the counters stay where they were.
    retire(hub.store, tmp_path / "archive", datetime.now(UTC) + timedelta(days=1000), timedelta(days=90))
    after, _ = samples(scrape(hub))
    assert not [key for key in after if key[0] == "hub_stored_messages"]
    for key, value in flowed.items():
        if key[0] in ("hub_messages_total", "hub_retries_total", "hub_job_runs_total"):
            assert after[key] == value, key

    # A parked delivery shows in the parked gauge and the queue depth.
    take_down(exchange, "platform")
    exchange.drop("insurer", "parked.xml", _pending_policy(2)[1])
    wait_for(lambda: samples(scrape(hub))[0].get(("hub_parked", (("step", "deliver"),))) == 1, 15, "parked")
    parked, _ = samples(scrape(hub))
    assert parked[("hub_queue_depth", (("state", "parked"), ("step", "deliver")))] == 1
    assert parked[("hub_retries_total", ())] == retries + 2
    assert parked[("hub_messages_total", (("direction", "in"), ("partner", "insurer")))] == 2


def test_status_and_metrics_count_messages_and_conversations_from_their_counts_not_their_rows(
    hub: Hub, exchange: Exchange,
) -> None:
    """/status and every /metrics scrape count the store's messages and conversations, which retention keeps for 90
    days: from the counts the database keeps beside them (message_counts, conversation_counts), never by reading
    the messages or conversations themselves (a grouped scan took 0.6 s on PostgreSQL for a million messages). The
    pipeline's statements never read the counts. The plans are SQLite's, for each statement as it ran."""
    ran: list[tuple[str, Any]] = []

    def note(_conn: object, _cursor: object, sql: str, params: Any, _context: object, many: bool) -> None:
        if threading.current_thread().name != "upkeep":  # whose summing reads the counts, once a second
            ran.append((sql, params[0] if many else params))

    event.listen(hub.store.engine, "before_cursor_execute", note)
    try:
        play(exchange, "insurer-pending-policy-new.xml", forwarded_to="platform", sent=1)
        [forwarded] = exchange.files("platform", "out", "PendingPolicy_*")
        forwarded_id = forwarded.stem.split("_", 1)[1]
        exchange.drop("platform", "platform-receipt.json", platform_receipt(forwarded_id))
        wait_for(lambda: {m["state"] for m in (hub.status_reader.message(forwarded_id) or {"messages": []})["messages"]
                          if m["direction"] == "out"} == {"acknowledged"}, what="the forwarded policy acknowledged")
        wait_for(lambda: idle(hub), what="the work done")
        flowing = len(ran)
        status = hub.status_reader.status()
        scraped = scrape(hub)
    finally:
        event.remove(hub.store.engine, "before_cursor_execute", note)

    def plan(sql: str, params: Any) -> str:
        with hub.store.read() as conn:
            return " | ".join(row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params))

    def plans(statements: list[tuple[str, Any]]) -> list[tuple[str, str]]:
        return [(sql, plan(sql, params)) for sql, params in statements
                if sql.lstrip().split(None, 1)[0].upper() in ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")]

    by_pipeline, by_status = plans(ran[:flowing]), plans(ran[flowing:])
    assert len(by_pipeline) > 20 and len(by_status) > 20
    assert not [(sql, found) for sql, found in by_pipeline if "_counts" in found]
    read_rows = [(sql, found) for sql, found in by_status if re.search(r"SCAN (messages|conversations)\b", found)]
    assert not read_rows, read_rows
    counted = Counter(re.findall(r"SCAN (\w+_counts)", " | ".join(found for _sql, found in by_status)))
    assert counted == {"message_counts": 2, "conversation_counts": 1}, "messages in each, conversations in /status"
    assert status["messages"]["by_state"] == {"in": {"accepted": 2}, "out": {"acknowledged": 1, "delivered": 1}}
    assert status["conversations"] == {"underwriting": {"awaiting-confirmation": 1}}
    route = next(r for r in status["routes"] if r["message"] == "PendingPolicy")
    assert (route["received"], route["forwarded"]) == (1, 1)
    found, _types = samples(scraped)
    assert found[("hub_stored_messages", (("direction", "out"), ("family", "underwriting"),
                                          ("state", "acknowledged")))] == 1
    assert found[("hub_messages_total", (("direction", "in"), ("partner", "platform")))] == 1


def test_a_running_hub_sums_its_counts_and_they_stay_right(
        hub: Hub, exchange: Exchange, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each hub's upkeep sums the counts (past _COMPACT_PAST_ROWS rows: here at once) into one row a key."""
    monkeypatch.setattr(store_module, "_COMPACT_PAST_ROWS", 0)
    play(exchange, "insurer-pending-policy-new.xml", forwarded_to="platform", sent=1)
    wait_for(lambda: idle(hub), what="the work done")

    def rows() -> int:
        with hub.store.read() as conn:
            return int(conn.execute(select(func.count()).select_from(message_counts)).scalar_one())
    with hub.store.read() as conn:
        keys = len(hub.store.message_tally(conn))
    wait_for(lambda: rows() == keys, what="the counts summed by the hub's upkeep")
    by_state = hub.status_reader.status()["messages"]["by_state"]
    assert by_state == {"in": {"accepted": 1}, "out": {"delivered": 2}}, "the policy forwarded, the insurer's receipt"


def test_metrics_is_read_only(hub: Hub) -> None:
    assert hub.status_server is not None
    host, port = hub.status_server.address
    request = urllib.request.Request(f"http://{host}:{port}/metrics", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 405


def test_promtool_accepts_the_metrics(signing_hub: Hub, exchange: Exchange) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    exchange.drop("insurer", "policy.xml", _pending_policy(1)[1])
    exchange.wait_files("insurer", "archive", 1)
    signing_hub.jobs.run("reap_leases", "operator")
    text = scrape(signing_hub)
    assert "hub_messages_total{" in text and 'hub_signer_ready{signer="hub-key"}' in text
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
