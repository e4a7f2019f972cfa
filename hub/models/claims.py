"""索赔服务: a claim on an effective policy and the insurer's review receipts (DOMAIN.md §5)."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Base64Bytes, Field, ValidationInfo, field_validator

from hub.codelists import Country, LossCause, PaymentMethod, TransportMode
from hub.models.base import (
    CanonicalMessage,
    DocumentNo,
    ExportDeclarationNo,
    HsCode,
    Landline,
    Money,
    PlatformEmail,
    Record,
    ShipmentSerial,
    Swift,
    Text,
    only,
    required_when,
)
from hub.models.parties import Attachment, Enterprise, Insurer

MIN_CHINESE_CHARACTERS = 20
MAX_ATTACHMENTS_BYTES = 40 * 1024 * 1024
_CHINESE_CHARACTER = re.compile("[\u4e00-\u9fff]")  # CJK Unified Ideographs


def _twenty_chinese_characters(value: str) -> str:
    count = len(_CHINESE_CHARACTER.findall(value))
    if count < MIN_CHINESE_CHARACTERS:
        raise ValueError(f"has {count} Chinese characters; at least {MIN_CHINESE_CHARACTERS} are required")
    return value


CaseText = Annotated[
    str, Field(min_length=MIN_CHINESE_CHARACTERS, max_length=2000), AfterValidator(_twenty_chinese_characters)
]


class ListedBuyer(Record):
    """A buyer on the insurer's buyer list."""

    buyer_code: Annotated[str, Field(pattern=r"^[A-Z0-9]{4,20}$")]
    english_name: Text


class NewBuyer(Record):
    english_name: Text
    country: Country
    english_address: Text


class Buyer(Record):
    """Either a buyer from the insurer's list or a new one, never both."""

    listed: ListedBuyer | None = None
    new: NewBuyer | None = Field(default=None, validate_default=True)

    @field_validator("new")
    @classmethod
    def _exactly_one(cls, value: NewBuyer | None, info: ValidationInfo) -> NewBuyer | None:
        if (value is None) == (info.data.get("listed") is None):
            raise ValueError("give either the listed buyer or a new buyer, exactly one")
        return value


class BankRole(StrEnum):
    ISSUING = "issuing"  # 开证行
    CONFIRMING = "confirming"  # 保兑行


class Bank(Record):
    role: BankRole
    swift: Swift
    english_name: Text
    country: Country
    english_address: Text


class CaseFlags(Record):
    letter_of_credit: bool  # the case involves letters of credit
    trade_financing: bool  # 是否已办理贸易融资
    trade_dispute: bool  # 是否存在贸易纠纷


class Financing(Record):
    bank_swift: Swift
    bank_name: Text
    amount_usd: Money


class CollectionStatus(StrEnum):
    NONE = "none"  # 未收汇
    PARTIAL = "partial"  # 部分收汇


class Shipment(Record):
    """出运信息: one invoice's shipment."""

    serial_no: ShipmentSerial
    invoice_no: Annotated[str, Field(pattern=r"^[0-9A-Za-z/-]{1,30}$")]
    hs_code: HsCode
    shipped_on: date
    payment_method: PaymentMethod
    payment_term_days: Annotated[int, Field(ge=0, le=360)]
    invoice_amount_usd: Money
    claim_amount_usd: Money
    collection_status: CollectionStatus
    transport_mode: TransportMode
    declaration_nos: Annotated[tuple[ExportDeclarationNo, ...], Field(min_length=1)]
    certificate_of_origin_nos: tuple[Annotated[str, Field(pattern=r"^[0-9A-Z]{6,30}$")], ...] = ()

    @field_validator("claim_amount_usd")
    @classmethod
    def _claim_within_invoice(cls, value: Decimal, info: ValidationInfo) -> Decimal:
        invoice = info.data.get("invoice_amount_usd")
        if invoice is not None and value > invoice:
            raise ValueError(f"claims {value} USD, more than the invoice's {invoice} USD")
        return value


class AttachmentKind(StrEnum):
    INVOICE = "invoice"
    CONTRACT = "contract"
    TRANSPORT_DOCUMENT = "transport-document"
    DECLARATION = "declaration"
    OTHER = "other"


class ClaimAttachment(Attachment):
    """Grouped per invoice: the invoice, the contract, the transport document, the declaration."""

    invoice_no: Annotated[str, Field(pattern=r"^[0-9A-Za-z/-]{1,30}$")]
    kind: AttachmentKind


class ShipmentDataReport(Record):
    """出运数据报告: the shipment data check's result, sealed with the enterprise's electronic seal."""

    file_name: Annotated[str, Field(pattern=r"^[^/\\]{1,100}\.pdf$")]
    content: Base64Bytes
    sealed: bool

    _must_be_sealed = only(
        "sealed", True, "the shipment data report must carry the enterprise's electronic seal before submit"
    )


class ClaimMessage(CanonicalMessage):
    family = "claims"
    key_field = "claim_no"

    claim_no: DocumentNo  # 索赔编号
    policy_no: DocumentNo


class ClaimApplication(ClaimMessage):
    message_type = "ClaimApplication"
    xml_code = 501

    enterprise: Enterprise
    buyer: Buyer
    banks: tuple[Bank, ...] = ()
    case_flags: CaseFlags
    financing: Financing | None = Field(default=None, validate_default=True)
    shipments: Annotated[tuple[Shipment, ...], Field(min_length=1)]
    loss_cause: LossCause
    claim_reason: CaseText  # 索赔原因
    case_description: CaseText  # 案情描述
    mitigation: Annotated[str, Field(min_length=1, max_length=2000)]  # 减损措施
    attachments: tuple[ClaimAttachment, ...] = ()
    shipment_data_report: ShipmentDataReport
    declaration_accepted: bool

    @field_validator("case_flags")
    @classmethod
    def _letter_of_credit_names_its_issuing_bank(cls, flags: CaseFlags, info: ValidationInfo) -> CaseFlags:
        banks = info.data.get("banks", ())
        if flags.letter_of_credit and not any(b.role is BankRole.ISSUING for b in banks):
            raise ValueError("the case involves a letter of credit: banks must name the issuing bank")
        return flags

    @field_validator("financing")
    @classmethod
    def _financing_when_taken(cls, value: Financing | None, info: ValidationInfo) -> Financing | None:
        flags = info.data.get("case_flags")
        if flags is not None and flags.trade_financing and value is None:
            raise ValueError("trade financing was taken (caseFlags.tradeFinancing): give the financing bank and amount")
        if flags is not None and not flags.trade_financing and value is not None:
            raise ValueError("financing is given but caseFlags.tradeFinancing is false")
        return value

    @field_validator("attachments")
    @classmethod
    def _attachments_fit(cls, value: tuple[ClaimAttachment, ...], info: ValidationInfo) -> tuple[ClaimAttachment, ...]:
        total = sum(len(a.content) for a in value)
        if total > MAX_ATTACHMENTS_BYTES:
            raise ValueError(f"add up to {total} bytes; all together at most {MAX_ATTACHMENTS_BYTES} bytes (40 MB)")
        invoices = {s.invoice_no for s in info.data.get("shipments", ())}
        strays = sorted({a.invoice_no for a in value} - invoices)
        if invoices and strays:
            raise ValueError(f"name invoices {', '.join(strays)}, which no shipment has")
        return value

    _declaration_accepted = only(
        "declaration_accepted", True, "the claimant's declaration must be accepted before the claim is sent"
    )



class ClaimStatus(StrEnum):
    ACCEPTED = "accepted"  # 已受理
    UNDER_REVIEW = "under-review"  # 审核中
    RETURNED = "returned"  # 已退回
    SETTLED = "settled"  # 已结案


class AccountManager(Record):
    name: Text
    phone: Landline
    email: PlatformEmail


class ClaimReviewReceipt(ClaimMessage):
    """索赔审核回执."""

    message_type = "ClaimReviewReceipt"
    xml_code = 503

    insurer: Insurer
    status: ClaimStatus
    return_reason: Annotated[str, Field(min_length=1, max_length=1000)] | None = Field(
        default=None, validate_default=True
    )
    account_manager: AccountManager
    reviewed_on: date

    _returned_says_why = required_when(
        "return_reason", "status", (ClaimStatus.RETURNED,), "a returned claim must say why"
    )


MESSAGES = (ClaimApplication, ClaimReviewReceipt)
