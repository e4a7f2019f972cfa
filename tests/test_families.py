"""Every message family through a running hub and real drop folders: the valid fixtures play their story in
order (each accepted and forwarded where the default routes send it), and every invalid fixture gets the code
and field path its expected.json states, after the preconditions that file describes."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from lxml import etree

from hub.app import Hub
from hub.config import HubConfig
from hub.models.parties import MAX_ATTACHMENT_BYTES
from tests.conftest import FIXTURES, Exchange

UNDERWRITING_ISSUED = [
    "underwriting/valid/insurer-pending-policy-new.xml",
    "underwriting/valid/platform-insurance-application-new.json",
    "underwriting/valid/insurer-policy-issued-new.xml",
]
AGREEMENT_SIGNED = [
    "agreement/valid/platform-agreement-sign-request.json",
    "agreement/valid/insurer-agreement-sealed.xml",
]
STORIES = {
    "agreement": [*AGREEMENT_SIGNED, "agreement/valid/platform-agreement-terminate-request.json",
                  "agreement/valid/insurer-agreement-terminate-result.xml"],
    "authorization": ["authorization/valid/platform-data-authorization.json",
                      "authorization/valid/insurer-data-authorization-result.xml"],
    "inquiry": ["inquiry/valid/platform-insurance-inquiry.json", "inquiry/valid/insurer-inquiry-completed.xml"],
    "claims": [*UNDERWRITING_ISSUED, *AGREEMENT_SIGNED, "claims/valid/platform-claim-application.json",
               "claims/valid/insurer-claim-review-receipt.xml"],
    "customs": ["customs/valid/platform-customs-record-query.json", "customs/valid/customs-customs-record-answer.xml"],
    "risk": ["risk/valid/insurer-risk-article-new.xml", "risk/valid/insurer-risk-article-update.xml",
             "risk/valid/insurer-risk-article-withdraw.xml"],
    "trade": ["trade/valid/platform-trade-registration.json", "trade/valid/insurer-trade-registration-result.xml",
              "trade/valid/platform-trade-registration-direct.json"],
}
# What each family's invalid fixtures are played after (their expected.json says the same in words).
BEFORE_INVALID = {
    "agreement": STORIES["agreement"][:1],
    "authorization": STORIES["authorization"],
    "inquiry": STORIES["inquiry"][:1],
    "claims": STORIES["claims"][:-1],
    "customs": STORIES["customs"][:1],
    "risk": STORIES["risk"][:1],
    "trade": STORIES["trade"],
}
INVALID = sorted(
    (family, name, expected)
    for family in STORIES
    for name, expected in json.loads((FIXTURES / family / "invalid" / "expected.json").read_text())["expected"].items()
)


def message_id(path: Path) -> str:
    raw = path.read_bytes()
    if path.suffix == ".json":
        return str(json.loads(raw)["messageId"])
    return str(etree.fromstring(raw).get("guid"))


def play(exchange: Exchange, config: HubConfig, fixture: str) -> None:
    """Drop a valid fixture; its sender gets an accepting receipt and the route's receiver gets the message."""
    path = FIXTURES / fixture
    sender = path.name.split("-", 1)[0]
    exchange.drop_fixture(path)
    mid = message_id(path)
    receipt = exchange.receipt_for(sender, mid)
    assert receipt["returnStatus"] == 120, receipt
    mtype = receipt["refMessageType"]
    receiver = next(r.to_partner for r in config.routes if r.message == mtype and r.from_partner == sender)
    exchange.wait_files(receiver, "out", 1, f"{mtype}_{mid}.*")


def test_every_family_has_a_story_and_a_precondition_for_its_invalid_fixtures() -> None:
    families = {p.parent.name for p in FIXTURES.glob("*/valid")} - {"underwriting", "signing"}
    assert families == set(STORIES) == set(BEFORE_INVALID)
    for family in STORIES:
        listed = {p.name for p in (FIXTURES / family / "invalid").iterdir()} - {"expected.json"}
        expected = {name for f, name, _ in INVALID if f == family}
        assert listed == expected, f"{family}: every invalid fixture needs its expected code, and no more"
        played = {f.split("/")[-1] for f in STORIES[family] if f.startswith(family)}
        assert played == {p.name for p in (FIXTURES / family / "valid").iterdir()}, f"{family}: play every one"


@pytest.mark.parametrize("family", sorted(STORIES))
def test_story_flows_through_the_hub(hub: Hub, hub_config: HubConfig, exchange: Exchange, family: str) -> None:
    for fixture in STORIES[family]:
        play(exchange, hub_config, fixture)
    for partner in ("platform", "insurer", "customs"):
        assert not exchange.files(partner, "rejected"), f"{partner} had inputs refused"


@pytest.mark.parametrize(("family", "name", "expected"), INVALID, ids=[f"{f}/{n}" for f, n, _ in INVALID])
def test_invalid_fixture_gets_its_code_and_field(
    hub: Hub, hub_config: HubConfig, exchange: Exchange, family: str, name: str, expected: dict[str, str]
) -> None:
    for fixture in BEFORE_INVALID[family]:
        play(exchange, hub_config, fixture)
    path = FIXTURES / family / "invalid" / name
    exchange.drop_fixture(path)
    sender = name.split("-", 1)[0]
    receipt = exchange.receipt_for(sender, name)
    assert receipt["returnStatus"] == 100, receipt
    first = receipt["errors"][0]
    assert (first["code"], first["field"]) == (expected["code"], expected["field"]), receipt
    kept = exchange.wait_files(sender, "rejected", 1, name)[0]
    assert json.loads(Path(f"{kept}.error.json").read_text())["code"] == expected["code"]


def test_a_repeated_authorization_is_refused_as_do_not_authorise_twice(
    hub: Hub, hub_config: HubConfig, exchange: Exchange
) -> None:
    for fixture in STORIES["authorization"]:
        play(exchange, hub_config, fixture)
    exchange.drop_fixture(FIXTURES / "authorization" / "invalid" / "platform-data-authorization-again.json")
    receipt = exchange.receipt_for("platform", "platform-data-authorization-again.json")
    assert "请勿重复授权" in receipt["errors"][0]["message"]
    assert "in-force" in receipt["errors"][0]["message"]


def _claim_with_attachments(sizes: list[int]) -> bytes:
    claim = json.loads((FIXTURES / "claims" / "valid" / "platform-claim-application.json").read_text())
    invoices = [s["invoiceNo"] for s in claim["shipments"]]
    assert len(invoices) == 3
    claim["attachments"] = [
        {"fileName": f"attachment-{n:02d}.bin", "content": base64.b64encode(b"\x01" * size).decode(),
         "invoiceNo": invoices[n % 3], "kind": "other"}
        for n, size in enumerate(sizes)
    ]
    return json.dumps(claim).encode()


@pytest.mark.slow
def test_a_claim_with_ten_4_mb_attachments_is_accepted_and_one_byte_more_is_refused(
    hub: Hub, hub_config: HubConfig, exchange: Exchange
) -> None:
    for fixture in STORIES["claims"][:-2]:
        play(exchange, hub_config, fixture)
    exchange.drop("platform", "platform-claim-40mb.json", _claim_with_attachments([MAX_ATTACHMENT_BYTES] * 10))
    accepted = exchange.receipt_for("platform", "platform-claim-40mb.json", timeout=120)
    assert accepted["returnStatus"] == 120, accepted
    forwarded = exchange.wait_files("insurer", "out", 1, "ClaimApplication_*.xml", timeout=120)[0]
    assert forwarded.stat().st_size > 40 * 1024 * 1024 * 4 // 3

    over = json.loads(_claim_with_attachments([MAX_ATTACHMENT_BYTES] * 10 + [1]))
    over["messageId"] = "BADBAD00-1C2D-4E8F-A6B1-999999999999"
    over["claimNo"] = "SP2026330100006"
    exchange.drop("platform", "platform-claim-40mb-and-1-byte.json", json.dumps(over).encode())
    refused = exchange.receipt_for("platform", "platform-claim-40mb-and-1-byte.json", timeout=120)
    assert refused["returnStatus"] == 100
    assert (refused["errors"][0]["code"], refused["errors"][0]["field"]) == ("FIELD_INVALID", "/attachments")
    assert "41943041 bytes" in refused["errors"][0]["message"] and "40 MB" in refused["errors"][0]["message"]
