"""Hypothesis strategies for canonical messages, built from each model's JSON Schema.

Patterns, lengths, enums and bounds come from the schema; identifiers with check characters and code lists
come from the strategies below (keyed by the schema's pattern or description), and a few cross-field rules
are made to hold by `_settle`, so that nearly every example is a valid message.
"""

from __future__ import annotations

import base64
import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from hub.codelists import code_list
from hub.identifiers import USCC_CHARSET, org_code_check_char, uscc_check_char
from hub.models import MESSAGE_TYPES, CanonicalMessage
from hub.models.base import BEIJING

ORG_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Text with what real messages carry: Chinese, Latin, digits, XML's special characters.
TEXT_ALPHABET = st.sampled_from(list("义乌市启航贸易有限公司出口信用保险买方拖欠货款abcXYZ019 &<>'\"-_.,()（）"))


def text(min_size: int = 1, max_size: int = 40) -> st.SearchStrategy[str]:
    return st.text(TEXT_ALPHABET, min_size=min_size, max_size=max_size).map(str.strip).filter(
        lambda t: len(t) >= min_size
    )


@st.composite
def org_codes(draw: st.DrawFn) -> str:
    body = draw(st.text(ORG_CHARS, min_size=8, max_size=8))
    return body + org_code_check_char(body)


@st.composite
def usccs(draw: st.DrawFn) -> str:
    """A USCC whose positions 9-17 are a valid organisation code made only of USCC characters."""
    body = draw(st.text(USCC_CHARSET.replace("X", ""), min_size=8, max_size=8).filter(
        lambda b: org_code_check_char(b) in USCC_CHARSET))
    first17 = draw(st.sampled_from(["91", "92", "93", "12"])) + draw(st.text("0123456789", min_size=6, max_size=6))
    first17 += body + org_code_check_char(body)
    return first17 + uscc_check_char(first17)


chinese = st.text(st.sampled_from(list("买方拖欠货款至今未付经多次催收无果故申请索赔货物已于出运")), min_size=20,
                  max_size=60)
times = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31)).map(
    lambda d: d.replace(tzinfo=BEIJING, microsecond=0)
)

# Identifiers whose rules a regular expression cannot carry, by the pattern the JSON Schema shows.
BY_PATTERN: dict[str, st.SearchStrategy[Any]] = {
    "^[0-9A-HJ-NP-RTUW-Y]{18}$": usccs(),
    "^[0-9A-Z]{8}[0-9X]$": org_codes(),
    "^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$": st.uuids().map(lambda u: str(u).upper()),
    # Both an export declaration number (office, year, 0, serial) and an inquiry serial (year, sequence).
    "^[0-9]{18}$": st.from_regex(r"\A20[0-9]{2}20[0-9]{2}0[0-9]{9}\Z"),
    "^1[3-9][0-9]{9}$": st.from_regex(r"\A1[3-9][0-9]{9}\Z"),
}
BY_NAME: dict[str, st.SearchStrategy[Any]] = {
    "phone": st.from_regex(r"\A0[0-9]{2,3}-[0-9]{7,8}\Z"),
    "landline": st.from_regex(r"\A0[0-9]{2,3}-[0-9]{7,8}\Z"),
    "email": st.from_regex(r"\A[a-z0-9]{1,12}(\.[a-z0-9]{1,8})?@[a-z0-9]{1,10}\.(cn|com|example)\Z"),
    "claimReason": chinese,
    "caseDescription": chinese,
    "createdAt": times,
    "returnTime": times.map(lambda t: t.strftime("%Y%m%d%H%M%S") + "123"),
    "content": st.binary(max_size=100).map(lambda b: base64.b64encode(b"%PDF-1.4\n" + b).decode()),
    "contentAttachment": st.binary(max_size=100).map(lambda b: base64.b64encode(b).decode()),
}
_CODE_LIST = re.compile(r"a code from the (.+) code list")


def _from_schema(prop: dict[str, Any], defs: dict[str, Any], name: str, required: bool) -> st.SearchStrategy[Any]:
    if "anyOf" in prop and {"type": "null"} in prop["anyOf"]:
        rest = next(o for o in prop["anyOf"] if o != {"type": "null"})
        inner = _from_schema({**rest, **{k: v for k, v in prop.items() if k != "anyOf"}}, defs, name, True)
        return st.none() | inner
    if "$ref" in prop:
        target = defs[prop["$ref"].rsplit("/", 1)[-1]]
        if "enum" in target:
            return st.sampled_from(target["enum"])
        return _object(target, defs)
    if name in BY_NAME:
        return BY_NAME[name]
    if "anyOf" in prop:  # Decimal
        low = Decimal(str(prop.get("exclusiveMinimum", prop.get("minimum", 0)))) + Decimal("0.01")
        return st.decimals(min_value=low, max_value=Decimal("99999999.99"), places=2).map(str)
    match prop.get("type"):
        case "boolean":
            return st.booleans()
        case "integer":
            return st.integers(prop.get("minimum", 0), prop.get("maximum", 10_000))
        case "array":
            item = _from_schema(prop["items"], defs, name, True)
            return st.lists(item, min_size=prop.get("minItems", 0), max_size=min(prop.get("maxItems", 3), 3))
    if prop.get("pattern") in BY_PATTERN:
        return BY_PATTERN[prop["pattern"]]
    listed = _CODE_LIST.match(prop.get("description", ""))
    if listed:
        return st.sampled_from(sorted(code_list(listed.group(1))))
    if "enum" in prop:
        return st.sampled_from(prop["enum"])
    fmt = prop.get("format")
    if fmt == "date":
        return st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 12, 31)).map(str)
    if fmt == "date-time":
        return times.map(datetime.isoformat)
    if fmt == "base64":
        return BY_NAME["content"]
    if "pattern" in prop:
        return st.from_regex(re.compile(prop["pattern"].replace("^", r"\A", 1).removesuffix("$") + r"\Z"))
    return text(prop.get("minLength", 1), min(prop.get("maxLength", 40), 40))


def _object(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    required = set(schema.get("required", []))
    fields = {
        name: _from_schema(prop, defs, name, name in required)
        for name, prop in schema["properties"].items()
    }
    return st.fixed_dictionaries(fields).map(_settle)


def _settle(data: dict[str, Any]) -> dict[str, Any]:
    """Make the cross-field rules hold that random values would almost never meet."""
    if "uscc" in data and "orgCode" in data:
        data["orgCode"] = data["uscc"][8:17]
    for low, high in (("validFrom", "validTo"),):
        if low in data and high in data and data[high] <= data[low]:
            data[low], data[high] = data[high], data[low]
            if data[low] == data[high]:
                data[high] = str(date.fromisoformat(data[high]).replace(year=date.fromisoformat(data[high]).year + 1))
    if "invoiceAmountUsd" in data and "claimAmountUsd" in data:
        data["claimAmountUsd"] = data["invoiceAmountUsd"]
    if "goods" in data and "totalAmountUsd" in data:
        data["totalAmountUsd"] = str(sum((Decimal(g["amountUsd"]) for g in data["goods"]), Decimal(0)))
        data["totalPieces"] = sum(g["quantity"] for g in data["goods"])
        for n, line in enumerate(data["goods"], 1):
            line["lineNo"] = n
    if "sealType" in data:
        data["sealType"] = "company"
    for optional_text in ("reason", "returnReason", "body", "otherNeeds"):
        if optional_text in data and data[optional_text] is None:
            data[optional_text] = "说明原因"
    if "dataKinds" in data:
        data["dataKinds"] = list(dict.fromkeys(data["dataKinds"]))
    if "listed" in data and "new" in data and (data["listed"] is None) == (data["new"] is None):
        data["new"] = None if data["listed"] else {"englishName": "NEW BUYER", "country": "502",
                                                   "englishAddress": "1 MAIN ST"}
    for flag, value in (("declarationAccepted", True), ("sealed", True), ("signedWith", "legal-person"),
                        ("confirmedWith", "legal-person")):
        if flag in data:
            data[flag] = value
    return data


def _message_fixups(model: type[CanonicalMessage], data: dict[str, Any]) -> dict[str, Any]:
    if model.message_type == "ClaimApplication":
        flags = data["caseFlags"]
        data["financing"] = data["financing"] if flags["tradeFinancing"] else None
        if flags["tradeFinancing"] and data["financing"] is None:
            flags["tradeFinancing"] = False
        if flags["letterOfCredit"] and not any(b["role"] == "issuing" for b in data["banks"]):
            flags["letterOfCredit"] = False
        invoices = [s["invoiceNo"] for s in data["shipments"]]
        for n, attachment in enumerate(data["attachments"]):
            attachment["invoiceNo"] = invoices[n % len(invoices)]
    if model.message_type == "AuthorizedDataStatistics":
        data["period"] = str(data["createdAt"])[:{"day": 10, "month": 7, "year": 4}[data["frequency"]]]
        data["counts"] = list({count["dataKind"]: count for count in data["counts"]}.values())
    if model.message_type == "AgreementSignRequest":
        data["seal"]["validTo"] = "2099-12-31"
    if model.message_type == "TradeRegistration":
        if data["tradeCompany"] is None:
            data["mode"] = "purchaser-direct"
        elif data["mode"] == "purchaser-direct":
            data["tradeCompany"] = None
    if model.message_type == "CustomsRecordAnswer":
        for answer in data["answers"]:
            _one_record(answer, data["enterprise"]["uscc"])
    return data


_RECORD_FIELDS = {"declaration": "declaration", "bill-of-lading": "billOfLading",
                  "certificate-of-origin": "certificateOfOrigin"}


def _one_record(answer: dict[str, Any], owner: str) -> None:
    """A found document carries its own record, numbered and owned as the answer says; others carry none."""
    own = _RECORD_FIELDS[answer["kind"]]
    record = answer[own]
    for field in _RECORD_FIELDS.values():
        answer[field] = None
    if answer["result"] != "found" or record is None:
        answer["result"] = "not-found" if answer["result"] == "found" else answer["result"]
        return
    answer[own] = record
    if own == "declaration":
        record["DecHead"]["TradeCode"] = owner
        answer["number"] = record["DecHead"]["EntryId"]
    elif own == "billOfLading":
        record["ShipperCode"] = owner
        answer["number"] = record["BillNo"]
    else:
        record["ExporterCode"] = owner
        answer["number"] = record["CertificateNo"]


def messages_of(model: type[CanonicalMessage]) -> st.SearchStrategy[CanonicalMessage]:
    schema = model.model_json_schema(by_alias=True)
    defs = schema.get("$defs", {})
    return _object(schema, defs).map(lambda d: _message_fixups(model, d)).map(_validated(model)).filter(
        lambda m: m is not None
    )


def _validated(model: type[CanonicalMessage]) -> Any:
    def validate(data: dict[str, Any]) -> CanonicalMessage | None:
        try:
            return model.model_validate(data)
        except ValueError:
            return None

    return validate


ALL_MESSAGES = st.one_of([messages_of(model) for model in MESSAGE_TYPES.values()])
