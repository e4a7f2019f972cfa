"""The DXP envelope: what the hub wraps comes back whole, validates for libxml2 (through the registry) and for
xmllint, and what is wrong in a received envelope is refused with a stable code and the element's path."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from hub.errors import FIELD_INVALID, HubError
from hub.mappers.dxp import AddInfo, BizKey, Dxp, DxpResponse, Envelope, TransInfo
from hub.models.base import BEIJING
from hub.schemas import DXP_1_0, SchemaRegistry
from tests.conftest import needs
from tests.test_reference_schemas import REFERENCE_DXP_XSD

DXP = Dxp(SchemaRegistry([DXP_1_0]).get("dxp/1.0"))
PROPERTIES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

HUB_ID, INSURER_ID, CUSTOMS_ID = "DXPHUB0000000001", "DXPINS0000000001", "DXPEDCCEB0000002"
BUSINESS_XML = "<?xml version='1.0' encoding='UTF-8'?>\n<ECI101Message>投保单</ECI101Message>\n".encode()
CREATED = datetime(2024, 5, 1, 10, 0, 0, tzinfo=BEIJING)
TRANS_INFO = TransInfo("0A1B2C3D-0000-4000-8000-000000000001", HUB_ID, (INSURER_ID,), CREATED, "ECI101Message")


def wrap(business_xml: bytes = BUSINESS_XML, info: TransInfo = TRANS_INFO, add_info: AddInfo | None = None) -> bytes:
    return DXP.wrap(business_xml, sender_id=info.sender_id, receiver_ids=info.receiver_ids, msg_type=info.msg_type,
                    cop_msg_id=info.cop_msg_id, created=info.created, add_info=add_info)


# XML 1.0 text: no control characters, surrogates or non-characters.
def xml_text(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(st.characters(exclude_categories=("Cc", "Cs", "Cn")), min_size=min_size, max_size=max_size)


TRANS_INFOS = st.builds(
    TransInfo,
    cop_msg_id=st.uuids().map(lambda u: str(u).upper()) | xml_text(1, 255),
    sender_id=xml_text(1, 16),
    receiver_ids=st.lists(xml_text(1, 16), min_size=1, max_size=5).map(tuple),
    created=st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31), timezones=st.sampled_from([BEIJING, UTC]))
    .map(lambda t: t.replace(microsecond=0)),  # CreatTime is written to the second
    msg_type=xml_text(0, 30),
)
ADD_INFOS = st.none() | st.builds(
    AddInfo,
    file_name=st.none() | xml_text(1, 255),
    ic_card=st.none() | xml_text(1, 13),
    biz_keys=st.lists(st.builds(BizKey, xml_text(1, 64), st.none() | xml_text(1, 32)), max_size=5).map(tuple),
    text_encoding=st.none() | xml_text(0, 50),
    rec_map_id=st.none() | xml_text(0, 40),
)


@PROPERTIES
@given(st.binary(max_size=2000), TRANS_INFOS, ADD_INFOS)
def test_wrap_then_unwrap_gives_back_the_business_bytes_and_trans_info(
    business: bytes, info: TransInfo, add_info: AddInfo | None
) -> None:
    raw = wrap(business, info, add_info)
    assert DXP.schema.problems(etree.fromstring(raw)) == []
    assert DXP.unwrap(raw) == Envelope(info, business, add_info)


@PROPERTIES
@given(TRANS_INFOS, st.dates(date(2000, 1, 1), date(2099, 12, 31)), st.none() | xml_text(1, 2000))
def test_a_dxp_rep_the_hub_writes_reads_back(info: TransInfo, day: date, refused_because: str | None) -> None:
    refusal = HubError(FIELD_INVALID, refused_because, "/DxpMsg/Data") if refused_because else None
    response = DXP.read_response(DXP.respond(info, notice_date=day, refusal=refusal))
    assert response.receiver_id == info.sender_id
    (answer,) = response.answers
    assert (answer.original, answer.notice_date) == (info, day)
    assert [r.receiver_id for r in answer.results] == list(info.receiver_ids)
    assert answer.succeeded() is (refusal is None)
    assert answer.code == ("100" if refusal else "2")


def emitted(tmp: Path) -> list[str]:
    """One of each thing the hub emits: envelopes plain and full, answers taken and refused."""
    five = TransInfo("C" * 255, "S" * 16, tuple(f"R{n}" for n in range(5)), CREATED, "M" * 30)
    full = AddInfo("ECI101Message_0A1B2C3D.xml", "1234567890123", (BizKey("PN2024000001", "proposalNo"), BizKey("k")),
                   "UTF-8", "MAP1")
    documents = {
        "plain": wrap(),
        "five-receivers": wrap(b"", five),
        "full-add-info": wrap(add_info=full),
        "taken": DXP.respond(TRANS_INFO, notice_date=date(2024, 5, 1)),
        "refused": DXP.respond(five, notice_date=date(2024, 5, 1),
                               refusal=HubError(FIELD_INVALID, "x\x01" * 400, "/DxpMsg/Data")),
    }
    for name, raw in documents.items():
        (tmp / f"{name}.xml").write_bytes(raw)
    return [str(tmp / f"{name}.xml") for name in documents]


@pytest.mark.parametrize("schema", [DXP_1_0.path, REFERENCE_DXP_XSD], ids=["hub-copy", "reference"])
def test_what_the_hub_emits_validates_with_xmllint(tmp_path: Path, schema: Path) -> None:
    needs(shutil.which("xmllint") is not None, "xmllint (Debian libxml2-utils) is not installed")
    needs(schema.exists(), f"the reference schemas are not beside the project ({schema.parent})")
    files = emitted(tmp_path)
    for path in files:
        assert DXP.schema.problems(etree.parse(path).getroot()) == [], path
    done = subprocess.run(["xmllint", "--noout", "--schema", str(schema), *files], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(" validates") == len(files)


def replaced(old: bytes, new: bytes, raw: bytes | None = None) -> bytes:
    raw = wrap() if raw is None else raw
    assert old in raw, old
    return raw.replace(old, new)


# As customs' own node and enterprise software write it (public code): a dxp: prefix, xsi declared, times with and
# without a zone. The content is invented.
FIELD_STYLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<dxp:DxpMsg xmlns:dxp="http://www.chinaport.gov.cn/dxp" xmlns:ds="http://www.w3.org/2000/09/xmldsig#"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ver="1.0">
  <dxp:TransInfo>
    <dxp:CopMsgId>704ea0f1-b229-4e89-9f2f-c2e550e95c86</dxp:CopMsgId>
    <dxp:SenderId>DXPEDCCEB0000002</dxp:SenderId>
    <dxp:ReceiverIds><dxp:ReceiverId>DXPHUB0000000001</dxp:ReceiverId></dxp:ReceiverIds>
    <dxp:CreatTime>2019-10-08T14:13:41.141+08:00</dxp:CreatTime>
    <dxp:MsgType>CEB312Message</dxp:MsgType>
  </dxp:TransInfo>
  <dxp:Data>
    PENFQjMxMk1lc3NhZ2UgeG1sbnM9Imh0dHA6Ly93d3cuY2hpbmFwb3J0Lmdvdi5jbi9jZWIiLz4=
  </dxp:Data>
  <dxp:AddInfo><dxp:FileName>CEB312_<!-- a comment inside a value -->001.xml</dxp:FileName></dxp:AddInfo>
  <ds:Signature>
    <ds:SignedInfo>
      <ds:CanonicalizationMethod Algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315"/>
      <ds:SignatureMethod Algorithm="http://www.w3.org/2000/09/xmldsig#rsa-sha1"/>
      <ds:Reference URI="">
        <ds:DigestMethod Algorithm="http://www.w3.org/2000/09/xmldsig#sha1"/>
        <ds:DigestValue>AAAA</ds:DigestValue>
      </ds:Reference>
    </ds:SignedInfo>
    <ds:SignatureValue>AAAA</ds:SignatureValue>
  </ds:Signature>
</dxp:DxpMsg>
"""


def test_an_envelope_written_the_way_the_field_does_is_read() -> None:
    envelope = DXP.unwrap(FIELD_STYLE)
    assert envelope.trans_info == TransInfo(
        "704ea0f1-b229-4e89-9f2f-c2e550e95c86", CUSTOMS_ID, (HUB_ID,),
        datetime(2019, 10, 8, 14, 13, 41, 141000, tzinfo=BEIJING), "CEB312Message",
    )
    assert envelope.business_xml == b'<CEB312Message xmlns="http://www.chinaport.gov.cn/ceb"/>'
    assert envelope.add_info == AddInfo(file_name="CEB312_001.xml")
    assert envelope.signed
    without_zone = DXP.unwrap(replaced(b"2019-10-08T14:13:41.141+08:00", b"2017-01-02T23:19:32", FIELD_STYLE))
    assert without_zone.trans_info.created == datetime(2017, 1, 2, 23, 19, 32, tzinfo=BEIJING)
    in_utc = DXP.unwrap(replaced(b"2019-10-08T14:13:41.141+08:00", b"2019-10-08T06:13:41Z", FIELD_STYLE))
    assert in_utc.trans_info.created == datetime(2019, 10, 8, 14, 13, 41, tzinfo=BEIJING)


@pytest.mark.parametrize(("raw", "code", "field"), [
    pytest.param(b"", "MESSAGE_EMPTY", "", id="empty"),
    pytest.param(wrap()[:200], "MALFORMED_XML", "", id="cut-off"),
    pytest.param(BUSINESS_XML, "UNKNOWN_NAMESPACE", "/ECI101Message", id="not-in-an-envelope"),
    pytest.param(replaced(b' xmlns="http://www.chinaport.gov.cn/dxp"', b""), "UNKNOWN_NAMESPACE", "/DxpMsg",
                 id="no-namespace"),
    pytest.param(DXP.respond(TRANS_INFO, notice_date=date(2024, 5, 1)), "UNKNOWN_MESSAGE_TYPE", "/DxpRep",
                 id="an-answer-not-an-envelope"),
    pytest.param(replaced(b'ver="1.0"', b'ver="2.0"'), "SCHEMA_VIOLATION", "/DxpMsg", id="version"),
    pytest.param(replaced(HUB_ID.encode(), HUB_ID.encode() + b"X"), "SCHEMA_VIOLATION", "/DxpMsg/TransInfo/SenderId",
                 id="sender-id-17"),
    pytest.param(replaced(b"<dxp:SenderId>DXPEDCCEB0000002<", b"<dxp:SenderId>DXPEDCCEB00000020<", FIELD_STYLE),
                 "SCHEMA_VIOLATION", "/DxpMsg/TransInfo/SenderId", id="sender-id-17-with-prefix"),
    pytest.param(replaced(b"<ReceiverId>", b"<ReceiverId>R</ReceiverId>" * 5 + b"<ReceiverId>"), "SCHEMA_VIOLATION",
                 "/DxpMsg/TransInfo/ReceiverIds", id="six-receivers"),
    pytest.param(replaced(b"2024-05-01T10:00:00", b"2024-05-01 10:00:00"), "SCHEMA_VIOLATION",
                 "/DxpMsg/TransInfo/CreatTime", id="creat-time-not-xs-datetime"),
    pytest.param(replaced(b"2024-05-01T10:00:00", b"2024-05-01T24:00:00"), "FIELD_INVALID",
                 "/DxpMsg/TransInfo/CreatTime", id="creat-time-24h"),
    pytest.param(replaced(b"<Data>", b"<Data>Q"), "SCHEMA_VIOLATION", "/DxpMsg/Data", id="data-bad-length"),
    pytest.param(replaced(b"<Data>", b"<Data>@@@@"), "SCHEMA_VIOLATION", "/DxpMsg/Data",
                 id="data-not-base64-which-libxml2-passes"),
])
def test_a_bad_envelope_is_refused_with_its_code_and_element(raw: bytes, code: str, field: str) -> None:
    with pytest.raises(HubError) as caught:
        DXP.unwrap(raw)
    assert (caught.value.code, caught.value.field) == (code, field), caught.value
    assert caught.value.disposition.value == "reject"


@pytest.mark.parametrize(("changes", "field"), [
    ({"sender_id": HUB_ID + "X"}, "/DxpMsg/TransInfo/SenderId"),
    ({"receiver_ids": ()}, "/DxpMsg/TransInfo/ReceiverIds"),
    ({"receiver_ids": ("R",) * 6}, "/DxpMsg/TransInfo/ReceiverIds"),
    ({"msg_type": "M" * 31}, "/DxpMsg/TransInfo/MsgType"),
    ({"msg_type": "ECI\x01"}, ""),  # text XML cannot carry
])
def test_the_hub_never_emits_an_envelope_that_breaks_the_schema(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(HubError) as caught:
        wrap(info=TransInfo(**{**TRANS_INFO.__dict__, **changes}))
    assert (caught.value.code, caught.value.field) == ("MAPPING_FAILED", field)


def test_a_refused_envelope_is_answered_with_a_dxp_rep_naming_the_fault() -> None:
    bad = replaced(b"<Data>", b"<Data>@@@@")
    with pytest.raises(HubError) as caught:
        DXP.unwrap(bad)
    received = DXP.trans_info_of(bad)
    assert received == TRANS_INFO
    answer = DXP.read_response(DXP.respond(received, notice_date=date(2024, 5, 1), refusal=caught.value)).answers[0]
    assert not answer.succeeded()
    assert answer.code == "100" and answer.info is not None
    assert answer.info.startswith("SCHEMA_VIOLATION at /DxpMsg/Data: Data is not base64")


@pytest.mark.parametrize("raw", [
    b"<DxpMsg",
    BUSINESS_XML,
    replaced(HUB_ID.encode(), HUB_ID.encode() + b"X"),
    replaced(b"<CreatTime>2024-05-01T10:00:00</CreatTime>", b""),
    replaced(b"2024-05-01T10:00:00", b"2024-05-01T24:00:00"),
], ids=["malformed", "no-envelope", "sender-id-17", "no-creat-time", "creat-time-24h"])
def test_no_dxp_rep_can_answer_an_envelope_whose_trans_info_is_unreadable(raw: bytes) -> None:
    assert DXP.trans_info_of(raw) is None


PARTNER_REP = b"""<?xml version="1.0" encoding="UTF-8"?>
<dxp:DxpRep xmlns:dxp="http://www.chinaport.gov.cn/dxp" ver="1.0">
  <dxp:RecevierId>DXPHUB0000000001</dxp:RecevierId>
  <dxp:Response>
    <dxp:NodeId>INS00001</dxp:NodeId>
    <dxp:ResponseCode>2</dxp:ResponseCode>
    <dxp:ResponseInfo>received</dxp:ResponseInfo>
    <dxp:Results>
      <dxp:Result><dxp:RecId>DXPINS0000000001</dxp:RecId><dxp:Code>2</dxp:Code></dxp:Result>
      <dxp:Result><dxp:RecId>DXPINS0000000002</dxp:RecId><dxp:Code>-1</dxp:Code><dxp:Info>unknown receiver</dxp:Info>
        <dxp:Note>no such node</dxp:Note></dxp:Result>
    </dxp:Results>
    <dxp:NoticeTime>2024-05-01+08:00</dxp:NoticeTime>
    <dxp:Note>one receiver failed</dxp:Note>
    <dxp:OriHead>
      <dxp:CopMsgId>0A1B2C3D-0000-4000-8000-000000000001</dxp:CopMsgId>
      <dxp:SenderId>DXPHUB0000000001</dxp:SenderId>
      <dxp:ReceiverIds><dxp:ReceiverId>DXPINS0000000001</dxp:ReceiverId>
        <dxp:ReceiverId>DXPINS0000000002</dxp:ReceiverId></dxp:ReceiverIds>
      <dxp:CreatTime>2024-05-01T10:00:00</dxp:CreatTime>
      <dxp:MsgType>ECI101Message</dxp:MsgType>
    </dxp:OriHead>
  </dxp:Response>
  <dxp:Response>
    <dxp:ResponseCode>0</dxp:ResponseCode>
    <dxp:NoticeTime>2024-05-02</dxp:NoticeTime>
    <dxp:OriHead>
      <dxp:CopMsgId>0A1B2C3D-0000-4000-8000-000000000002</dxp:CopMsgId>
      <dxp:SenderId>DXPHUB0000000001</dxp:SenderId>
      <dxp:ReceiverIds><dxp:ReceiverId>DXPINS0000000001</dxp:ReceiverId></dxp:ReceiverIds>
      <dxp:CreatTime>2024-05-01T10:00:01</dxp:CreatTime>
      <dxp:MsgType>ECI107Message</dxp:MsgType>
    </dxp:OriHead>
  </dxp:Response>
</dxp:DxpRep>
"""


def test_a_partners_dxp_rep_says_which_envelope_and_whether_it_was_taken() -> None:
    response = DXP.read_response(PARTNER_REP)
    assert response.receiver_id == HUB_ID
    first, second = response.answers
    assert first.original.cop_msg_id == TRANS_INFO.cop_msg_id
    assert (first.node_id, first.note, first.notice_date) == ("INS00001", "one receiver failed", date(2024, 5, 1))
    assert [(r.receiver_id, r.code, r.info, r.note) for r in first.results] == [
        ("DXPINS0000000001", "2", None, None), ("DXPINS0000000002", "-1", "unknown receiver", "no such node")]
    assert not first.succeeded()  # one receiver refused it
    assert second.original.msg_type == "ECI107Message"
    assert not second.succeeded()  # 0 is not on the hub's ladder...
    assert second.succeeded(frozenset({"0"}))  # ...unless the partner's success codes say so


def test_receive_tells_an_envelope_from_an_answer() -> None:
    assert isinstance(DXP.receive(wrap()), Envelope)
    assert isinstance(DXP.receive(PARTNER_REP), DxpResponse)
    unprefixed = PARTNER_REP.replace(b"dxp:", b"").replace(b"xmlns:dxp=", b"xmlns=")
    with pytest.raises(HubError) as caught:
        DXP.receive(replaced(b"<ResponseCode>0</ResponseCode>", b"<ResponseCode/>", unprefixed))
    assert (caught.value.code, caught.value.field) == ("SCHEMA_VIOLATION", "/DxpRep/Response[2]/ResponseCode")
    assert caught.value.message_type == "DxpRep"  # so the pipeline never answers an answer
