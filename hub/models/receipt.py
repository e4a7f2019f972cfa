"""Receipts (回执): every message that crosses a boundary is answered by the side that received it."""

from __future__ import annotations

from datetime import datetime
from enum import IntEnum
from typing import Annotated

from pydantic import BeforeValidator, Field, PlainSerializer

from hub.models.base import BEIJING, CanonicalMessage, MessageId, Record

_RECEIPT_TIME = "%Y%m%d%H%M%S%f"


def _parse_receipt_time(value: object) -> object:
    """Receipt times travel as YYYYMMDDhhmmssSSS, Beijing time (DOMAIN.md §9); keep milliseconds only."""
    if isinstance(value, str) and len(value) == 17 and value.isdigit():
        value = datetime.strptime(value + "000", _RECEIPT_TIME).replace(tzinfo=BEIJING)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=BEIJING)
        value = value.astimezone(BEIJING)
        return value.replace(microsecond=value.microsecond // 1000 * 1000)
    return value


ReceiptTime = Annotated[
    datetime,
    BeforeValidator(_parse_receipt_time),
    PlainSerializer(lambda v: v.astimezone(BEIJING).strftime(_RECEIPT_TIME)[:17], return_type=str, when_used="json"),
    Field(json_schema_extra={"pattern": "^[0-9]{17}$", "format": "YYYYMMDDhhmmssSSS"}),
]


class ReturnStatus(IntEnum):
    """The customs ecosystem's receipt ladder (DOMAIN.md §9); negative codes are processing errors."""

    RECEIVED = 2
    REJECTED = 100
    ACCEPTED = 120
    CONCLUDED = 399
    FINAL = 800
    SIGNATURE_CHECK_FAILED = -621029


class ReceiptError(Record):
    code: Annotated[str, Field(min_length=1, max_length=40)]
    field: Annotated[str, Field(max_length=300)] = ""
    message: Annotated[str, Field(min_length=1, max_length=1000)]


class Receipt(CanonicalMessage):
    """A technical receipt: received, accepted or rejected, with every error found.

    `ref_message_id` is empty only when the answered input could not be read far enough to find its id
    (the format-error receipt); `ref_file_name` then says which file it was.
    """

    message_type = "Receipt"
    family = "receipt"
    schema_name = "*"  # every schema has its receipts: ECI102 answers ECI101, ECI900 answers the unreadable
    xml_code = 900

    ref_message_id: MessageId | None = None
    ref_message_type: Annotated[str, Field(max_length=40)] | None = None
    ref_file_name: Annotated[str, Field(max_length=255)] | None = None
    ref_business_key: Annotated[str, Field(max_length=60)] | None = None
    return_status: ReturnStatus
    return_time: ReceiptTime
    return_info: Annotated[str, Field(min_length=1, max_length=1000)]
    errors: tuple[ReceiptError, ...] = ()
