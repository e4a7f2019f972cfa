"""Errors of the signing library, each with a stable string code.

Verification errors carry the customs receipt status for "signature check failed" (-621029), so that a
rejection receipt can be built from the exception alone; the precise reason is in `.code`. Signer errors say
whether the message should wait and retry (`transient`) or fail now.
"""

from __future__ import annotations

SIGNATURE_CHECK_FAILED = -621029
"""Customs' receipt status for a message whose signature does not check."""


class SigningError(Exception):
    """Base of every error raised by hub.signing."""

    code = "SIGNING_ERROR"

    def __init__(self, detail: str = "") -> None:
        super().__init__(f"{self.code}: {detail}" if detail else self.code)
        self.detail = detail


# ---------------------------------------------------------------- verification


class VerificationError(SigningError):
    """An inbound signature is missing, wrong or made with a certificate we do not accept."""

    code = "SIGNATURE_CHECK_FAILED"
    return_status = SIGNATURE_CHECK_FAILED


class SignatureMissing(VerificationError):
    code = "SIGNATURE_MISSING"


class SignatureMalformed(VerificationError):
    code = "SIGNATURE_MALFORMED"


class AlgorithmUnsupported(VerificationError):
    code = "ALGORITHM_UNSUPPORTED"


class SignatureInvalid(VerificationError):
    code = "SIGNATURE_INVALID"


class CertificateUnknown(VerificationError):
    code = "CERTIFICATE_UNKNOWN"


class CertificateExpired(VerificationError):
    code = "CERTIFICATE_EXPIRED"


class CertificateNotYetValid(VerificationError):
    code = "CERTIFICATE_NOT_YET_VALID"


# ---------------------------------------------------------------- signers


class SignerError(SigningError):
    """A signer could not sign. `transient` errors clear by themselves (card back, client restarted)."""

    code = "SIGNER_ERROR"
    transient = False


class CardAbsent(SignerError):
    code = "CARD_ABSENT"
    transient = True


class ClientUnavailable(SignerError):
    """The E-Port client (local WebSocket service) does not answer."""

    code = "CLIENT_UNAVAILABLE"
    transient = True


class ClientFailed(SignerError):
    """The E-Port client answered with an error we cannot classify."""

    code = "CLIENT_FAILED"


class QueueFull(SignerError):
    code = "QUEUE_FULL"
    transient = True


class DeadlineExceeded(SignerError):
    """The request waited past its deadline (e.g. the card stayed out); retry the message later."""

    code = "DEADLINE_EXCEEDED"
    transient = True


class SignerClosed(SignerError):
    code = "SIGNER_CLOSED"
    transient = True


class PinMissing(SignerError):
    code = "PIN_MISSING"


class PinBlocked(SignerError):
    """The hub refuses to present a PIN to this card until an operator unblocks it."""

    code = "PIN_BLOCKED"


class PinRejected(SignerError):
    """The card (or client) rejected the PIN; the hub has blocked the card so it is never sent again."""

    code = "PIN_REJECTED"


class PinLastTry(SignerError):
    """Only one try is left on the card: presenting a PIN could lock it for good."""

    code = "PIN_LAST_TRY"


class CardLocked(SignerError):
    """The card's own retry counter is exhausted; only the issuer can reset it."""

    code = "CARD_LOCKED"


class CardError(SignerError):
    """The card answered with a status word we do not expect."""

    code = "CARD_ERROR"


class SignerCertificateExpired(SignerError):
    code = "CERTIFICATE_EXPIRED"


class SignerCertificateNotYetValid(SignerError):
    code = "CERTIFICATE_NOT_YET_VALID"


class SignerAlgorithmUnsupported(SignerError):
    code = "ALGORITHM_UNSUPPORTED"


class KeyUnreadable(SignerError):
    code = "KEY_UNREADABLE"
