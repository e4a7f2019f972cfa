"""The ecosystem's transport envelope (DXP, 终端节点报文, hub/schemas/dxp/): a `DxpMsg` carries one business
message, base64 in `Data`; a `DxpRep` answers one (or more) of them.

Pure: bytes in, bytes or values out. Conventions seen in the field and followed here: MsgType is the business
message's root name (`CEB311Message`; ours `ECI101Message`), CopMsgId a UUID, CreatTime Beijing time to the second
without a zone (`2017-01-02T23:19:32`, as customs' own node writes it); any xs:dateTime is read.
"""

from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TypeVar

from lxml import etree

from hub.errors import (
    FIELD_INVALID,
    MAPPING_FAILED,
    SCHEMA_VIOLATION,
    UNKNOWN_MESSAGE_TYPE,
    UNKNOWN_NAMESPACE,
    FieldError,
    HubError,
)
from hub.mappers.fields import clip
from hub.mappers.hub_xml import parse_xml
from hub.models import ReturnStatus
from hub.models.base import BEIJING
from hub.schemas import CompiledSchema

DXP = "http://www.chinaport.gov.cn/dxp"
_VERSION = "1.0"
_CREAT_TIME = "%Y-%m-%dT%H:%M:%S"
_PREFIX = re.compile(r"(?<=/)[^/:\[]+:")
# The receipt ladder's codes that mean the partner took the message (DOMAIN.md §9).
SUCCESS_CODES = frozenset(str(s.value) for s in (ReturnStatus.RECEIVED, ReturnStatus.ACCEPTED,
                                                  ReturnStatus.CONCLUDED, ReturnStatus.FINAL))


@dataclass(frozen=True)
class TransInfo:
    """Who sends which message to whom (a DxpRep repeats it as OriHead)."""

    cop_msg_id: str
    sender_id: str
    receiver_ids: tuple[str, ...]
    created: datetime
    msg_type: str


@dataclass(frozen=True)
class BizKey:
    value: str
    name: str | None = None


@dataclass(frozen=True)
class AddInfo:
    file_name: str | None = None
    ic_card: str | None = None  # the E-Port card number (13 characters)
    biz_keys: tuple[BizKey, ...] = ()
    text_encoding: str | None = None  # IsText@Encode: Data is text in this character set
    rec_map_id: str | None = None


@dataclass(frozen=True)
class Envelope:
    """A DxpMsg read: its TransInfo, AddInfo and the business message it carries. `signed` says that it has a
    ds:Signature; checking it is hub/signing's work."""

    trans_info: TransInfo
    business_xml: bytes
    add_info: AddInfo | None = None
    signed: bool = False


@dataclass(frozen=True)
class ReceiverResult:
    receiver_id: str
    code: str
    info: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class DxpAnswer:
    """One Response of a DxpRep: what became of the envelope in `original`."""

    original: TransInfo
    code: str
    info: str | None
    results: tuple[ReceiverResult, ...]
    notice_date: date
    node_id: str | None = None
    note: str | None = None

    def succeeded(self, success_codes: frozenset[str] = SUCCESS_CODES) -> bool:
        """The envelope was taken, by the node and by every receiver it names."""
        return self.code in success_codes and all(r.code in success_codes for r in self.results)


@dataclass(frozen=True)
class DxpResponse:
    """A DxpRep read. `receiver_id` is its RecevierId (the publication's spelling): the node it answers."""

    receiver_id: str
    answers: tuple[DxpAnswer, ...]


class Dxp:
    """The envelope, checked against the compiled DXP schema (hub/schemas "dxp/1.0") both ways."""

    def __init__(self, schema: CompiledSchema) -> None:
        self.schema = schema

    # -- sending ----------------------------------------------------------------------------------------

    def wrap(
        self,
        business_xml: bytes,
        *,
        sender_id: str,
        receiver_ids: Sequence[str],
        msg_type: str,
        cop_msg_id: str,
        created: datetime,
        add_info: AddInfo | None = None,
    ) -> bytes:
        """A DxpMsg carrying `business_xml`; MAPPING_FAILED (naming the element) if it would break the schema."""
        root = _element("DxpMsg", ver=_VERSION)
        try:
            _trans_info(root, "TransInfo", TransInfo(cop_msg_id, sender_id, tuple(receiver_ids), created, msg_type))
            _child(root, "Data", base64.b64encode(business_xml).decode("ascii"))
            if add_info is not None:
                _add_info(root, add_info)
        except ValueError as exc:  # lxml refuses text that XML cannot carry (control characters)
            raise HubError(MAPPING_FAILED, f"DxpMsg: {exc}", message_type="DxpMsg") from exc
        return self._emit(root)

    def respond(self, received: TransInfo, *, notice_date: date, refusal: HubError | None = None) -> bytes:
        """The DxpRep answering the envelope `received`: taken (2, received) or, with `refusal`, refused (100)."""
        status = ReturnStatus.REJECTED if refusal else ReturnStatus.RECEIVED
        code = str(status.value)
        info = clip(str(refusal) if refusal else f"{received.msg_type} {received.cop_msg_id} received", 300)
        root = _element("DxpRep", ver=_VERSION)
        _child(root, "RecevierId", received.sender_id)
        response = _child(root, "Response")
        _child(response, "ResponseCode", code)
        _child(response, "ResponseInfo", info)
        results = _child(response, "Results")
        for receiver in received.receiver_ids:
            result = _child(results, "Result")
            _child(result, "RecId", receiver)
            _child(result, "Code", code)
            _child(result, "Info", info)
        _child(response, "NoticeTime", notice_date.isoformat())
        _trans_info(response, "OriHead", received)
        return self._emit(root)

    def _emit(self, root: etree._Element) -> bytes:
        problems = self.schema.problems(root)
        if problems:  # the hub's own fault: never send what the receiver must refuse
            first = problems[0]
            raise HubError(MAPPING_FAILED, f"{_local(root)} does not fit the DXP schema: {first.reason}",
                           _local_path(first.path), message_type=_local(root))
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)

    # -- receiving --------------------------------------------------------------------------------------

    def receive(self, raw: bytes) -> Envelope | DxpResponse:
        """Whatever a DXP partner sent: an envelope or an answer to one of the hub's."""
        root = self._checked(raw, ("DxpMsg", "DxpRep"))
        kind = _local(root)
        try:
            return _envelope(root) if kind == "DxpMsg" else _response(root)
        except HubError as err:  # say which it was: a refused DxpRep is never answered
            raise dataclasses.replace(err, message_type=err.message_type or kind) from None

    def unwrap(self, raw: bytes) -> Envelope:
        return _envelope(self._checked(raw, ("DxpMsg",)))

    def read_response(self, raw: bytes) -> DxpResponse:
        return _response(self._checked(raw, ("DxpRep",)))

    def trans_info_of(self, raw: bytes) -> TransInfo | None:
        """The TransInfo of an envelope that was refused, if it is whole and valid: what a refusing DxpRep needs."""
        try:
            root = parse_xml(raw)
        except HubError:
            return None
        found = root.find(f"{{{DXP}}}TransInfo") if root.tag == f"{{{DXP}}}DxpMsg" else None
        if found is None:
            return None
        alone = _element("DxpMsg", ver=_VERSION)  # the TransInfo in an otherwise minimal, valid envelope
        alone.append(copy.deepcopy(found))
        _child(alone, "Data", "")
        if self.schema.problems(alone):
            return None
        try:
            return _read_trans_info(found, "/DxpMsg/TransInfo")
        except HubError:
            return None

    def _checked(self, raw: bytes, expected: tuple[str, ...]) -> etree._Element:
        root = parse_xml(raw)
        qname = etree.QName(root)
        if qname.namespace != DXP:
            raise HubError(UNKNOWN_NAMESPACE,
                           f"root {qname.localname} is in namespace {qname.namespace!r}, not the envelope's {DXP!r}",
                           f"/{qname.localname}")
        if qname.localname not in expected:
            raise HubError(UNKNOWN_MESSAGE_TYPE, f"{qname.localname} is not {' or '.join(expected)}",
                           f"/{qname.localname}")
        problems = self.schema.problems(root)
        if problems:
            found = [FieldError(SCHEMA_VIOLATION.code, _local_path(p.path), p.reason) for p in problems]
            raise HubError(SCHEMA_VIOLATION, found[0].message, found[0].field, found, message_type=qname.localname)
        return root


# -- writing ---------------------------------------------------------------------------------------------


def _element(name: str, **attrib: str) -> etree._Element:
    return etree.Element(f"{{{DXP}}}{name}", attrib, nsmap={None: DXP})  # type: ignore[dict-item]


def _child(parent: etree._Element, tag: str, text: str | None = None, **attrib: str) -> etree._Element:
    child = etree.SubElement(parent, f"{{{DXP}}}{tag}", attrib)
    child.text = text
    return child


def _trans_info(parent: etree._Element, name: str, info: TransInfo) -> None:
    element = _child(parent, name)
    _child(element, "CopMsgId", info.cop_msg_id)
    _child(element, "SenderId", info.sender_id)
    receivers = _child(element, "ReceiverIds")
    for receiver in info.receiver_ids:
        _child(receivers, "ReceiverId", receiver)
    created = info.created if info.created.tzinfo else info.created.replace(tzinfo=BEIJING)
    _child(element, "CreatTime", created.astimezone(BEIJING).strftime(_CREAT_TIME))
    _child(element, "MsgType", info.msg_type)


def _add_info(parent: etree._Element, add: AddInfo) -> None:
    element = _child(parent, "AddInfo")
    if add.file_name is not None:
        _child(element, "FileName", add.file_name)
    if add.ic_card is not None:
        _child(element, "IcCard", add.ic_card)
    if add.biz_keys:
        keys = _child(element, "BizKey")
        for key in add.biz_keys:
            _child(keys, "Key", key.value, **({"name": key.name} if key.name is not None else {}))
    if add.text_encoding is not None:
        _child(element, "IsText", Encode=add.text_encoding)
    if add.rec_map_id is not None:
        _child(element, "RecMapId", add.rec_map_id)


# -- reading (of documents the schema has passed) ----------------------------------------------------------


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname


def _local_path(path: str) -> str:
    """xmlschema's path without the sender's namespace prefixes: `/DxpMsg/TransInfo/SenderId` however it was
    written."""
    return _PREFIX.sub("", path)


def _children(element: etree._Element) -> dict[str, list[etree._Element]]:
    found: dict[str, list[etree._Element]] = {}
    for child in element:
        if isinstance(child.tag, str):  # not a comment or processing instruction
            found.setdefault(_local(child), []).append(child)
    return found


def _value(element: etree._Element) -> str:
    return "".join(str(t) for t in element.itertext())  # a comment inside a value does not cut it short


def _optional(parts: dict[str, list[etree._Element]], name: str) -> str | None:
    return _value(parts[name][0]) if name in parts else None


_T = TypeVar("_T")


def _parsed(parse: Callable[[str], _T], text: str, path: str) -> _T:
    try:
        return parse(text.strip())
    except ValueError as exc:  # valid for the schema, but not for Python: 24:00:00, negative years
        raise HubError(FIELD_INVALID, f"{text!r} is not a time the hub can read: {exc}", path) from exc


def _read_trans_info(element: etree._Element, path: str) -> TransInfo:
    parts = _children(element)
    created = _parsed(datetime.fromisoformat, _value(parts["CreatTime"][0]), f"{path}/CreatTime")
    return TransInfo(
        cop_msg_id=_value(parts["CopMsgId"][0]),
        sender_id=_value(parts["SenderId"][0]),
        receiver_ids=tuple(_value(r) for r in _children(parts["ReceiverIds"][0])["ReceiverId"]),
        created=(created if created.tzinfo else created.replace(tzinfo=BEIJING)).astimezone(BEIJING),
        msg_type=_value(parts["MsgType"][0]),
    )


def _envelope(root: etree._Element) -> Envelope:
    parts = _children(root)
    trans_info = _read_trans_info(parts["TransInfo"][0], "/DxpMsg/TransInfo")
    try:
        business_xml = base64.b64decode("".join(_value(parts["Data"][0]).split()), validate=True)
    except binascii.Error as exc:  # libxml2 lets some non-base64 text pass as xs:base64Binary ("@@@@")
        raise HubError(SCHEMA_VIOLATION, f"Data is not base64: {exc}", "/DxpMsg/Data",
                       message_type="DxpMsg") from exc
    add_info = _read_add_info(parts["AddInfo"][0]) if "AddInfo" in parts else None
    return Envelope(trans_info, business_xml, add_info, signed="Signature" in parts)


def _read_add_info(element: etree._Element) -> AddInfo:
    parts = _children(element)
    keys = _children(parts["BizKey"][0])["Key"] if "BizKey" in parts else []
    return AddInfo(
        file_name=_optional(parts, "FileName"),
        ic_card=_optional(parts, "IcCard"),
        biz_keys=tuple(BizKey(_value(k), k.get("name")) for k in keys),
        text_encoding=parts["IsText"][0].get("Encode") if "IsText" in parts else None,
        rec_map_id=_optional(parts, "RecMapId"),
    )


def _response(root: etree._Element) -> DxpResponse:
    parts = _children(root)
    answers = []
    for n, response in enumerate(parts["Response"], start=1):
        path = f"/DxpRep/Response[{n}]"
        fields = _children(response)
        results = _children(fields["Results"][0])["Result"] if "Results" in fields else []
        answers.append(DxpAnswer(
            original=_read_trans_info(fields["OriHead"][0], f"{path}/OriHead"),
            code=_value(fields["ResponseCode"][0]),
            info=_optional(fields, "ResponseInfo"),
            results=tuple(_read_result(r) for r in results),
            # xs:date may carry a zone (2024-05-01+08:00): the day is what counts
            notice_date=_parsed(date.fromisoformat, _value(fields["NoticeTime"][0])[:10], f"{path}/NoticeTime"),
            node_id=_optional(fields, "NodeId"),
            note=_optional(fields, "Note"),
        ))
    return DxpResponse(_value(parts["RecevierId"][0]), tuple(answers))


def _read_result(element: etree._Element) -> ReceiverResult:
    parts = _children(element)
    return ReceiverResult(_value(parts["RecId"][0]), _value(parts["Code"][0]),
                          _optional(parts, "Info"), _optional(parts, "Note"))
