"""Hypothesis strategies for canonical messages: invented but valid (check characters computed)."""

from __future__ import annotations

import base64
from datetime import date, datetime, timedelta
from decimal import Decimal

from hypothesis import strategies as st

from hub.identifiers import USCC_CHARSET, org_code_check_char, uscc_check_char
from hub.models import (
    ApplicationReturned,
    InsuranceApplication,
    PendingPolicy,
    PolicyIssued,
    PolicyReceipt,
    Receipt,
)
from hub.models.base import BEIJING

ORG_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Text with what real messages carry: Chinese, Latin, digits, XML's special characters.
TEXT_ALPHABET = st.sampled_from(list("义乌市启航贸易有限公司出口信用保险abcXYZ019 &<>'\"-_.,()（）"))


def text(min_size: int = 1, max_size: int = 40) -> st.SearchStrategy[str]:
    return st.text(TEXT_ALPHABET, min_size=min_size, max_size=max_size).map(str.strip).filter(bool)


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


message_ids = st.uuids().map(lambda u: str(u).upper())
times = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 12, 31)).map(
    lambda d: d.replace(tzinfo=BEIJING)
)
dates = st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 12, 31))
doc_nos = st.from_regex(r"[A-Z0-9-]{6,30}", fullmatch=True)
pdfs = st.binary(max_size=200).map(lambda b: base64.b64encode(b"%PDF-1.4\n" + b))
mobiles = st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True)
landlines = st.from_regex(r"0[0-9]{2,3}-[0-9]{7,8}", fullmatch=True)
emails = st.from_regex(r"[a-z0-9]{1,12}(\.[a-z0-9]{1,8})?@[a-z0-9]{1,10}\.(cn|com|example)", fullmatch=True)


@st.composite
def enterprises(draw: st.DrawFn) -> dict:
    uscc = draw(usccs())
    return {"name": draw(text()), "uscc": uscc, "orgCode": uscc[8:17]}


def _insurers() -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({"name": text(), "institutionCode": st.from_regex(r"[0-9A-Z]{4,18}", fullmatch=True)})


def _head() -> dict:
    return {
        "messageId": message_ids, "createdAt": times, "appType": st.sampled_from([1, 2, 3]),
        "sender": st.fixed_dictionaries({
            "copCode": st.from_regex(r"[0-9A-Z]{1,18}", fullmatch=True), "copName": text(),
            "dxpId": st.from_regex(r"DXP[0-9A-Z]{1,27}", fullmatch=True),
        }),
    }


def _document() -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({"fileName": text(max_size=20).map(lambda t: t.replace("/", "") + ".pdf"),
                                  "content": pdfs})


def _build(model: type, **fields: st.SearchStrategy) -> st.SearchStrategy:
    return st.fixed_dictionaries({**_head(), **fields}).map(model.model_validate)


@st.composite
def policies_issued(draw: st.DrawFn) -> PolicyIssued:
    start = draw(dates)
    return draw(_build(
        PolicyIssued, proposalNo=doc_nos, policyNo=doc_nos, insurer=_insurers(), enterprise=enterprises(),
        validFrom=st.just(start), validTo=st.integers(1, 730).map(lambda d: start + timedelta(days=d)),
        indemnityRatioPercent=st.integers(1, 100),
        maxLiabilityUsd=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("999999999999.99"), places=2),
        creditPeriodDays=st.integers(1, 360), policyDocument=_document(),
    ))


ALL_MESSAGES = st.one_of(
    _build(PendingPolicy, proposalNo=doc_nos, policyKind=st.sampled_from(["new", "renewal"]), insurer=_insurers(),
           enterprise=enterprises(), applicationForm=_document()),
    _build(InsuranceApplication, proposalNo=doc_nos, enterprise=enterprises(),
           contact=st.fixed_dictionaries({"name": text(), "phone": landlines, "mobile": mobiles, "email": emails}),
           declarationAccepted=st.just(True), confirmedWith=st.just("legal-person")),
    _build(ApplicationReturned, proposalNo=doc_nos, insurer=_insurers(), enterprise=enterprises(),
           reason=text(max_size=100), returnedOn=dates),
    policies_issued(),
    _build(PolicyReceipt, proposalNo=doc_nos, policyNo=doc_nos, enterprise=enterprises(), receivedOn=dates),
    _build(Receipt, refMessageId=st.none() | message_ids,
           refMessageType=st.none() | st.sampled_from(["PendingPolicy", "InsuranceApplication", "PolicyIssued"]),
           refFileName=st.none() | text(max_size=60), refBusinessKey=st.none() | doc_nos,
           returnStatus=st.sampled_from([2, 100, 120, 399, 800, -621029]), returnTime=times, returnInfo=text(),
           errors=st.lists(st.fixed_dictionaries({"code": st.from_regex(r"[A-Z_]{3,20}", fullmatch=True),
                                                  "field": st.just("") | text(), "message": text()}), max_size=3)),
)
