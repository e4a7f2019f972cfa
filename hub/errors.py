"""One error taxonomy for the whole hub.

Every refusal and every failure carries a stable code. Codes travel into receipts, the store, the status
interface and error files, so operators and partners can act on them without reading logs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum

from hub.signing.errors import SigningError, VerificationError


class Disposition(Enum):
    """What the hub does with a message that failed with this error."""

    REJECT = "reject"  # the sender's fault: answer with a rejection receipt, keep the input in rejected/
    RETRY = "retry"  # passing trouble (partner down): try again under the retry policy
    PARK = "park"  # the hub's own fault or out of retries: keep it parked for an operator
    # The signer cannot sign now (card out, E-Port client down, PIN blocked until an operator unblocks it):
    # the message waits and is tried again at a steady interval, never counted against the retry policy.
    WAIT = "wait"


@dataclass(frozen=True)
class ErrorCode:
    code: str
    disposition: Disposition
    summary: str


def _code(code: str, disposition: Disposition, summary: str) -> ErrorCode:
    return ErrorCode(code, disposition, summary)


R, T, P, W = Disposition.REJECT, Disposition.RETRY, Disposition.PARK, Disposition.WAIT

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
WORKER_LOST = _code("WORKER_LOST", P, "each worker that took the step died or stalled with it (a poison message)")
RECEIPT_TIMEOUT = _code("RECEIPT_TIMEOUT", P, "no receipt came for a delivered message, nor for any of its resends")

# An inbound signature that does not check (hub.signing's verification codes): the receipt's returnStatus
# is customs' -621029, the code says why.
SIGNATURE_CHECK_FAILED = _code("SIGNATURE_CHECK_FAILED", R, "the message's signature does not check")
SIGNATURE_MISSING = _code("SIGNATURE_MISSING", R, "the partner must sign this message and did not")
SIGNATURE_MALFORMED = _code("SIGNATURE_MALFORMED", R, "the signature is not the E-Port enveloped profile")
ALGORITHM_UNSUPPORTED = _code("ALGORITHM_UNSUPPORTED", R, "the signature uses an algorithm the hub does not accept")
SIGNATURE_INVALID = _code("SIGNATURE_INVALID", R, "the message was changed after signing, or signed by another key")
CERTIFICATE_UNKNOWN = _code("CERTIFICATE_UNKNOWN", R, "the signing certificate is not trusted for this partner")
CERTIFICATE_EXPIRED = _code("CERTIFICATE_EXPIRED", R, "the signing certificate has expired")
CERTIFICATE_NOT_YET_VALID = _code("CERTIFICATE_NOT_YET_VALID", R, "the signing certificate is not valid yet")

# The hub's own signer could not sign (hub.signing's signer codes). The library's names are kept, except
# where the same name means the partner's certificate above: those take a SIGNER_ prefix here.
CARD_ABSENT = _code("CARD_ABSENT", W, "the card is not in its reader")
CLIENT_UNAVAILABLE = _code("CLIENT_UNAVAILABLE", W, "the E-Port client does not answer")
QUEUE_FULL = _code("QUEUE_FULL", W, "too many signatures are already waiting for the card")
DEADLINE_EXCEEDED = _code("DEADLINE_EXCEEDED", W, "no signature within the signer's timeout")
SIGNER_CLOSED = _code("SIGNER_CLOSED", W, "the signer was stopped before it signed")
# These wait for an operator: the PIN guard makes sure no PIN reaches the card meanwhile.
PIN_MISSING = _code("PIN_MISSING", W, "the PIN's environment variable or file is empty")
PIN_REJECTED = _code("PIN_REJECTED", W, "the card refused the PIN; the card is blocked until an operator unblocks it")
PIN_BLOCKED = _code("PIN_BLOCKED", W, "the card is blocked after a wrong PIN: run_hub.py card unblock")
PIN_LAST_TRY = _code("PIN_LAST_TRY", W, "one PIN try is left on the card: the hub will not risk it")
CARD_LOCKED = _code("CARD_LOCKED", W, "the card has no PIN tries left; only its issuer can reset it")
# The client does not tell a wrong PIN apart, so its refusal blocks the card like PIN_REJECTED.
CLIENT_FAILED = _code("CLIENT_FAILED", W, "the E-Port client refused to sign; the card is blocked in case of the PIN")
CARD_ERROR = _code("CARD_ERROR", P, "the card answered in a way the hub does not expect")
SIGNER_CERTIFICATE_EXPIRED = _code("SIGNER_CERTIFICATE_EXPIRED", P, "the hub's signing certificate has expired")
SIGNER_CERTIFICATE_NOT_YET_VALID = _code(
    "SIGNER_CERTIFICATE_NOT_YET_VALID", P, "the hub's signing certificate is not valid yet"
)
SIGNER_ALGORITHM_UNSUPPORTED = _code(
    "SIGNER_ALGORITHM_UNSUPPORTED", P, "the signer cannot sign with the configured algorithm"
)
KEY_UNREADABLE = _code("KEY_UNREADABLE", P, "the signing key cannot be read")
SIGNER_ERROR = _code("SIGNER_ERROR", P, "the signer failed")

del R, T, P, W

# hub.signing's codes → the hub's. The three names it shares between "the partner's certificate" and "our
# signer's certificate" go to the SIGNER_ codes when a signer raised them.
_VERIFICATION_CODES = {
    e.code: e
    for e in (SIGNATURE_CHECK_FAILED, SIGNATURE_MISSING, SIGNATURE_MALFORMED, ALGORITHM_UNSUPPORTED, SIGNATURE_INVALID,
              CERTIFICATE_UNKNOWN, CERTIFICATE_EXPIRED, CERTIFICATE_NOT_YET_VALID)
}
_SIGNER_CODES = {
    **{e.code: e for e in (CARD_ABSENT, CLIENT_UNAVAILABLE, QUEUE_FULL, DEADLINE_EXCEEDED, SIGNER_CLOSED, PIN_MISSING,
                           PIN_REJECTED, PIN_BLOCKED, PIN_LAST_TRY, CARD_LOCKED, CARD_ERROR, CLIENT_FAILED,
                           KEY_UNREADABLE, SIGNER_ERROR)},
    "CERTIFICATE_EXPIRED": SIGNER_CERTIFICATE_EXPIRED,
    "CERTIFICATE_NOT_YET_VALID": SIGNER_CERTIFICATE_NOT_YET_VALID,
    "ALGORITHM_UNSUPPORTED": SIGNER_ALGORITHM_UNSUPPORTED,
}
SIGNATURE_CHECK_FAILURES = frozenset(_VERIFICATION_CODES.values())
"""Rejections whose receipt says customs' "signature check failed" (-621029) rather than "rejected" (100)."""


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


def signature_rejected(exc: VerificationError, message_id: str | None, message_type: str | None) -> HubError:
    """The rejection for an inbound signature that does not check."""
    code = _VERIFICATION_CODES.get(exc.code, SIGNATURE_CHECK_FAILED)
    return HubError(code, exc.detail or code.summary, message_id=message_id, message_type=message_type)


def signer_failed(exc: SigningError) -> HubError:
    """The failure for our own signer not signing (whatever hub.signing raised while signing)."""
    code = _SIGNER_CODES.get(exc.code, SIGNER_ERROR)
    return HubError(code, exc.detail or code.summary)
