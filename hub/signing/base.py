"""The one small protocol every signer speaks, and the status it reports."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from cryptography import x509

from . import errors
from .algorithms import SignatureAlgorithm
from .certificates import CertificateInfo, utcnow


@runtime_checkable
class Signer(Protocol):
    def certificate(self) -> x509.Certificate:
        """The signing certificate (read from the key, card or client)."""
        ...

    def sign(self, data: bytes, algorithm: SignatureAlgorithm) -> bytes:
        """The raw signature value over `data` (RSA: PKCS#1 v1.5; SM2: r||s)."""
        ...

    def status(self) -> SignerStatus:
        """What an operator needs to know; never spends a PIN try."""
        ...


@dataclass
class SignerStatus:
    kind: str
    state: str
    """'ready', 'card absent', 'client unavailable', 'pin blocked', 'card locked', 'pin last try',
    'pin missing', 'certificate expired', 'certificate not yet valid'."""
    reader: str | None = None
    card_present: bool | None = None
    certificate_number: str | None = None
    enterprise_name: str | None = None
    organisation_code: str | None = None
    card_number: str | None = None
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    tries_left: int | None = None
    blocked: bool = False
    block_reason: str | None = None
    signatures_made: int = 0
    queue_depth: int = 0
    warnings: list[str] = field(default_factory=list)

    def with_certificate(self, info: CertificateInfo, now: dt.datetime | None = None) -> SignerStatus:
        """Fill the certificate fields; an expired certificate turns the state, one near expiry warns."""
        self.certificate_number = info.number
        self.enterprise_name = info.enterprise_name
        self.organisation_code = info.organisation_code
        self.card_number = info.card_number
        self.not_before, self.not_after = info.not_before, info.not_after
        validity = info.validity(now or utcnow())
        if validity == "expires soon":
            self.warnings.append(f"certificate {info.number} expires {info.not_after:%Y-%m-%d}")
        elif validity != "valid" and self.state == "ready":
            self.state = f"certificate {validity}"
        return self

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("not_before", "not_after"):
            if out[key] is not None:
                out[key] = out[key].isoformat()
        return out


def check_certificate(info: CertificateInfo, now: dt.datetime | None = None) -> None:
    """Refuse to sign with a certificate that is not valid now."""
    validity = info.validity(now or utcnow())
    if validity == "expired":
        raise errors.SignerCertificateExpired(f"certificate {info.number} expired {info.not_after:%Y-%m-%d}")
    if validity == "not yet valid":
        raise errors.SignerCertificateNotYetValid(
            f"certificate {info.number} is valid from {info.not_before:%Y-%m-%d}"
        )


def check_key_type(info: CertificateInfo, algorithm: SignatureAlgorithm) -> None:
    if info.key_type != algorithm.key_type:
        raise errors.SignerAlgorithmUnsupported(
            f"certificate {info.number} holds a {info.key_type} key; "
            f"{algorithm.name} needs {algorithm.key_type}"
        )
