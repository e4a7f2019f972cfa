"""The hub's XML schemas (insurer eci/…, customs cus/…; DOMAIN.md "Our own schemas"): canonical ↔ PREFIXnnnMessage.

Element names are the canonical field names, so one walker maps every message type: the Head and Sender
blocks are the only parts with their own layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from types import UnionType
from typing import Any, Union, get_args, get_origin

from lxml import etree
from pydantic import BaseModel, ValidationError

from hub.errors import (
    FIELD_INVALID,
    MALFORMED_XML,
    MAPPING_FAILED,
    MESSAGE_EMPTY,
    SCHEMA_VIOLATION,
    UNKNOWN_MESSAGE_TYPE,
    UNKNOWN_NAMESPACE,
    FieldError,
    HubError,
)
from hub.mappers.fields import hub_error_from_validation, partner_names, readable_message_id
from hub.models import MESSAGE_TYPES, CanonicalMessage, Receipt
from hub.models.base import BEIJING
from hub.schemas import CompiledSchema

_APP_TIME = "%Y%m%d%H%M%S"
_HEAD_FIELDS = {"message_id", "created_at", "app_type"}  # written in Head; the sender in Sender
APP_STATUS_DECLARED = "2"

# No DTDs, no entities, no network: partner input is untrusted.
SAFE_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_comments=False
)
# The hub's own output, parsed back to be validated: trusted, and may be as large as its limits allow.
OWN_OUTPUT_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)


def parse_xml(raw: bytes) -> etree._Element:
    if not raw.strip():
        raise HubError(MESSAGE_EMPTY, "the file is empty")
    try:
        root = etree.fromstring(raw, SAFE_PARSER)
    except etree.XMLSyntaxError as exc:
        raise HubError(MALFORMED_XML, str(exc.msg)) from exc  # libxml2's text names line and column
    if root is None:
        raise HubError(MALFORMED_XML, "no root element")
    return root


class HubXml:
    """One of the hub's XML schemas (insurer or customs side): PREFIXnnnMessage, requests odd-numbered, the
    receipt answering nnn is nnn+1, and 900 answers what could not be read."""

    name = "xml"
    file_suffix = ".xml"

    def __init__(self, schema: CompiledSchema) -> None:
        self.schema = schema
        self.namespace = schema.source.namespace
        self.version = schema.source.version
        self.prefix = schema.source.prefix
        self.requests = {m.xml_code: m for m in MESSAGE_TYPES.values() if m.schema_name == schema.source.name}
        self.codes = {m.message_type: code for code, m in self.requests.items()}

    def root_code(self, message: CanonicalMessage) -> int:
        if isinstance(message, Receipt):
            answered = self.codes.get(message.ref_message_type or "")
            return answered + 1 if answered else Receipt.xml_code
        if message.message_type not in self.codes:
            raise HubError(MAPPING_FAILED, f"{message.message_type} is not carried by {self.namespace}")
        return self.codes[message.message_type]

    # -- canonical → XML --------------------------------------------------------------------------------

    def encode(self, message: CanonicalMessage) -> bytes:
        try:
            raw = self.to_text(message).encode()
            # The bytes as written are what is checked: parsed back, then held against the schema.
            root = etree.fromstring(raw, OWN_OUTPUT_PARSER)
        except (UnicodeEncodeError, etree.XMLSyntaxError) as exc:  # the models should have refused such text
            raise HubError(MAPPING_FAILED, f"{message.message_type} cannot be written as XML: {exc}") from exc
        problems = self.schema.problems(root)
        if problems:  # the hub's own fault: never send what the receiver must refuse
            raise HubError(
                MAPPING_FAILED,
                f"{message.message_type} does not fit {self.namespace}: {problems[0].reason}",
                problems[0].path,
            )
        return raw

    def to_text(self, message: CanonicalMessage) -> str:
        """The message as lxml's pretty print writes it (declaration, two-space indent), written directly:
        building an lxml tree element by element costs several times more."""
        data = message.model_dump(mode="json", by_alias=True, exclude_none=True, exclude=_HEAD_FIELDS)
        sender = data.pop("sender")
        head = {
            "guid": message.message_id,
            "appType": str(int(message.app_type)),
            "appTime": message.created_at.astimezone(BEIJING).strftime(_APP_TIME),
            "appStatus": APP_STATUS_DECLARED,
        }
        root = f"{self.prefix}{self.root_code(message)}Message"
        lines = [
            "<?xml version='1.0' encoding='UTF-8'?>",
            f'<{root} xmlns="{_attribute(self.namespace)}" guid="{_attribute(message.message_id)}"'
            f' version="{_attribute(self.version)}">',
        ]
        _write(lines, {"Head": head, message.message_type: data, "Sender": sender}, "  ")
        lines.append(f"</{root}>\n")
        return "\n".join(lines)

    def field_path(self, message_type: str, loc: Sequence[int | str]) -> str:
        root_path = f"/{self.prefix}{self.codes.get(message_type, Receipt.xml_code)}Message"
        return _xml_path(root_path, f"{root_path}/{message_type}", loc)

    # -- XML → canonical --------------------------------------------------------------------------------

    def _model_for_root(self, local_name: str) -> type[CanonicalMessage] | None:
        number = local_name.removeprefix(self.prefix).removesuffix("Message")
        if not (local_name.startswith(self.prefix) and local_name.endswith("Message") and number.isdigit()):
            return None
        code = int(number)
        if code == Receipt.xml_code or (code % 2 == 0 and code - 1 in self.requests):
            return Receipt
        return self.requests.get(code)

    def decode(self, raw: bytes) -> CanonicalMessage:
        return self.from_element(parse_xml(raw))

    def from_element(self, root: etree._Element) -> CanonicalMessage:
        qname = etree.QName(root)
        message_id = readable_message_id(root.get("guid"))
        if qname.namespace != self.namespace:
            raise HubError(
                UNKNOWN_NAMESPACE,
                f"root {qname.localname} is in namespace {qname.namespace!r}; this partner speaks {self.namespace!r}",
                f"/{qname.localname}",
                message_id=message_id,
            )
        model = self._model_for_root(qname.localname)
        message_type = model.message_type if model else None
        if model is None:
            raise HubError(
                UNKNOWN_MESSAGE_TYPE,
                f"{qname.localname} is not an insurer message of version {self.version}",
                f"/{qname.localname}",
                message_id=message_id,
            )
        problems = self.schema.problems(root)
        if problems:
            raise HubError(
                SCHEMA_VIOLATION,
                problems[0].reason,
                problems[0].path,
                [FieldError(SCHEMA_VIOLATION.code, p.path, p.reason) for p in problems],
                message_id=message_id,
                message_type=message_type,
            )
        children = {etree.QName(c).localname: c for c in root if isinstance(c.tag, str)}
        head = _to_dict(children["Head"], None)
        data: dict[str, Any] = _to_dict(children[model.message_type], model)
        data["messageId"] = head["guid"]
        data["appType"] = head["appType"]
        data["sender"] = _to_dict(children["Sender"], None)
        root_path = f"/{qname.localname}"
        try:
            data["createdAt"] = _app_time(head["appTime"])
        except ValueError as exc:
            raise HubError(
                FIELD_INVALID, f"appTime {head['appTime']!r} is not a real time: {exc}", f"{root_path}/Head/appTime",
                message_id=message_id, message_type=message_type,
            ) from exc
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            body_path = f"{root_path}/{model.message_type}"
            raise hub_error_from_validation(
                exc, lambda loc: _xml_path(root_path, body_path, loc), message_id=message_id, message_type=message_type
            ) from exc


_HEAD_PATHS = {"messageId": "Head/guid", "createdAt": "Head/appTime", "appType": "Head/appType", "sender": "Sender"}


def _app_time(text: str) -> datetime:
    """appTime (14 digits: the schema checked) as Beijing time, read by slicing: strptime costs several times
    more. Only strptime words the error when the digits are no real time."""
    try:
        return datetime(
            int(text[:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]), int(text[10:12]), int(text[12:]),
            tzinfo=BEIJING,
        )
    except ValueError:
        return datetime.strptime(text, _APP_TIME).replace(tzinfo=BEIJING)


def _xml_path(root_path: str, body_path: str, loc: Sequence[int | str]) -> str:
    """pydantic's error location (aliases, list indexes from 0) as an XPath (positions from 1)."""
    if loc and loc[0] in _HEAD_PATHS:
        base, rest = f"{root_path}/{_HEAD_PATHS[str(loc[0])]}", loc[1:]
    else:
        base, rest = body_path, loc
    parts: list[str] = []
    for part in partner_names(rest):
        if isinstance(part, int) and parts:
            parts[-1] += f"[{part + 1}]"
        else:
            parts.append(str(part))
    return "/".join([base, *parts])


_TEXT_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("\r", "&#13;"))
_ATTRIBUTE_ESCAPES = (*_TEXT_ESCAPES, ('"', "&quot;"), ("\n", "&#10;"), ("\t", "&#9;"))


def _escape(text: str, escapes: tuple[tuple[str, str], ...]) -> str:
    for char, reference in escapes:  # "&" first
        text = text.replace(char, reference)
    return text


def _attribute(value: str) -> str:
    return _escape(value, _ATTRIBUTE_ESCAPES)


def _write(lines: list[str], data: dict[str, Any], indent: str) -> None:
    """Each key an element (a list: one element per item), nested dicts indented; texts escaped as libxml2
    escapes them, so that the result is byte for byte what lxml would serialise. (Exact class tests first:
    this loop is most of the time encode spends in Python.)"""
    deeper = indent + "  "
    for key, value in data.items():
        for item in value if value.__class__ is list else (value,):
            if item.__class__ is dict:
                if not item:
                    lines.append(f"{indent}<{key}/>")
                    continue
                lines.append(f"{indent}<{key}>")
                _write(lines, item, deeper)
                lines.append(f"{indent}</{key}>")
                continue
            if item.__class__ is str:
                text = item
            elif item.__class__ is bool:
                text = "true" if item else "false"
            else:
                text = str(item)
            if "&" in text or "<" in text or ">" in text or "\r" in text:
                text = _escape(text, _TEXT_ESCAPES)
            lines.append(f"{indent}<{key}>{text}</{key}>")


def _to_dict(element: etree._Element, model: type[BaseModel] | None) -> dict[str, Any]:
    """Element children as a dict by local name; the model says which are repeated and which are nested."""
    shape = _shape(model) if model else {}
    out: dict[str, Any] = {}
    for child in element:
        tag = child.tag
        if not isinstance(tag, str):
            continue  # comments and processing instructions
        name = tag[tag.find("}") + 1 :]  # the local name (etree.QName costs more than the rest of the walk)
        if name == "Signature":
            continue
        repeated, nested = shape.get(name, (False, None))
        value = _to_dict(child, nested) if nested else (child.text or "")
        if repeated:
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
    return out


@cache
def _shape(model: type[BaseModel]) -> dict[str, tuple[bool, type[BaseModel] | None]]:
    shape = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        while get_origin(annotation) in (Union, UnionType):  # Optional[X]
            annotation = next(a for a in get_args(annotation) if a is not type(None))
        repeated = get_origin(annotation) in (list, tuple)
        if repeated:
            annotation = get_args(annotation)[0]
        nested = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        shape[info.alias or name] = (repeated, nested)
    return shape
