"""The underwriting conversation through a running hub and real drop folders, both endings."""

from __future__ import annotations

import json

from lxml import etree

from hub.app import Hub
from tests.conftest import UNDERWRITING, Exchange

VALID = UNDERWRITING / "valid"


def play(exchange: Exchange, fixture: str, *, forwarded_to: str | None, sent: int) -> None:
    """Drop one fixture; wait for its receipt (and its forwarded copy) and check the receipt accepts it."""
    sender = fixture.split("-", 1)[0]
    exchange.drop_fixture(VALID / fixture)
    receipts = exchange.wait_files(sender, "out", sent, "Receipt_*")
    if forwarded_to:
        exchange.wait_files(forwarded_to, "out", 1, f"*{_message_id(fixture)}*")
    receipt = exchange.receipt_for(sender, _message_id(fixture))
    assert receipt["returnStatus"] == 120, receipt
    assert len(receipts) == sent


def _message_id(fixture: str) -> str:
    raw = (VALID / fixture).read_bytes()
    if fixture.endswith(".json"):
        return str(json.loads(raw)["messageId"])
    return str(etree.fromstring(raw).get("guid"))


def test_issued_ending_flows_both_ways(hub: Hub, exchange: Exchange) -> None:
    play(exchange, "insurer-pending-policy-new.xml", forwarded_to="platform", sent=1)
    forwarded = json.loads(exchange.files("platform", "out", "PendingPolicy_*")[0].read_bytes())
    assert forwarded["messageType"] == "PendingPolicy"
    assert forwarded["enterprise"]["uscc"] == "91330782MA2H7K3R9J"
    assert forwarded["applicationForm"]["fileName"].endswith(".pdf")

    play(exchange, "platform-insurance-application-new.json", forwarded_to="insurer", sent=1)
    application = etree.parse(str(exchange.files("insurer", "out", "InsuranceApplication_*")[0])).getroot()
    assert etree.QName(application).localname == "ECI103Message"

    play(exchange, "insurer-policy-issued-new.xml", forwarded_to="platform", sent=2)
    issued = json.loads(exchange.files("platform", "out", "PolicyIssued_*")[0].read_bytes())
    assert issued["policyNo"] == "SCXW2026000117"
    assert issued["maxLiabilityUsd"] == "150000.00"

    play(exchange, "platform-policy-receipt-new.json", forwarded_to="insurer", sent=2)
    assert len(exchange.files("insurer", "out", "PolicyReceipt_*")) == 1

    status = hub.status_reader.status()
    assert status["conversations"]["underwriting"] == {"receipted": 1}
    assert len(exchange.files("insurer", "archive")) == 2
    assert len(exchange.files("platform", "archive")) == 2
    assert not exchange.files("insurer", "rejected") and not exchange.files("platform", "rejected")


def test_returned_ending_flows_both_ways(hub: Hub, exchange: Exchange) -> None:
    play(exchange, "insurer-pending-policy-renewal.xml", forwarded_to="platform", sent=1)
    play(exchange, "platform-insurance-application-renewal.json", forwarded_to="insurer", sent=1)
    play(exchange, "insurer-application-returned-renewal.xml", forwarded_to="platform", sent=2)
    returned = json.loads(exchange.files("platform", "out", "ApplicationReturned_*")[0].read_bytes())
    assert "不符合投保条件" in returned["reason"]
    assert hub.status_reader.status()["conversations"]["underwriting"] == {"returned": 1}


def test_a_repeated_policy_receipt_is_acknowledged_not_forwarded_twice(hub: Hub, exchange: Exchange) -> None:
    for fixture, to, sent in [
        ("insurer-pending-policy-new.xml", "platform", 1),
        ("platform-insurance-application-new.json", "insurer", 1),
        ("insurer-policy-issued-new.xml", "platform", 2),
        ("platform-policy-receipt-new.json", "insurer", 2),
    ]:
        play(exchange, fixture, forwarded_to=to, sent=sent)
    again = json.loads((VALID / "platform-policy-receipt-new.json").read_bytes())
    again["messageId"] = "6F1C2A4E-3B7D-4E21-9A55-0C8E7D1B2A99"  # the enterprise clicks 收悉 a second time
    exchange.drop("platform", "platform-policy-receipt-again.json", json.dumps(again).encode())
    answer = exchange.receipt_for("platform", again["messageId"])
    assert answer["returnStatus"] == 120
    assert "acknowledged again" in answer["returnInfo"]
    assert len(exchange.files("insurer", "out", "PolicyReceipt_*")) == 1


def test_partner_receipts_mark_delivered_messages_acknowledged(hub: Hub, exchange: Exchange) -> None:
    play(exchange, "insurer-pending-policy-new.xml", forwarded_to="platform", sent=1)
    pending_id = _message_id("insurer-pending-policy-new.xml")
    receipt = {
        "messageType": "Receipt", "messageId": "2B8E4C11-0A6F-4D3B-9E27-5C1D8F4A6B01",
        "createdAt": "2026-11-20T09:00:05+08:00", "appType": 1,
        "sender": {"copCode": "SWPLATFORM", "copName": "中国国际贸易单一窗口", "dxpId": "DXPSWP0000000001"},
        "refMessageId": pending_id, "refMessageType": "PendingPolicy", "returnStatus": 120,
        "returnTime": "20261120090005123", "returnInfo": "入库成功",
    }
    exchange.drop("platform", "platform-receipt.json", json.dumps(receipt, ensure_ascii=False).encode())
    exchange.wait_files("platform", "archive", 1)

    def forwarded_state() -> str:
        found = hub.status_reader.message(pending_id)
        assert found is not None
        return next(m["state"] for m in found["messages"] if m["direction"] == "out")

    from tests.conftest import wait_for

    wait_for(lambda: forwarded_state() == "acknowledged", what="the pending policy to be acknowledged")
    assert not exchange.files("platform", "out", "Receipt_*"), "a receipt must never be answered"
