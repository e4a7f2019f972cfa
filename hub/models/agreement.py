"""签约管理: the tripartite service agreement (enterprise, insurer, E-Port Data Centre), DOMAIN.md §1.

sign request (platform) → sealed (insurer) … terminate request (platform) → termination result (insurer)
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator

from hub.models.base import CanonicalMessage, DocumentNo, Record, only, required_when
from hub.models.parties import CardKind, Enterprise, Insurer, PdfDocument


class SealType(StrEnum):
    COMPANY = "company"  # 公司章: the only kind that may sign the agreement
    CONTRACT = "contract"  # 合同章
    FINANCE = "finance"  # 财务章
    LEGAL_PERSON = "legal-person"  # 法人章


class ElectronicSeal(Record):
    """The enterprise's electronic seal (电子印章) used on the agreement."""

    seal_id: Annotated[str, Field(pattern=r"^[0-9A-Za-z-]{4,40}$")]
    seal_type: SealType
    valid_to: date

    _company_seal_only = only(
        "seal_type", SealType.COMPANY, "the agreement is sealed with the company seal (公司章) only"
    )


class AgreementMessage(CanonicalMessage):
    family = "agreement"
    key_field = "agreement_no"

    agreement_no: DocumentNo  # 协议编号


class AgreementSignRequest(AgreementMessage):
    """The enterprise signs the agreement with its legal-person card; the insurer signs next (保险公司签约中)."""

    message_type = "AgreementSignRequest"
    xml_code = 201

    enterprise: Enterprise
    agreement_version: Annotated[str, Field(pattern=r"^[0-9A-Za-z.-]{1,20}$")]
    signed_with: CardKind
    seal: ElectronicSeal

    _legal_person_card_only = only(
        "signed_with", CardKind.LEGAL_PERSON,
        "only the legal-person card (法人卡) may sign the agreement; an operator card may not",
    )

    @field_validator("seal")
    @classmethod
    def _seal_not_expired(cls, seal: ElectronicSeal, info: ValidationInfo) -> ElectronicSeal:
        signed_at = info.data.get("created_at")
        if signed_at is not None and seal.valid_to < signed_at.date():
            raise ValueError(f"seal {seal.seal_id} expired on {seal.valid_to}: an expired seal cannot sign")
        return seal


class AgreementSealed(AgreementMessage):
    """The insurer has added its electronic seal: the agreement is signed (签约成功)."""

    message_type = "AgreementSealed"
    xml_code = 203

    enterprise: Enterprise
    insurer: Insurer
    sealed_on: date
    agreement_document: PdfDocument


class AgreementTerminateRequest(AgreementMessage):
    """协议解约: the enterprise asks to end the agreement; `insist` is its 坚持解约 after the warning."""

    message_type = "AgreementTerminateRequest"
    xml_code = 205

    enterprise: Enterprise
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    insist: bool


class TerminationOutcome(StrEnum):
    TERMINATED = "terminated"  # 解约成功
    REFUSED = "refused"  # 解约失败


class AgreementTerminateResult(AgreementMessage):
    message_type = "AgreementTerminateResult"
    xml_code = 207

    enterprise: Enterprise
    insurer: Insurer
    outcome: TerminationOutcome
    # Checked even when absent: a refusal must carry it.
    reason: Annotated[str, Field(min_length=1, max_length=500)] | None = Field(default=None, validate_default=True)
    decided_on: date

    _refusal_says_why = required_when(
        "reason", "outcome", (TerminationOutcome.REFUSED,), "a refused termination (解约失败) must say why"
    )


MESSAGES = (AgreementSignRequest, AgreementSealed, AgreementTerminateRequest, AgreementTerminateResult)
