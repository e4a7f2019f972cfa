"""投保咨询 / 询保申请: an enterprise's inquiry and the insurer's answer (DOMAIN.md §4).

Only submitted inquiries (已提交) reach the hub; drafts (暂存) stay on the platform.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from hub.models.base import (
    CanonicalMessage,
    InquirySerial,
    Landline,
    Mobile,
    PlatformEmail,
    Record,
    Text,
    required_when,
)
from hub.models.parties import Insurer


class Address(Record):
    """Registered address: province → city → district, all three, then the street address."""

    province: Text
    city: Text
    district: Text
    detail: Text


class InquiryContent(StrEnum):
    INSURE = "insure"  # 我要投保
    INVESTIGATE_BUYER = "investigate-buyer"  # 我要调查买方资信
    OTHER = "other"  # 我有其他需求


class InquiryMessage(CanonicalMessage):
    family = "inquiry"
    key_field = "serial_no"

    serial_no: InquirySerial  # 投保/询保流水号


class InsuranceInquiry(InquiryMessage):
    message_type = "InsuranceInquiry"
    xml_code = 401

    company_name: Text
    registered_address: Address
    contact: Text
    mobile: Mobile
    landline: Landline
    email: PlatformEmail
    content: InquiryContent = InquiryContent.INSURE
    other_needs: Annotated[str, Field(min_length=1, max_length=500)] | None = Field(
        default=None, validate_default=True
    )

    _other_says_what = required_when(
        "other_needs", "content", (InquiryContent.OTHER,), "content 'other' (我有其他需求) must say what the needs are"
    )


class InquiryCompleted(InquiryMessage):
    """The insurer's answer: the inquiry is 已完成."""

    message_type = "InquiryCompleted"
    xml_code = 403

    insurer: Insurer
    reply: Annotated[str, Field(min_length=1, max_length=2000)]
    completed_on: date


MESSAGES = (InsuranceInquiry, InquiryCompleted)
