"""One error taxonomy for the whole hub.

Every refusal and every failure carries a stable code. Codes travel into receipts, the store, the status
interface and error files, so operators and partners can act on them without reading logs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum


class Disposition(Enum):
    """What the hub does with a message that failed with this error."""

    REJECT = "reject"  # the sender's fault: answer with a rejection receipt, keep the input in rejected/
    RETRY = "retry"  # passing trouble (partner down, card absent): try again under the retry policy
    PARK = "park"  # the hub's own fault or out of retries: keep it parked for an operator


@dataclass(frozen=True)
class ErrorCode:
    code: str
    disposition: Disposition
    summary: str


def _code(code: str, disposition: Disposition, summary: str) -> ErrorCode:
    return ErrorCode(code, disposition, summary)


R, T, P = Disposition.REJECT, Disposition.RETRY, Disposition.PARK

MESSAGE_EMPTY = _code("MESSAGE_EMPTY", R, "the message has no content")
MESSAGE_TOO_LARGE = _code("MESSAGE_TOO_LARGE", R, "the message is larger than the partner's limit")
MALFORMED_XML = _code("MALFORMED_XML", R, "the message is not well-formed XML")
MALFORMED_JSON = _code("MALFORMED_JSON", R, "the message is not well-formed JSON")
UNKNOWN_NAMESPACE = _code("UNKNOWN_NAMESPACE", R, "the root element's namespace is not one the partner speaks")
UNKNOWN_MESSAGE_TYPE = _code("UNKNOWN_MESSAGE_TYPE", R, "the message type is not known")
SCHEMA_VIOLATION = _code("SCHEMA_VIOLATION", R, "the message breaks its schema")
FIELD_INVALID = _code("FIELD_INVALID", R, "a field breaks a business rule")
UNKNOWN_REFERENCE = _code("UNKNOWN_REFERENCE", R, "the message answers something the hub does not know")
OUT_OF_ORDER = _code("OUT_OF_ORDER", R, "the message does not fit the conversation's current state")
DUPLICATE_MESSAGE = _code("DUPLICATE_MESSAGE", R, "a message with this id was already received")
NO_ROUTE = _code("NO_ROUTE", R, "no route takes this message type from this partner")
DELIVERY_FAILED = _code("DELIVERY_FAILED", T, "the message could not be handed to the partner's channel")
MAPPING_FAILED = _code("MAPPING_FAILED", P, "the hub produced a message that breaks the receiver's schema")
INTERNAL_ERROR = _code("INTERNAL_ERROR", P, "an unexpected error inside the hub")
RETRIES_EXHAUSTED = _code("RETRIES_EXHAUSTED", P, "every attempt of the retry policy failed")

del R, T, P


@dataclass(frozen=True)
class FieldError:
    """One problem at one place in a message: which rule, at which field path, with what value."""

    code: str
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "field": self.field, "message": self.message}


@dataclass
class HubError(Exception):
    """A failure with a stable code. `errors` lists every field problem found, first one first."""

    error: ErrorCode
    message: str
    field: str = ""
    errors: list[FieldError] = dataclasses.field(default_factory=list)
    # What could be read of the refused message before it failed, so the receipt can point at it.
    message_id: str | None = None
    message_type: str | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)
        if not self.errors:
            self.errors = [FieldError(self.error.code, self.field, self.message)]

    @property
    def code(self) -> str:
        return self.error.code

    @property
    def disposition(self) -> Disposition:
        return self.error.disposition

    def __str__(self) -> str:
        where = f" at {self.field}" if self.field else ""
        return f"{self.code}{where}: {self.message}"
