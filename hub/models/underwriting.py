"""小微投保: the underwriting conversation (DOMAIN.md §3).

pending policy (insurer) → insurance application (platform) → returned or issued (insurer) → policy receipt (platform)
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated

from pydantic import Base64Bytes, Field, ValidationInfo, field_validator, model_validator

from hub.models.base import (
    USCC,
    CanonicalMessage,
    Landline,
    Mobile,
    Money,
    OrgCode,
    PlatformEmail,
    Record,
    Text,
)

ProposalNo = Annotated[str, Field(pattern=r"^[A-Z0-9-]{6,30}$")]
PolicyNo = Annotated[str, Field(pattern=r"^[A-Z0-9-]{6,30}$")]


class Enterprise(Record):
    """The small or micro exporter (小微企业) the conversation is about."""

    name: Text
    uscc: USCC
    org_code: OrgCode

    @field_validator("org_code")
    @classmethod
    def _org_code_inside_uscc(cls, value: str, info: ValidationInfo) -> str:
        uscc = info.data.get("uscc")  # absent when uscc itself failed: that error is reported already
        if uscc and uscc[8:17] != value:
            raise ValueError(f"must equal positions 9-17 of uscc {uscc} ({uscc[8:17]})")
        return value


class Insurer(Record):
    name: Text
    institution_code: Annotated[str, Field(pattern=r"^[0-9A-Z]{4,18}$")]  # 保险机构编码


class PdfDocument(Record):
    """A PDF carried inside the message (the application form, the electronic policy)."""

    file_name: Annotated[str, Field(pattern=r"^[^/\\]{1,100}\.pdf$")]
    content: Base64Bytes

    @field_validator("content")
    @classmethod
    def _is_pdf(cls, value: bytes) -> bytes:
        if not value.startswith(b"%PDF-"):
            raise ValueError("is not a PDF (the decoded content does not start with %PDF-)")
        return value


class PolicyKind(StrEnum):
    NEW_BUSINESS = "new"  # 中小企业综合保险投保单（小微企业适用）
    RENEWAL = "renewal"  # 中小企业综合保险续转单证（小微企业适用）


class CardKind(StrEnum):
    LEGAL_PERSON = "legal-person"  # 法人卡
    OPERATOR = "operator"  # 操作员卡


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

    @field_validator("declaration_accepted")
    @classmethod
    def _declaration_must_be_accepted(cls, value: bool) -> bool:
        if not value:
            raise ValueError("the declaration 已认真阅读以上内容并同意 must be accepted before the application is sent")
        return value

    @field_validator("confirmed_with")
    @classmethod
    def _legal_person_card_only(cls, value: CardKind) -> CardKind:
        if value is not CardKind.LEGAL_PERSON:
            raise ValueError("only the legal-person card (法人卡) may confirm an insurance application")
        return value


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
