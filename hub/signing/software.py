"""A signer holding its key in memory: PEM (RSA or SM2) or PKCS#12, loaded once."""

from __future__ import annotations

import base64
import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key, pkcs12

from . import sm2
from .algorithms import SignatureAlgorithm
from .base import SignerStatus, check_certificate, check_key_type
from .certificates import CertificateInfo, load_certificate, utcnow
from .errors import KeyUnreadable
from .secret import Secret

PrivateKey = rsa.RSAPrivateKey | int
"""An RSA key, or an SM2 private scalar (`cryptography` has no SM2)."""


def load_private_key(pem: bytes, password: Secret | None = None) -> PrivateKey:
    """An RSA key (PEM, encrypted or not) or an SM2 key (unencrypted PKCS#8 or SEC1 PEM)."""
    secret = password.reveal().encode("utf-8") if password else None
    try:
        key = load_pem_private_key(pem, secret)
    except (ValueError, UnsupportedAlgorithm) as exc:
        if b"ENCRYPTED" in pem or not _is_sm2_pem(pem):
            raise KeyUnreadable(f"cannot read the private key: {exc}") from None
        return sm2.private_key_from_der(_pem_body(pem))
    except TypeError as exc:  # a password given for a plain key or missing for an encrypted one
        raise KeyUnreadable(f"cannot read the private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyUnreadable(f"unsupported key type {type(key).__name__}")
    return key


def _pem_body(pem: bytes) -> bytes:
    lines = [line for line in pem.strip().splitlines() if not line.startswith(b"-----")]
    return base64.b64decode(b"".join(lines))


def _is_sm2_pem(pem: bytes) -> bool:
    try:
        sm2.private_key_from_der(_pem_body(pem))
    except ValueError:
        return False
    return True


class SoftwareKeySigner:
    kind = "software"

    def __init__(
        self,
        key: PrivateKey,
        certificate: x509.Certificate,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._key = key
        self._certificate = certificate
        self._info = CertificateInfo.of(certificate)
        self._clock = clock
        self._lock = threading.Lock()
        self._signatures = 0
        self._sm2_point = sm2.public_key_from_private(key) if isinstance(key, int) else b""

    @classmethod
    def from_pem(
        cls, key_path: str | Path, certificate_path: str | Path, password: Secret | None = None
    ) -> SoftwareKeySigner:
        key = load_private_key(Path(key_path).read_bytes(), password)
        return cls(key, load_certificate(Path(certificate_path)))

    @classmethod
    def from_pkcs12(cls, path: str | Path, password: Secret) -> SoftwareKeySigner:
        try:
            key, cert, _chain = pkcs12.load_key_and_certificates(
                Path(path).read_bytes(), password.reveal().encode("utf-8")
            )
        except ValueError as exc:
            raise KeyUnreadable(f"cannot read PKCS#12 {path}: {exc}") from None
        if not isinstance(key, rsa.RSAPrivateKey) or cert is None:
            raise KeyUnreadable(f"PKCS#12 {path} must hold an RSA key and its certificate")
        return cls(key, cert)

    def certificate(self) -> x509.Certificate:
        return self._certificate

    def sign(self, data: bytes, algorithm: SignatureAlgorithm) -> bytes:
        check_certificate(self._info, self._clock())
        check_key_type(self._info, algorithm)
        if isinstance(self._key, int):
            value = sm2.sign_digest(self._key, sm2.message_digest(self._sm2_point, data))
        else:
            value = self._key.sign(data, padding.PKCS1v15(), algorithm.signature_digest.hash)
        with self._lock:
            self._signatures += 1
        return value

    def status(self) -> SignerStatus:
        status = SignerStatus(kind=self.kind, state="ready", signatures_made=self._signatures)
        return status.with_certificate(self._info, self._clock())
