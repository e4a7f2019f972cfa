"""Canonical models: one pydantic class per message type, in the domain's words, one module per family."""

from hub.models import agreement, authorization, claims, customs, inquiry, risk, statistics, trade, underwriting
from hub.models.base import CanonicalMessage, Sender
from hub.models.receipt import Receipt, ReceiptError, ReturnStatus
from hub.models.underwriting import (
    ApplicationReturned,
    InsuranceApplication,
    PendingPolicy,
    PolicyIssued,
    PolicyReceipt,
)

FAMILIES = (underwriting, agreement, authorization, inquiry, claims, customs, risk, trade, statistics)

MESSAGE_TYPES: dict[str, type[CanonicalMessage]] = {
    cls.message_type: cls for family in FAMILIES for cls in family.MESSAGES
} | {Receipt.message_type: Receipt}

__all__ = [
    "FAMILIES",
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
