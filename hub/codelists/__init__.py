"""Code lists (currency, country, transport mode, loss cause, payment method, unit) kept as CSV data."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field

_DIR = Path(__file__).parent


@dataclass(frozen=True)
class CodeEntry:
    code: str
    name_zh: str
    name_en: str


@cache
def code_list(name: str) -> dict[str, CodeEntry]:
    with open(_DIR / f"{name}.csv", encoding="utf-8", newline="") as f:
        return {row["code"]: CodeEntry(**row) for row in csv.DictReader(f)}


def _member_of(name: str) -> AfterValidator:
    def check(value: str) -> str:
        if value not in code_list(name):
            raise ValueError(f"{value!r} is not in the {name} code list (hub/codelists/{name}.csv)")
        return value

    return AfterValidator(check)


def _described(name: str) -> object:
    return Field(min_length=1, max_length=3, description=f"a code from the {name} code list")


Currency = Annotated[str, _described("currency"), _member_of("currency")]
Country = Annotated[str, _described("country"), _member_of("country")]
TransportMode = Annotated[str, _described("transport-mode"), _member_of("transport-mode")]
LossCause = Annotated[str, _described("loss-cause"), _member_of("loss-cause")]
PaymentMethod = Annotated[str, _described("payment-method"), _member_of("payment-method")]
Unit = Annotated[str, _described("unit"), _member_of("unit")]
