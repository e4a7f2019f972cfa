"""E-Port certificates: the certificate number, the enterprise fields in private extensions, validity.

The extension 1.3.6.1.4.1.5315.100.5.8 holds the card holder's personal ID number: it is never read here, so
it can reach no status, log or receipt.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from . import der, sm2
from .algorithms import SignatureAlgorithm

EPORT_EXTENSION = "1.3.6.1.4.1.5315.100.5"
ENTERPRISE_NAME_OID = x509.ObjectIdentifier(f"{EPORT_EXTENSION}.1")
CARD_NUMBER_OID = x509.ObjectIdentifier(f"{EPORT_EXTENSION}.9")
ORGANISATION_CODE_OID = x509.ObjectIdentifier(f"{EPORT_EXTENSION}.11")
EXPIRY_WARNING = dt.timedelta(days=30)


def load_certificate(data: bytes | str | Path) -> x509.Certificate:
    """A certificate from PEM, DER or the bare base64 body the E-Port client returns; or a path to one."""
    if isinstance(data, Path):
        data = data.read_bytes()
    if isinstance(data, str):
        data = data.encode("ascii")
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data)
    if data[:1] != b"\x30":
        data = base64.b64decode(b"".join(data.split()))
    return x509.load_der_x509_certificate(data)


def certificate_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def certificate_number(cert: x509.Certificate) -> str:
    """The E-Port certificate number (KeyName): the serial number in lower-case hex, whole bytes."""
    digits = f"{cert.serial_number:x}"
    return digits.zfill(len(digits) + len(digits) % 2)


def key_type(cert: x509.Certificate) -> str:
    oid = cert.public_key_algorithm_oid.dotted_string
    if oid == sm2.EC_PUBLIC_KEY_OID and _sm2_point(cert) is not None:
        return "sm2"
    if oid == "1.2.840.113549.1.1.1":
        return "rsa"
    return oid


def sm2_public_key(cert: x509.Certificate) -> bytes:
    point = _sm2_point(cert)
    if point is None:
        raise ValueError("the certificate does not hold an SM2 key")
    return point


def _sm2_point(cert: x509.Certificate) -> bytes | None:
    # tbsCertificate: [0] version, serial, signature, issuer, validity, subject, subjectPublicKeyInfo, ...
    _tag, tbs, _end = der.read_tlv(cert.tbs_certificate_bytes)
    fields = der.children(tbs)
    if fields[0][0] == der.CONTEXT_0:
        fields = fields[1:]
    try:
        return sm2.public_key_from_spki(fields[5][2])
    except ValueError:
        return None


def verify_signature(
    cert: x509.Certificate, algorithm: SignatureAlgorithm, data: bytes, signature: bytes
) -> bool:
    """True when `signature` over `data` was made by the key of `cert` with `algorithm`."""
    if algorithm.key_type == "sm2":
        if key_type(cert) != "sm2":
            return False
        point = sm2_public_key(cert)
        return sm2.verify_digest(point, sm2.message_digest(point, data), signature)
    public_key = cert.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        return False
    try:
        public_key.verify(signature, data, padding.PKCS1v15(), algorithm.signature_digest.hash)
    except InvalidSignature:
        return False
    return True


def _extension_text(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str | None:
    try:
        value = cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
    try:
        tag, body, end = der.read_tlv(raw)
        if end == len(raw) and tag == der.BMP_STRING:
            return body.decode("utf-16-be")
        if end == len(raw) and tag in (
            der.UTF8_STRING,
            der.PRINTABLE_STRING,
            der.IA5_STRING,
            der.OCTET_STRING,
        ):
            raw = body
    except ValueError:
        pass  # not DER: some issuers put the bare text in the extension
    for encoding in ("utf-8", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return None


@dataclass(frozen=True)
class CertificateInfo:
    """What the hub may show about a signing certificate."""

    number: str
    subject: str
    issuer: str
    enterprise_name: str | None
    organisation_code: str | None
    card_number: str | None
    key_type: str
    not_before: dt.datetime
    not_after: dt.datetime

    @classmethod
    def of(cls, cert: x509.Certificate) -> CertificateInfo:
        return cls(
            number=certificate_number(cert),
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            enterprise_name=_extension_text(cert, ENTERPRISE_NAME_OID),
            organisation_code=_extension_text(cert, ORGANISATION_CODE_OID),
            card_number=_extension_text(cert, CARD_NUMBER_OID),
            key_type=key_type(cert),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
        )

    def validity(self, now: dt.datetime) -> str:
        """'not yet valid', 'expired', 'expires soon' (within 30 days) or 'valid'."""
        if now < self.not_before:
            return "not yet valid"
        if now > self.not_after:
            return "expired"
        if now > self.not_after - EXPIRY_WARNING:
            return "expires soon"
        return "valid"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
