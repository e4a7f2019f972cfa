"""The DXP envelope through a running hub and its drop folders: partners configured with `envelope = "dxp/1.0"`
send and receive every message in a DxpMsg; each envelope received is answered by the node's DxpRep; what the
hub writes validates against the reference DXP schema (and the business XML inside against its own); a
partner's DxpRep is noted on the message it answers; bad envelopes are refused and the hub carries on."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from lxml import etree

from hub.app import Hub
from hub.config import DEFAULT_CONFIG, ConfigError, HubConfig, load_config
from hub.errors import FIELD_INVALID, HubError
from hub.mappers.dxp import Dxp, DxpAnswer, Envelope, TransInfo
from hub.mappers.hub_xml import HubXml
from hub.models import Receipt
from hub.models.base import BEIJING
from hub.schemas import ALL_SCHEMAS, CUS_1_0, ECI_1_0, SchemaRegistry
from hub.signing import load_certificate, verify_document
from tests.conftest import FIXTURES, UNDERWRITING, Exchange, hub_environ, needs, wait_for
from tests.test_reference_schemas import REFERENCE_DXP_XSD

REGISTRY = SchemaRegistry(ALL_SCHEMAS)
DXP = Dxp(REGISTRY.get("dxp/1.0"))
FORMATS = {"insurer": HubXml(REGISTRY.get("eci/1.0")), "customs": HubXml(REGISTRY.get("cus/1.0"))}
BUSINESS_XSD = {"insurer": ECI_1_0, "customs": CUS_1_0}
HUB_ID, INSURER_ID, CUSTOMS_ID = "DXPHUB0000000001", "DXPINS0000000001", "DXPEDCCEB0000002"
NODE_IDS = {"insurer": INSURER_ID, "customs": CUSTOMS_ID}
SIGNING = FIXTURES / "signing"


def enveloped_environ(root: Path) -> dict[str, str]:
    return hub_environ(
        root,
        HUB_PARTNERS__INSURER__ENVELOPE="dxp/1.0", HUB_PARTNERS__INSURER__DXP_ID=INSURER_ID,
        HUB_PARTNERS__CUSTOMS__ENVELOPE="dxp/1.0", HUB_PARTNERS__CUSTOMS__DXP_ID=CUSTOMS_ID,
    )


def enveloped_config(root: Path, extra: str = "") -> HubConfig:
    path = root / "hub.toml"
    path.write_text(DEFAULT_CONFIG.read_text(encoding="utf-8") + "\n" + extra, encoding="utf-8")
    return load_config(path, environ=enveloped_environ(root))


@pytest.fixture
def hub(tmp_path: Path, start_hub: Callable[[HubConfig], Hub]) -> Hub:
    return start_hub(enveloped_config(tmp_path))


def envelope(business: bytes, cop_msg_id: str, *, sender: str = INSURER_ID, receivers: tuple[str, ...] = (HUB_ID,),
             msg_type: str = "ECI101Message") -> bytes:
    return DXP.wrap(business, sender_id=sender, receiver_ids=receivers, msg_type=msg_type, cop_msg_id=cop_msg_id,
                    created=datetime.now(BEIJING))


def drop_enveloped(exchange: Exchange, partner: str, fixture: Path, cop_msg_id: str) -> None:
    root = etree.fromstring(fixture.read_bytes())
    exchange.drop(partner, fixture.name, envelope(fixture.read_bytes(), cop_msg_id, sender=NODE_IDS[partner],
                                                   msg_type=etree.QName(root).localname))


def node_answers(exchange: Exchange, partner: str) -> dict[str, list[DxpAnswer]]:
    """Every DxpRep the hub delivered to `partner`, by the CopMsgId it answers."""
    found: dict[str, list[DxpAnswer]] = {}
    for path in exchange.files(partner, "out", "DxpRep_*"):
        for answer in DXP.read_response(path.read_bytes()).answers:
            found.setdefault(answer.original.cop_msg_id, []).append(answer)
    return found


def node_answer(exchange: Exchange, partner: str, cop_msg_id: str) -> DxpAnswer:
    (answer,) = wait_for(lambda: node_answers(exchange, partner).get(cop_msg_id), what=f"the DxpRep for {cop_msg_id}")
    return answer


def opened(path: Path) -> Envelope:
    got = DXP.unwrap(path.read_bytes())
    assert got.trans_info.sender_id == HUB_ID
    return got


def receipts(exchange: Exchange, partner: str) -> list[Receipt]:
    found = [FORMATS[partner].decode(opened(p).business_xml) for p in exchange.files(partner, "out", "Receipt_*")]
    return [r for r in found if isinstance(r, Receipt)]


def receipt_for(exchange: Exchange, partner: str, ref: str) -> Receipt:
    (found,) = wait_for(lambda: [r for r in receipts(exchange, partner) if ref in (r.ref_message_id, r.ref_file_name)],
                        what=f"the receipt for {ref} in {partner}/out")
    return found


def fixture_id(path: Path) -> str:
    return str(etree.fromstring(path.read_bytes()).get("guid"))


def play(exchange: Exchange, partner: str, fixture: Path, cop_msg_id: str) -> None:
    """An enveloped fixture: the node takes it (DxpRep 2), the hub accepts it (an enveloped receipt, 120)."""
    drop_enveloped(exchange, partner, fixture, cop_msg_id)
    assert node_answer(exchange, partner, cop_msg_id).code == "2"
    assert receipt_for(exchange, partner, fixture_id(fixture)).return_status == 120


def forwarded(exchange: Exchange, partner: str, pattern: str) -> Envelope:
    """A business message the hub sent an enveloped partner: addressed to its node, CopMsgId = the message id."""
    got = opened(exchange.wait_files(partner, "out", 1, pattern)[0])
    assert got.trans_info.receiver_ids == (NODE_IDS[partner],)
    assert got.trans_info.cop_msg_id == FORMATS[partner].decode(got.business_xml).message_id
    return got


def assert_everything_written_validates(exchange: Exchange, tmp_path: Path) -> int:
    """Every envelope in insurer/out and customs/out: the DXP schema through the registry and xmllint (the
    reference XSD); the business XML inside each DxpMsg against its own schema, both ways too."""
    envelopes, business = [], []
    for partner in ("insurer", "customs"):
        for path in exchange.files(partner, "out"):
            root = etree.parse(str(path)).getroot()
            assert DXP.schema.problems(root) == [], path
            envelopes.append(str(path))
            if etree.QName(root).localname == "DxpMsg":
                inner = DXP.unwrap(path.read_bytes()).business_xml
                assert FORMATS[partner].schema.problems(etree.fromstring(inner)) == [], path
                saved = tmp_path / "inner" / partner / path.name
                saved.parent.mkdir(parents=True, exist_ok=True)
                saved.write_bytes(inner)
                business.append((BUSINESS_XSD[partner].path, str(saved)))
    needs(shutil.which("xmllint") is not None, "xmllint (Debian libxml2-utils) is not installed")
    needs(REFERENCE_DXP_XSD.exists(), f"the reference schemas are not beside the project ({REFERENCE_DXP_XSD})")
    for schema, files in [(REFERENCE_DXP_XSD, envelopes), *((xsd, [f]) for xsd, f in business)]:
        done = subprocess.run(["xmllint", "--noout", "--schema", str(schema), *files], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    return len(envelopes)


def events(hub: Hub, message_id: str, direction: str) -> list[tuple[str, str]]:
    found = hub.status_reader.message(message_id)
    assert found is not None
    (message,) = [m for m in found["messages"] if m["direction"] == direction]
    return [(e["event"], e["detail"]) for e in message["history"]]


# ---------------------------------------------------------------- stories


def test_the_underwriting_story_in_envelopes(hub: Hub, exchange: Exchange, tmp_path: Path) -> None:
    valid = UNDERWRITING / "valid"
    play(exchange, "insurer", valid / "insurer-pending-policy-new.xml", "COP-PENDING")
    exchange.wait_files("platform", "out", 1, "PendingPolicy_*.json")

    application = valid / "platform-insurance-application-new.json"
    exchange.drop_fixture(application)
    application_id = json.loads(application.read_bytes())["messageId"]
    sent = forwarded(exchange, "insurer", f"InsuranceApplication_{application_id}.xml")
    assert sent.trans_info.msg_type == "ECI103Message"

    # The insurer's node takes the envelope: noted on the message, never answered.
    exchange.drop("insurer", "dxprep-application.xml", DXP.respond(sent.trans_info, notice_date=datetime.now().date()))
    wait_for(lambda: any(e == "taken-by-node" for e, _ in events(hub, application_id, "out")),
             what="the DxpRep noted on the application")
    assert not exchange.files("insurer", "out", "*dxprep*")

    play(exchange, "insurer", valid / "insurer-policy-issued-new.xml", "COP-ISSUED")
    exchange.wait_files("platform", "out", 1, "PolicyIssued_*.json")
    exchange.wait_files("insurer", "archive", 3)

    assert {cop: len(a) for cop, a in node_answers(exchange, "insurer").items()} == {"COP-PENDING": 1, "COP-ISSUED": 1}
    assert not exchange.files("insurer", "rejected")
    # two DxpReps, two receipts in DxpMsgs, the application in its DxpMsg
    assert assert_everything_written_validates(exchange, tmp_path) == 5


def test_the_customs_story_in_envelopes(hub: Hub, exchange: Exchange, tmp_path: Path) -> None:
    query = FIXTURES / "customs" / "valid" / "platform-customs-record-query.json"
    exchange.drop_fixture(query)
    query_id = json.loads(query.read_bytes())["messageId"]
    sent = forwarded(exchange, "customs", f"CustomsRecordQuery_{query_id}.xml")

    play(exchange, "customs", FIXTURES / "customs" / "valid" / "customs-customs-record-answer.xml", "COP-ANSWER")
    exchange.wait_files("platform", "out", 2)

    # customs' node refuses the query's envelope: the message is refused, with what the node said
    exchange.drop("customs", "dxprep-query.xml", DXP.respond(
        sent.trans_info, notice_date=datetime.now().date(),
        refusal=HubError(FIELD_INVALID, "receiver DXPEDCCEB0000002 is closed for maintenance")))
    wait_for(lambda: events(hub, query_id, "out")[-1][0] == "refused", what="the node's refusal on the query")
    assert "refused by the node: 100" in events(hub, query_id, "out")[-1][1]
    assert assert_everything_written_validates(exchange, tmp_path) == 3


# ---------------------------------------------------------------- refusals


def error_file(exchange: Exchange, partner: str, name: str) -> dict[str, object]:
    kept = exchange.wait_files(partner, "rejected", 1, name)[0]
    return dict(json.loads(Path(f"{kept}.error.json").read_text(encoding="utf-8")))


PENDING = UNDERWRITING / "valid" / "insurer-pending-policy-new.xml"


def with_data_after(raw: bytes) -> bytes:
    """An envelope whose TransInfo is whole but which breaks the schema further on."""
    return raw.replace(b"</Data>", b"</Data>\n  <Surplus/>", 1)


BAD_ENVELOPES = {
    # name: (bytes, code, field, answered by: "DxpRep" (refusing, 100) or "Receipt" (900, enveloped))
    "malformed.xml": (b"<DxpMsg xmlns='http://www.chinaport.gov.cn/dxp'><TransInfo>", "MALFORMED_XML", "", "Receipt"),
    "bare.xml": (PENDING.read_bytes(), "UNKNOWN_NAMESPACE", "/ECI101Message", "Receipt"),
    "wrong-sender.xml": (envelope(PENDING.read_bytes(), "COP-WRONG-SENDER", sender="DXPNOBODY0000001"),
                         "UNKNOWN_REFERENCE", "/DxpMsg/TransInfo/SenderId", "DxpRep"),
    "not-for-the-hub.xml": (envelope(PENDING.read_bytes(), "COP-NOT-OURS", receivers=("DXPOTHER00000001",)),
                            "UNKNOWN_REFERENCE", "/DxpMsg/TransInfo/ReceiverIds", "DxpRep"),
    "schema-violation.xml": (with_data_after(envelope(PENDING.read_bytes(), "COP-SURPLUS")),
                             "SCHEMA_VIOLATION", "/DxpMsg", "DxpRep"),
}


@pytest.mark.parametrize("name", sorted(BAD_ENVELOPES))
def test_a_bad_envelope_is_refused_and_the_hub_carries_on(
    name: str, hub: Hub, exchange: Exchange, tmp_path: Path
) -> None:
    raw, code, field, answer = BAD_ENVELOPES[name]
    exchange.drop("insurer", name, raw)
    found = error_file(exchange, "insurer", name)
    assert found["code"] == code
    assert str(found["field"]).startswith(field), found
    if answer == "DxpRep":
        cop_msg_id = DXP.trans_info_of(raw).cop_msg_id  # type: ignore[union-attr]
        refused = node_answer(exchange, "insurer", cop_msg_id)
        assert refused.code == "100" and code in (refused.info or "") and field in (refused.info or "")
        assert not exchange.files("insurer", "out", "Receipt_*")
    else:
        receipt = receipt_for(exchange, "insurer", name)
        assert receipt.return_status == 100 and receipt.errors[0].code == code
        assert not exchange.files("insurer", "out", "DxpRep_*")

    play(exchange, "insurer", PENDING, "COP-AFTER")  # the hub carries on
    assert_everything_written_validates(exchange, tmp_path)


def test_a_bad_business_message_in_a_good_envelope_is_taken_by_the_node_and_refused_by_the_hub(
    hub: Hub, exchange: Exchange, tmp_path: Path
) -> None:
    invalid = sorted((UNDERWRITING / "invalid").glob("insurer-*.xml"))[0]
    exchange.drop("insurer", invalid.name, envelope(invalid.read_bytes(), "COP-INVALID"))
    assert node_answer(exchange, "insurer", "COP-INVALID").code == "2"
    assert receipt_for(exchange, "insurer", invalid.name).return_status == 100
    error_file(exchange, "insurer", invalid.name)
    assert_everything_written_validates(exchange, tmp_path)


def test_a_dxp_rep_for_an_envelope_the_hub_never_sent_is_refused_without_an_answer(
    hub: Hub, exchange: Exchange
) -> None:
    never = TransInfo("COP-NEVER-SENT", HUB_ID, (INSURER_ID,), datetime.now(BEIJING), "ECI103Message")
    exchange.drop("insurer", "dxprep-unknown.xml", DXP.respond(never, notice_date=datetime.now().date()))
    found = error_file(exchange, "insurer", "dxprep-unknown.xml")
    assert (found["code"], found["field"]) == ("UNKNOWN_REFERENCE", "/DxpRep/Response[1]/OriHead/CopMsgId")
    play(exchange, "insurer", PENDING, "COP-AFTER")
    assert len(exchange.files("insurer", "out")) == 2  # the DxpRep and receipt for COP-AFTER, nothing for the DxpRep


# ---------------------------------------------------------------- signed and enveloped, configuration


def test_signed_and_enveloped(tmp_path: Path, exchange: Exchange, start_hub: Callable[[HubConfig], Hub]) -> None:
    """The hub signs the business XML, then wraps it: the signature inside the envelope checks."""
    cert = SIGNING / "pengcheng-rsa.cert.pem"
    hub = start_hub(enveloped_config(tmp_path, (
        f'[signers.hub-key]\nkind = "software"\nkey = "{SIGNING / "pengcheng-rsa.key.pem"}"\n'
        f'certificate = "{cert}"\n\n[partners.insurer.signing]\nsigner = "hub-key"\n'
    )))
    valid = UNDERWRITING / "valid"
    play(exchange, "insurer", valid / "insurer-pending-policy-new.xml", "COP-PENDING")
    application = valid / "platform-insurance-application-new.json"
    exchange.drop_fixture(application)
    application_id = json.loads(application.read_bytes())["messageId"]
    sent = forwarded(exchange, "insurer", f"InsuranceApplication_{application_id}.xml")
    assert verify_document(sent.business_xml, [load_certificate(cert)], require=True) is not None
    stored = hub.status_reader.message(application_id)
    assert stored is not None
    assert any("signed by hub-key" in e["detail"] for m in stored["messages"] for e in m["history"])
    assert_everything_written_validates(exchange, tmp_path)


@pytest.mark.parametrize(("environ", "expected"), [
    ({"HUB_PARTNERS__INSURER__ENVELOPE": "dxp/1.0"}, "partners.insurer: Value error, envelope needs dxp_id"),
    ({"HUB_PARTNERS__PLATFORM__ENVELOPE": "dxp/1.0", "HUB_PARTNERS__PLATFORM__DXP_ID": "X"},
     "partners.platform: Value error, envelope: only xml partners"),
    ({"HUB_PARTNERS__INSURER__ENVELOPE": "dxp/1.0", "HUB_PARTNERS__INSURER__DXP_ID": "DXPINS00000000017"},
     "partners.insurer.dxp_id: String should have at most 16 characters"),
    ({"HUB_PARTNERS__INSURER__ENVELOPE": "dxp/1.0", "HUB_PARTNERS__INSURER__DXP_ID": "A",
      "HUB_HUB__DXP_ID": "DXPHUB00000000001"}, "hub.dxp_id 'DXPHUB00000000001' has 17 characters"),
])
def test_envelope_config_errors_name_the_key(environ: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(DEFAULT_CONFIG, environ=environ)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_unknown_envelope_version_is_a_config_error(tmp_path: Path) -> None:
    config = load_config(DEFAULT_CONFIG, environ={**enveloped_environ(tmp_path), "HUB_PARTNERS__INSURER__ENVELOPE":
                                                  "dxp/9.9"})
    with pytest.raises(ConfigError, match=r"^partners\.insurer\.envelope: "):
        Hub(config)


def test_the_default_config_sends_bare_xml() -> None:
    assert all(p.envelope is None for p in load_config(DEFAULT_CONFIG, environ={}).partners.values())
