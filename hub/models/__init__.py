"""Canonical models: one pydantic class per message type, in the domain's words."""

from hub.models.base import CanonicalMessage, Sender
from hub.models.receipt import Receipt, ReceiptError, ReturnStatus
from hub.models.underwriting import (
    ApplicationReturned,
    InsuranceApplication,
    PendingPolicy,
    PolicyIssued,
    PolicyReceipt,
)

MESSAGE_TYPES: dict[str, type[CanonicalMessage]] = {
    cls.message_type: cls
    for cls in (
        PendingPolicy,
        InsuranceApplication,
        ApplicationReturned,
        PolicyIssued,
        PolicyReceipt,
        Receipt,
    )
}

__all__ = [
    "MESSAGE_TYPES",
    "ApplicationReturned",
    "CanonicalMessage",
    "InsuranceApplication",
    "PendingPolicy",
    "PolicyIssued",
    "PolicyReceipt",
    "Receipt",
    "ReceiptError",
    "ReturnStatus",
    "Sender",
]
