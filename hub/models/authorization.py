"""企业数据授权: the enterprise lets the insurer use its shared trade data (DOMAIN.md §2).

One authorization in force per enterprise and insurer: a second one is refused (请勿重复授权).
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import Field, field_validator, model_validator

from hub.models.base import CanonicalMessage, DocumentNo, required_when
from hub.models.parties import Enterprise, Insurer


class DataKind(StrEnum):
    DECLARATION = "declaration"  # 报关单
    BILL_OF_LADING = "bill-of-lading"  # 提运单
    CERTIFICATE_OF_ORIGIN = "certificate-of-origin"  # 原产地证


class AuthorizationOutcome(StrEnum):
    IN_FORCE = "in-force"  # 授权成功
    REFUSED = "refused"


class AuthorizationMessage(CanonicalMessage):
    """Keyed by enterprise and insurer, not by authorization number: that is what makes a second one a repeat."""

    family = "authorization"
    key_path: ClassVar[tuple[str, ...]] = ("enterprise", "uscc")

    authorization_no: DocumentNo
    enterprise: Enterprise
    insurer: Insurer

    def business_key(self) -> str:
        return f"{self.enterprise.uscc}@{self.insurer.institution_code}"


class DataAuthorization(AuthorizationMessage):
    message_type = "DataAuthorization"
    xml_code = 301

    data_kinds: Annotated[tuple[DataKind, ...], Field(min_length=1, max_length=3)]
    purpose: Annotated[str, Field(min_length=1, max_length=200)]  # e.g. 承保及理赔审核
    valid_from: date
    valid_to: date

    @field_validator("data_kinds")
    @classmethod
    def _each_kind_once(cls, value: tuple[DataKind, ...]) -> tuple[DataKind, ...]:
        if len(set(value)) != len(value):
            raise ValueError("names a data kind twice")
        return value

    @model_validator(mode="after")
    def _validity_in_order(self) -> DataAuthorization:
        if self.valid_to <= self.valid_from:
            raise ValueError(f"validTo {self.valid_to} must be after validFrom {self.valid_from}")
        return self


class DataAuthorizationResult(AuthorizationMessage):
    message_type = "DataAuthorizationResult"
    xml_code = 303

    outcome: AuthorizationOutcome
    reason: Annotated[str, Field(min_length=1, max_length=500)] | None = Field(default=None, validate_default=True)

    _refusal_says_why = required_when(
        "reason", "outcome", (AuthorizationOutcome.REFUSED,), "a refused authorization must say why"
    )


MESSAGES = (DataAuthorization, DataAuthorizationResult)
