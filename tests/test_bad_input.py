"""Bad input gets a rejection receipt with a stable code and the field's path, lands in rejected/ beside its
error file, and the hub keeps running and loses nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub.app import Hub
from tests.conftest import UNDERWRITING, Exchange, wait_for

INVALID = UNDERWRITING / "invalid"
VALID = UNDERWRITING / "valid"
EXPECTED = json.loads((INVALID / "expected.json").read_text())["expected"]


def accept_pending_policies(exchange: Exchange) -> None:
    for name in ("insurer-pending-policy-new.xml", "insurer-pending-policy-renewal.xml"):
        exchange.drop_fixture(VALID / name)
    exchange.wait_files("insurer", "archive", 2)


def assert_rejected(exchange: Exchange, partner: str, name: str, code: str, field: str) -> dict:
    receipt = exchange.receipt_for(partner, name)
    assert receipt["returnStatus"] == 100, receipt
    assert receipt["errors"][0]["code"] == code, receipt
    assert receipt["errors"][0]["field"] == field, receipt
    assert receipt["errors"][0]["message"], "the receipt must say what is wrong"
    kept = exchange.wait_files(partner, "rejected", 1, name)
    report = json.loads(Path(f"{kept[0]}.error.json").read_text())
    assert (report["code"], report["field"]) == (code, field)
    return receipt


def test_every_invalid_fixture_states_its_expected_error() -> None:
    files = {p.name for p in INVALID.iterdir() if p.name != "expected.json"}
    assert files == set(EXPECTED), "each invalid fixture needs its expected code in expected.json, and no more"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_invalid_fixture_is_rejected_with_its_code_and_field(hub: Hub, exchange: Exchange, name: str) -> None:
    accept_pending_policies(exchange)
    exchange.drop_fixture(INVALID / name)
    partner = name.split("-", 1)[0]
    receipt = assert_rejected(exchange, partner, name, EXPECTED[name]["code"], EXPECTED[name]["field"])
    if partner == "insurer" and EXPECTED[name]["code"] in ("MALFORMED_XML", "MESSAGE_EMPTY"):
        out = exchange.files("insurer", "out", f"Receipt_{receipt['messageId']}.xml")[0].read_text()
        assert "<ECI900Message" in out, "what cannot be read is answered with the format-error receipt"
    assert not exchange.files("platform", "out", "InsuranceApplication_*")
    assert not exchange.files("insurer", "out", "PolicyReceipt_*")


def test_the_same_file_twice_is_refused_the_second_time(hub: Hub, exchange: Exchange) -> None:
    fixture = VALID / "insurer-pending-policy-new.xml"
    exchange.drop_fixture(fixture)
    exchange.wait_files("insurer", "archive", 1)
    exchange.drop_fixture(fixture)
    exchange.wait_files("insurer", "rejected", 1, fixture.name)
    receipts = exchange.receipts("insurer")
    assert [r["returnStatus"] for r in receipts] == [120, 100]
    assert receipts[1]["errors"][0]["code"] == "DUPLICATE_MESSAGE"
    assert receipts[1]["errors"][0]["field"] == "/ECI101Message/Head/guid"
    assert len(exchange.files("platform", "out", "PendingPolicy_*")) == 1


def test_a_50_mb_file_is_refused_and_kept_without_reading_it_into_the_store(hub: Hub, exchange: Exchange) -> None:
    name = "insurer-pending-policy-huge.xml"
    exchange.drop("insurer", name, b"<x>" + b"A" * (50 * 1024 * 1024) + b"</x>")
    assert_rejected(exchange, "insurer", name, "MESSAGE_TOO_LARGE", "")
    kept = exchange.files("insurer", "rejected", name)[0]
    assert kept.stat().st_size == 50 * 1024 * 1024 + 7, "the input is kept whole for an operator"


def test_the_hub_keeps_running_and_loses_nothing(hub: Hub, exchange: Exchange) -> None:
    dropped = 0
    for path in sorted(INVALID.iterdir()):
        if path.name != "expected.json":
            exchange.drop_fixture(path)
            dropped += 1
    exchange.drop("insurer", "insurer-pending-policy-new.xml", (VALID / "insurer-pending-policy-new.xml").read_bytes())
    dropped += 1

    def settled() -> int:
        return sum(
            len([p for p in exchange.files(partner, folder) if not p.name.endswith(".error.json")])
            for partner in ("insurer", "platform") for folder in ("archive", "rejected")
        )

    wait_for(lambda: settled() == dropped, what="every input to be settled")
    assert len(exchange.files("platform", "out", "PendingPolicy_*")) == 1
    assert len(exchange.receipts("insurer")) + len(exchange.receipts("platform")) == dropped
    assert not exchange.files("insurer", "intake") and not exchange.files("platform", "intake")
    status = hub.status_reader.status()
    assert status["messages"]["by_state"]["in"] == {"accepted": 1, "rejected": dropped - 1}
    assert status["queue"]["parked"] == 0


def test_status_shows_each_route_s_last_error_and_no_other_route_s(hub: Hub, exchange: Exchange) -> None:
    accept_pending_policies(exchange)
    names = ["insurer-pending-policy-invalid-uscc.xml", "insurer-pending-policy-missing-org-code.xml"]
    for name in names:
        exchange.drop_fixture(INVALID / name)
        assert_rejected(exchange, "insurer", name, EXPECTED[name]["code"], EXPECTED[name]["field"])
    routes = {(r["message"], r["from"], r["to"]): r for r in hub.status_reader.status()["routes"]}
    last = routes.pop(("PendingPolicy", "insurer", "platform"))["last_error"]
    error = last["error"]
    assert (error["code"], error["field"]) == (EXPECTED[names[1]]["code"], EXPECTED[names[1]]["field"]), "the later"
    assert error["message"] and last["at"]
    assert hub.status_reader.message(last["message"])["messages"][0]["file"] == names[1], "its hub id, to look it up"
    assert {key: r["last_error"] for key, r in routes.items() if r["last_error"]} == {}
    rejected = 'hub_stored_messages{direction="in",family="underwriting",state="rejected"} 2.0'
    assert rejected in hub.status_reader.metrics.render().decode(), "read, then rejected: not unread"
