"""授权数据查询统计: how much of an enterprise's authorised customs data was used, by data kind, in one period
of a frequency (指标频度: day, month, year), DOMAIN.md §2. The hub writes it from what its store recorded.

A period is named as people read it: `2026-11-21` (day), `2026-11` (month), `2026` (year).
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import Field, ValidationInfo, field_validator

from hub.models.authorization import DataKind
from hub.models.base import CanonicalMessage, DocumentNo, Record
from hub.models.parties import Enterprise


class Frequency(StrEnum):
    DAY = "day"
    MONTH = "month"
    YEAR = "year"


_PERIOD_FORMS = {Frequency.DAY: "YYYY-MM-DD", Frequency.MONTH: "YYYY-MM", Frequency.YEAR: "YYYY"}


def period_label(frequency: Frequency, start: date) -> str:
    return start.isoformat()[: len(_PERIOD_FORMS[frequency])]


def period_start(frequency: Frequency, label: str) -> date:
    """The first day of the period a label names; ValueError when the label is not of the frequency's form."""
    form = _PERIOD_FORMS[frequency]
    if len(label) != len(form):
        raise ValueError(f"a {frequency.value} period is written {form}, not {label!r}")
    return date.fromisoformat(label + "-01-01"[len(label) - 4:])


class DataCount(Record):
    data_kind: DataKind
    count: Annotated[int, Field(ge=0)]


class AuthorizedDataStatistics(CanonicalMessage):
    """One enterprise, one period: each data kind its authorizations cover, with how many of its documents
    of that kind were used (found and delivered) while an authorization covering them was valid."""

    message_type = "AuthorizedDataStatistics"
    family = "statistics"
    xml_code = 801
    key_path: ClassVar[tuple[str, ...]] = ("period",)

    enterprise: Enterprise
    authorization_nos: Annotated[tuple[DocumentNo, ...], Field(min_length=1, max_length=10)]
    frequency: Frequency
    period: Annotated[str, Field(pattern=r"^[0-9]{4}(-[0-9]{2}){0,2}$")]
    counts: Annotated[tuple[DataCount, ...], Field(min_length=1, max_length=3)]

    @field_validator("counts")
    @classmethod
    def _each_kind_once(cls, value: tuple[DataCount, ...]) -> tuple[DataCount, ...]:
        if len({c.data_kind for c in value}) != len(value):
            raise ValueError("counts a data kind twice")
        return value

    @field_validator("period")
    @classmethod
    def _period_of_its_frequency(cls, value: str, info: ValidationInfo) -> str:
        frequency = info.data.get("frequency")  # absent when frequency itself failed: reported already
        if frequency is not None:
            period_start(frequency, value)
        return value

    def business_key(self) -> str:
        """One per enterprise and period: the period's label says its frequency."""
        return f"{self.enterprise.uscc}:{self.period}"


MESSAGES = (AuthorizedDataStatistics,)
