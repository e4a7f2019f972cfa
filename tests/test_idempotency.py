"""Idempotent consumer, both ways (issue 5): a message sent again is answered and never processed twice.

By message id: the same message again (its sender missed the answer) is refused DUPLICATE_MESSAGE, as issue 2
asks, and the original's receipt is delivered again, the same bytes; a different message under a used id gets
only the refusal. By business key and version: the same document under a new message id, from the insurer or
from the platform, is answered as the original was and not forwarded again; a new version is forwarded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lxml import etree

from hub.app import Hub
from tests.conftest import FIXTURES, UNDERWRITING, Exchange, wait_for

VALID = UNDERWRITING / "valid"
PENDING = VALID / "insurer-pending-policy-new.xml"
APPLICATION = VALID / "platform-insurance-application-new.json"
PENDING_ID = "6F1C2A4E-3B7D-4E21-9A55-0C8E7D1B2A01"
ECI = {"e": "urn:sw-eci-hub:insurer:1.0"}


def _xml(path: Any, guid: str | None = None, **fields: str) -> bytes:
    """The fixture with another message id and/or other field values (by element name under the body)."""
    root = etree.parse(str(path)).getroot()
    if guid is not None:
        root.set("guid", guid)
        root.find("e:Head/e:guid", ECI).text = guid
    for name, value in fields.items():
        root.find(f".//e:{name}", ECI).text = value
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _pending_policy_whose_receipt_was_lost(exchange: Exchange) -> tuple[Any, Path, bytes]:
    """The insurer's pending policy is accepted, but the insurer never takes its receipt: the receipt, its
    file (gone now) and the bytes it held."""
    exchange.drop_fixture(PENDING)
    exchange.wait_files("insurer", "archive", 1)
    receipt = exchange.receipt_for("insurer", PENDING_ID)
    path = exchange.folder("insurer", "out") / f"Receipt_{receipt['messageId']}.xml"
    sent = path.read_bytes()
    path.unlink()
    return receipt, path, sent


def test_an_exact_resend_is_refused_and_its_sender_gets_the_original_receipt_again(
    hub: Hub, exchange: Exchange
) -> None:
    original, path, sent = _pending_policy_whose_receipt_was_lost(exchange)  # so the insurer sends it again

    exchange.drop("insurer", "insurer-pending-policy-again.xml", PENDING.read_bytes())
    exchange.wait_files("insurer", "rejected", 1, "insurer-pending-policy-again.xml")
    wait_for(path.exists, what="the original receipt delivered again")
    assert path.read_bytes() == sent, "the same receipt: same bytes, same receipt id"
    [refusal] = [r for r in exchange.receipts("insurer") if r["messageId"] != original["messageId"]]
    assert refusal["returnStatus"] == 100 and refusal["refMessageId"] == PENDING_ID
    assert refusal["errors"][0]["code"] == "DUPLICATE_MESSAGE"
    assert f"its receipt {original['messageId']} is sent again" in refusal["errors"][0]["message"]
    assert len(exchange.files("platform", "out", "PendingPolicy_*")) == 1, "processed once"
    history = hub.status_reader.message(original["messageId"])["messages"][0]["history"]  # type: ignore[index]
    assert [h["event"] for h in history].count("resent") == 1


def test_another_message_under_a_used_id_is_refused_without_the_original_receipt(
    hub: Hub, exchange: Exchange
) -> None:
    _original, path, _sent = _pending_policy_whose_receipt_was_lost(exchange)

    changed = _xml(PENDING, proposalNo="XW2026330100099")  # same guid, another document
    exchange.drop("insurer", "insurer-pending-policy-other.xml", changed)
    exchange.wait_files("insurer", "rejected", 1, "insurer-pending-policy-other.xml")
    [refusal] = exchange.receipts("insurer")
    assert refusal["errors"][0]["code"] == "DUPLICATE_MESSAGE"
    assert "with other content: a message id names one message" in refusal["errors"][0]["message"]
    time.sleep(0.5)
    assert not path.exists(), "the original's receipt does not answer another message"
    assert len(exchange.files("platform", "out", "PendingPolicy_*")) == 1


def test_the_insurer_pushing_the_same_version_under_a_new_id_is_answered_not_forwarded(
    hub: Hub, exchange: Exchange
) -> None:
    exchange.drop_fixture(PENDING)
    exchange.wait_files("platform", "out", 1, "PendingPolicy_*")
    exchange.drop_fixture(APPLICATION)  # the conversation moves on: a pending policy would now be out of order
    exchange.wait_files("insurer", "out", 1, "InsuranceApplication_*")

    again_id = "6F1C2A4E-3B7D-4E21-9A55-0C8E7D1B2A71"
    exchange.drop("insurer", "insurer-pending-policy-repushed.xml", _xml(PENDING, guid=again_id))
    answer = exchange.receipt_for("insurer", again_id)
    original = exchange.receipt_for("insurer", PENDING_ID)
    assert answer["returnStatus"] == 120, answer
    assert f"repeats message {PENDING_ID}" in answer["returnInfo"]
    assert original["messageId"] in answer["returnInfo"]
    time.sleep(0.5)
    assert len(exchange.files("platform", "out", "PendingPolicy_*")) == 1, "not forwarded again"
    assert hub.status_reader.status()["conversations"]["underwriting"] == {"applied": 1}

    # A new version (the insurer corrects the form) is a new document: it is judged and forwarded as such.
    corrected_id = "6F1C2A4E-3B7D-4E21-9A55-0C8E7D1B2A72"
    exchange.drop("insurer", "insurer-pending-policy-corrected.xml",
                  _xml(PENDING, guid=corrected_id, appTime="20261121100000"))
    refused = exchange.receipt_for("insurer", corrected_id)
    assert (refused["returnStatus"], refused["errors"][0]["code"]) == (100, "OUT_OF_ORDER")


def test_the_platform_sending_the_same_application_twice_under_two_ids_is_forwarded_once(
    hub: Hub, exchange: Exchange
) -> None:
    exchange.drop_fixture(PENDING)
    exchange.wait_files("platform", "out", 1, "PendingPolicy_*")
    exchange.drop_fixture(APPLICATION)
    exchange.wait_files("insurer", "out", 1, "InsuranceApplication_*")
    first_id = json.loads(APPLICATION.read_bytes())["messageId"]

    again = json.loads(APPLICATION.read_bytes())
    again["messageId"] = "7A1C2A4E-3B7D-4E21-9A55-0C8E7D1B2A88"  # the platform's retry mints a new id
    exchange.drop("platform", "platform-insurance-application-again.json", json.dumps(again).encode())
    answer = exchange.receipt_for("platform", again["messageId"])
    assert answer["returnStatus"] == 120 and f"repeats message {first_id}" in answer["returnInfo"]
    time.sleep(0.5)
    assert len(exchange.files("insurer", "out", "InsuranceApplication_*")) == 1


def test_a_risk_article_update_is_a_new_version_and_its_repeat_is_not(hub: Hub, exchange: Exchange) -> None:
    risk = FIXTURES / "risk" / "valid"
    exchange.drop_fixture(risk / "insurer-risk-article-new.xml")
    exchange.wait_files("platform", "out", 1, "RiskArticle_*")
    exchange.drop_fixture(risk / "insurer-risk-article-update.xml")
    exchange.wait_files("platform", "out", 2, "RiskArticle_*")
    repeat_id = "6F1C2A4E-3B7D-4E21-9A55-0C8E7D1B2A73"
    exchange.drop("insurer", "insurer-risk-article-update-again.xml",
                  _xml(risk / "insurer-risk-article-update.xml", guid=repeat_id))
    assert "acknowledged again" in exchange.receipt_for("insurer", repeat_id)["returnInfo"]
    time.sleep(0.5)
    assert len(exchange.files("platform", "out", "RiskArticle_*")) == 2
