"""The signature algorithms of the E-Port profile, kept as data (as signxml does)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives import hashes

from .errors import AlgorithmUnsupported

DSIG = "http://www.w3.org/2000/09/xmldsig#"
CHINAPORT_2022 = "http://www.chinaport.gov.cn/2022/04/xmldsig#"

KeyType = Literal["rsa", "sm2"]


@dataclass(frozen=True)
class Digest:
    uri: str
    hash: hashes.HashAlgorithm
    digest_info_prefix: bytes = b""
    """DER DigestInfo header for PKCS#1 v1.5: a card pads the DigestInfo it is given."""

    def compute(self, data: bytes) -> bytes:
        digest = hashes.Hash(self.hash)
        digest.update(data)
        return digest.finalize()


SHA1 = Digest(f"{DSIG}sha1", hashes.SHA1(), bytes.fromhex("3021300906052b0e03021a05000414"))
SHA256 = Digest(
    "http://www.w3.org/2001/04/xmlenc#sha256",
    hashes.SHA256(),
    bytes.fromhex("3031300d060960864801650304020105000420"),
)
SM3 = Digest(f"{CHINAPORT_2022}sm3", hashes.SM3())


@dataclass(frozen=True)
class SignatureAlgorithm:
    name: str
    uri: str
    key_type: KeyType
    reference_digest: Digest
    """DigestMethod of the Reference (the document digest)."""
    signature_digest: Digest
    """Hash inside the signature over SignedInfo (for SM2, e = SM3(ZA || M) builds on it)."""
    hub_signs: bool = True
    """False for variants the hub accepts from partners but never produces."""


ALGORITHMS: dict[str, SignatureAlgorithm] = {
    a.name: a
    for a in (
        SignatureAlgorithm(
            "rsa-sha256", "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256", "rsa", SHA256, SHA256
        ),
        SignatureAlgorithm("rsa-sha1", f"{DSIG}rsa-sha1", "rsa", SHA1, SHA1),
        SignatureAlgorithm("sm2-sm3", f"{CHINAPORT_2022}sm2-sm3", "sm2", SM3, SM3),
        # Seen in the field: the W3C namespace for SM2-SM3 with a SHA-1 document digest.
        SignatureAlgorithm("sm2-sm3-w3c", f"{DSIG}sm2-sm3", "sm2", SHA1, SM3, hub_signs=False),
    )
}
BY_URI = {a.uri: a for a in ALGORITHMS.values()}
DEFAULT = "rsa-sha256"


def algorithm(name: str) -> SignatureAlgorithm:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise AlgorithmUnsupported(f"unknown signature algorithm {name!r}") from None


def signing_algorithm(name: str) -> SignatureAlgorithm:
    found = algorithm(name)
    if not found.hub_signs:
        raise AlgorithmUnsupported(f"{name} is accepted from partners but the hub does not sign with it")
    return found
