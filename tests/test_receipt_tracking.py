"""Receipt tracking (issue 5): what the hub delivers expects its receipt within the partner's timeout; without
one it is delivered again (same bytes, same message id), then parked as RECEIPT_TIMEOUT, visible in status and
`parked`, and `replay` sends it again. A receipt ends the wait. Timeouts are scaled down to fractions of a
second here (the default is 600 s)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from hub.app import Hub
from hub.config import DEFAULT_CONFIG, load_config
from tests.conftest import UNDERWRITING, Exchange, hub_environ, platform_receipt, wait_for
from tests.test_operations import PENDING, PENDING_ID, operator, parked  # noqa: F401 (a fixture)

FORWARDED = f"PendingPolicy_{PENDING_ID}.json"


@pytest.fixture
def chasing_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The platform must answer within 0.4 s; two resends, then the message parks."""
    environ = hub_environ(tmp_path, HUB_PARTNERS__PLATFORM__RECEIPT_TIMEOUT_SECONDS="0.4",
                          HUB_PARTNERS__PLATFORM__RECEIPT_RESENDS="2")
    for key, value in environ.items():  # the operator commands (tests.test_operations.operator) see them too
        monkeypatch.setenv(key, value)
    running = Hub(load_config(DEFAULT_CONFIG, environ=environ))
    running.start()
    yield running
    running.stop()


def _taken(exchange: Exchange) -> bytes:
    """The platform takes the forwarded message from its out/ folder, as a partner does."""
    path = exchange.folder("platform", "out") / FORWARDED
    payload = wait_for(lambda: path.exists() and path.read_bytes(), what=f"{FORWARDED} delivered")
    path.unlink()
    return payload


def test_without_a_receipt_the_message_is_resent_then_parked_and_replay_sends_it_again(
    chasing_hub: Hub, exchange: Exchange, operator: Any  # noqa: F811 (the fixture imported above)
) -> None:
    exchange.drop_fixture(PENDING)
    first = _taken(exchange)
    assert json.loads(first)["messageId"] == PENDING_ID
    assert _taken(exchange) == first and _taken(exchange) == first  # two resends: the same bytes, the same id

    [item] = wait_for(lambda: parked(operator), what="the message parked for want of a receipt")
    assert (item["type"], item["partner"], item["step"]) == ("PendingPolicy", "platform", "resend")
    assert item["error"].startswith("RECEIPT_TIMEOUT: no receipt from platform for PendingPolicy")
    status = chasing_hub.status_reader.status()
    assert status["receipts"]["platform"] | {} == {"awaited": 0, "overdue": 0, "resent": 0, "timed_out": 1,
                                                   "timeout_seconds": 0.4, "resends": 2}
    assert [p["error"].split(":")[0] for p in status["parked"]] == ["RECEIPT_TIMEOUT"]
    history = chasing_hub.status_reader.message(item["hub_id"])["messages"][0]["history"]  # type: ignore[index]
    resent = [h["detail"] for h in history if h["event"] == "resent"]
    assert [d.split(":")[0] for d in resent] == ["no receipt within 0.4 s (resend 1 of 2)",
                                                "no receipt within 0.4 s (resend 2 of 2)"]
    time.sleep(1.0)
    assert not (exchange.folder("platform", "out") / FORWARDED).exists(), "parked: no more resends"

    code, text = operator("replay", "--all-parked")
    assert code == 0 and "replayed: parked resend runs now" in text
    assert _taken(exchange) == first
    exchange.drop("platform", "platform-receipt.json", platform_receipt(PENDING_ID))
    wait_for(lambda: chasing_hub.status_reader.message(item["hub_id"])["messages"][0]["state"] == "acknowledged",
             what="the receipt noted")
    time.sleep(1.0)
    assert not (exchange.folder("platform", "out") / FORWARDED).exists(), "answered: no more resends"
    assert chasing_hub.status_reader.status()["receipts"]["platform"]["awaited"] == 0
    assert parked(operator) == []


def test_a_receipt_in_time_means_no_resend(chasing_hub: Hub, exchange: Exchange) -> None:
    exchange.drop_fixture(PENDING)
    _taken(exchange)
    exchange.drop("platform", "platform-receipt.json", platform_receipt(PENDING_ID))
    exchange.wait_files("platform", "archive", 1)
    time.sleep(1.5)
    assert not (exchange.folder("platform", "out") / FORWARDED).exists()
    assert chasing_hub.status_reader.status()["receipts"]["platform"]["awaited"] == 0


def test_the_sweep_is_idempotent(hub: Hub, exchange: Exchange) -> None:
    """Two sweeps at the same moment (two hub processes, or a scheduler job beside the hub's own) schedule one
    resend of each overdue message."""
    exchange.drop_fixture(PENDING)
    exchange.wait_files("platform", "out", 1, "PendingPolicy_*")
    wait_for(lambda: hub.status_reader.status()["receipts"]["platform"]["awaited"] == 1, what="the wait armed")
    later = time.time() + hub.config.partners["platform"].receipt_timeout_seconds + 1
    assert hub.pipeline.sweep_overdue_receipts(later) == 1
    assert hub.pipeline.sweep_overdue_receipts(later) == 0


@pytest.fixture
def insurer_chasing_hub(tmp_path: Path, store_url: str) -> Any:
    """The insurer must answer within 2 s; on each store backend."""
    environ = hub_environ(tmp_path, HUB_PARTNERS__INSURER__RECEIPT_TIMEOUT_SECONDS="2", HUB_STORE__URL=store_url)
    running = Hub(load_config(DEFAULT_CONFIG, environ=environ))
    running.start()
    yield running
    running.stop()


def test_a_business_answer_in_time_counts_as_the_receipt(insurer_chasing_hub: Hub, exchange: Exchange) -> None:
    """DOMAIN.md §9: business answers are receipts too. The insurer issuing the policy has evidently received
    the application it answers: the application is not sent again."""
    exchange.drop_fixture(PENDING)
    exchange.wait_files("platform", "out", 1, "PendingPolicy_*")
    exchange.drop_fixture(UNDERWRITING / "valid" / "platform-insurance-application-new.json")
    [application] = exchange.wait_files("insurer", "out", 1, "InsuranceApplication_*")
    application.unlink()  # the insurer takes it ...
    exchange.drop_fixture(UNDERWRITING / "valid" / "insurer-policy-issued-new.xml")  # ... and answers
    exchange.wait_files("platform", "out", 1, "PolicyIssued_*")
    time.sleep(3.5)
    assert not exchange.files("insurer", "out", "InsuranceApplication_*"), "answered: not sent again"
    assert insurer_chasing_hub.status_reader.status()["receipts"]["insurer"]["awaited"] == 0
