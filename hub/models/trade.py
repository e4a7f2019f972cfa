"""商户信保订单登记: Yiwu market-procurement trade registration (DOMAIN.md §8).

Only confirmed registrations (订单确认) reach the hub; drafts (暂存) stay on the local platform.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator

from hub.codelists import Country, Unit
from hub.models.base import USCC, CanonicalMessage, DocumentNo, Money, Record, Text, required_when
from hub.models.parties import Insurer


class RegistrationMode(StrEnum):
    TRADE_COMPANY = "trade-company"  # 外贸公司居间服务
    PURCHASER_DIRECT = "purchaser-direct"  # 采购商采购


class Merchant(Record):
    """The market merchant (商户, 实际收益人): an individual business with its market-procurement number."""

    name: Text
    uscc: USCC
    market_procurement_no: Annotated[str, Field(pattern=r"^[0-9A-Z]{6,30}$")]  # 市场采购号


class TradeCompany(Record):
    name: Text
    uscc: USCC


class Purchaser(Record):
    english_name: Text
    country: Country
    contact: Text


class GoodsLine(Record):
    line_no: Annotated[int, Field(ge=1, le=9999)]
    name: Text
    quantity: Annotated[int, Field(ge=1)]
    unit: Unit
    amount_usd: Money


class SupplementaryStatus(StrEnum):
    NOT_NEEDED = "not-needed"  # 无需补录
    PENDING = "pending"  # 待补录
    COMPLETED = "completed"  # 已补录


class TradeMessage(CanonicalMessage):
    family = "trade"
    key_field = "registration_no"

    registration_no: DocumentNo


class TradeRegistration(TradeMessage):
    message_type = "TradeRegistration"
    xml_code = 701

    merchant: Merchant
    mode: RegistrationMode
    # The trade company is the intermediary in its mode, and absent when the purchaser buys directly.
    trade_company: TradeCompany | None = Field(default=None, validate_default=True)
    purchaser: Purchaser
    order_date: date
    goods: Annotated[tuple[GoodsLine, ...], Field(min_length=1, max_length=500)]
    total_amount_usd: Money
    total_pieces: Annotated[int, Field(ge=1)]
    supplementary_status: SupplementaryStatus

    @field_validator("trade_company")
    @classmethod
    def _trade_company_in_its_mode(cls, value: TradeCompany | None, info: ValidationInfo) -> TradeCompany | None:
        mode = info.data.get("mode")
        if mode is RegistrationMode.TRADE_COMPANY and value is None:
            raise ValueError("mode trade-company (外贸公司居间服务) needs the trade company")
        if mode is RegistrationMode.PURCHASER_DIRECT and value is not None:
            raise ValueError("mode purchaser-direct (采购商采购) has no trade company")
        return value

    @field_validator("goods")
    @classmethod
    def _lines_numbered_once(cls, value: tuple[GoodsLine, ...]) -> tuple[GoodsLine, ...]:
        numbers = [g.line_no for g in value]
        if len(set(numbers)) != len(numbers):
            raise ValueError("two goods lines have the same lineNo")
        return value

    @field_validator("total_amount_usd")
    @classmethod
    def _amount_adds_up(cls, value: Decimal, info: ValidationInfo) -> Decimal:
        goods = info.data.get("goods")
        if goods is not None and value != (lines := sum((g.amount_usd for g in goods), Decimal(0))):
            raise ValueError(f"is {value} but the goods lines add up to {lines}")
        return value

    @field_validator("total_pieces")
    @classmethod
    def _pieces_add_up(cls, value: int, info: ValidationInfo) -> int:
        goods = info.data.get("goods")
        if goods is not None and value != (lines := sum(g.quantity for g in goods)):
            raise ValueError(f"is {value} but the goods lines add up to {lines}")
        return value


class RegistrationOutcome(StrEnum):
    ACCEPTED = "accepted"
    REFUSED = "refused"


class TradeRegistrationResult(TradeMessage):
    message_type = "TradeRegistrationResult"
    xml_code = 703

    insurer: Insurer
    outcome: RegistrationOutcome
    reason: Annotated[str, Field(min_length=1, max_length=500)] | None = Field(default=None, validate_default=True)
    decided_on: date

    _refusal_says_why = required_when(
        "reason", "outcome", (RegistrationOutcome.REFUSED,), "a refused registration must say why"
    )


MESSAGES = (TradeRegistration, TradeRegistrationResult)
