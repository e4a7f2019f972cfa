"""小微投保: the underwriting conversation (DOMAIN.md §3).

pending policy (insurer) → insurance application (platform) → returned or issued (insurer) → policy receipt (platform)
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated

from pydantic import Field, model_validator

from hub.models.base import (
    CanonicalMessage,
    DocumentNo,
    Landline,
    Mobile,
    Money,
    PlatformEmail,
    Record,
    Text,
    only,
)
from hub.models.parties import CardKind, Enterprise, Insurer, PdfDocument

ProposalNo = DocumentNo  # 投保单号
PolicyNo = DocumentNo  # 保单号


class PolicyKind(StrEnum):
    NEW_BUSINESS = "new"  # 中小企业综合保险投保单（小微企业适用）
    RENEWAL = "renewal"  # 中小企业综合保险续转单证（小微企业适用）


class UnderwritingMessage(CanonicalMessage):
    family = "underwriting"
    key_field = "proposal_no"

    proposal_no: ProposalNo  # 投保单号: the conversation's key, set by the insurer in the pending policy


class PendingPolicy(UnderwritingMessage):
    """待确认保单: pushed by the insurer; the enterprise cannot create one."""

    message_type = "PendingPolicy"
    xml_code = 101

    policy_kind: PolicyKind
    insurer: Insurer
    enterprise: Enterprise
    application_form: PdfDocument


class Contact(Record):
    name: Text
    phone: Landline
    mobile: Mobile
    email: PlatformEmail


class InsuranceApplication(UnderwritingMessage):
    """投保申请 / 确认投保: the enterprise confirms the pending policy."""

    message_type = "InsuranceApplication"
    xml_code = 103

    enterprise: Enterprise
    contact: Contact
    declaration_accepted: bool  # 已认真阅读以上内容并同意
    confirmed_with: CardKind

    _declaration_accepted = only(
        "declaration_accepted", True,
        "the declaration 已认真阅读以上内容并同意 must be accepted before the application is sent",
    )
    _legal_person_card_only = only(
        "confirmed_with", CardKind.LEGAL_PERSON,
        "only the legal-person card (法人卡) may confirm an insurance application",
    )


class ApplicationReturned(UnderwritingMessage):
    """投保申请退回通知: the insurer returns the application with a reason."""

    message_type = "ApplicationReturned"
    xml_code = 105

    insurer: Insurer
    enterprise: Enterprise
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    returned_on: date


class PolicyIssued(UnderwritingMessage):
    """保单生效通知: the policy is in force and awaits the enterprise's receipt (待收悉)."""

    message_type = "PolicyIssued"
    xml_code = 107

    policy_no: PolicyNo
    insurer: Insurer
    enterprise: Enterprise
    valid_from: date
    valid_to: date
    indemnity_ratio_percent: Annotated[int, Field(ge=1, le=100)]
    max_liability_usd: Money
    credit_period_days: Annotated[int, Field(ge=1, le=360)]
    policy_document: PdfDocument

    @model_validator(mode="after")
    def _validity_in_order(self) -> PolicyIssued:
        if self.valid_to <= self.valid_from:
            raise ValueError(f"validTo {self.valid_to} must be after validFrom {self.valid_from}")
        return self


class PolicyReceipt(UnderwritingMessage):
    """收悉确认: the enterprise acknowledges its policy (待收悉 → 已收悉)."""

    message_type = "PolicyReceipt"
    xml_code = 109

    policy_no: PolicyNo
    enterprise: Enterprise
    received_on: date


MESSAGES = (PendingPolicy, InsuranceApplication, ApplicationReturned, PolicyIssued, PolicyReceipt)
