"""SM2 signatures with SM3 (GB/T 32918, GM/T 0009): raw r||s, signer ID 1234567812345678.

The curve arithmetic comes from gmssl; the SM3 hashing (ZA and e) from `cryptography`. gmssl's own nonce
helper uses the `random` module, which is predictable, so the nonce k is drawn here with `secrets`: a
guessable k gives away the private key.
"""

from __future__ import annotations

import secrets

from cryptography.hazmat.primitives import hashes
from gmssl import sm2 as gm

from . import der

SIGNER_ID = b"1234567812345678"
SM2_CURVE_OID = "1.2.156.10197.1.301"
EC_PUBLIC_KEY_OID = "1.2.840.10045.2.1"
_CURVE = gm.default_ecc_table
_N = int(_CURVE["n"], 16)


def sm3(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


def _public_hex(public_key: bytes) -> str:
    """gmssl wants x||y in hex, without the 04 prefix of an uncompressed point."""
    if len(public_key) == 65 and public_key[0] == 4:
        public_key = public_key[1:]
    if len(public_key) != 64:
        raise ValueError("an SM2 public key is an uncompressed point of 64 bytes")
    return public_key.hex()


def message_digest(public_key: bytes, message: bytes, signer_id: bytes = SIGNER_ID) -> bytes:
    """e = SM3(ZA || M): what the card signs; ZA binds the signer ID and the public key."""
    entl = (len(signer_id) * 8).to_bytes(2, "big")
    curve = bytes.fromhex(_CURVE["a"] + _CURVE["b"] + _CURVE["g"])
    za = sm3(entl + signer_id + curve + bytes.fromhex(_public_hex(public_key)))
    return sm3(za + message)


def sign_digest(private_key: int, digest: bytes) -> bytes:
    """Sign e (32 bytes) with the private scalar; 64 bytes r||s."""
    signer = gm.CryptSM2(private_key=f"{private_key:064x}", public_key="")
    while True:
        k = secrets.randbelow(_N - 1) + 1
        signature = signer.sign(digest, f"{k:064x}")
        if signature is not None:  # r or s came out 0: draw another k
            return bytes.fromhex(signature)


def verify_digest(public_key: bytes, digest: bytes, signature: bytes) -> bool:
    if len(signature) != 64:
        return False
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not (0 < r < _N and 0 < s < _N):
        return False
    verifier = gm.CryptSM2(private_key="", public_key=_public_hex(public_key))
    return bool(verifier.verify(signature.hex(), digest))


def public_key_from_private(private_key: int) -> bytes:
    point = gm.CryptSM2(private_key="", public_key="")._kg(private_key, _CURVE["g"])
    return b"\x04" + bytes.fromhex(point)


def public_key_from_spki(spki: bytes) -> bytes:
    """The uncompressed point from a SubjectPublicKeyInfo naming the SM2 curve."""
    _tag, body, _end = der.read_tlv(spki)
    (alg_tag, alg, _), (key_tag, bits, _) = der.children(body)
    oids = [der.decode_oid(v) for t, v, _ in der.children(alg) if t == der.OBJECT_IDENTIFIER]
    if alg_tag != der.SEQUENCE or key_tag != der.BIT_STRING or oids != [EC_PUBLIC_KEY_OID, SM2_CURVE_OID]:
        raise ValueError("not an SM2 public key")
    return bits[1:]  # skip the unused-bits byte


def private_key_from_der(data: bytes) -> int:
    """The private scalar from PKCS#8 (`openssl genpkey -algorithm SM2`) or SEC1 (`EC PRIVATE KEY`)."""
    _tag, body, _end = der.read_tlv(data)
    parts = der.children(body)
    if len(parts) >= 3 and parts[1][0] == der.SEQUENCE and parts[2][0] == der.OCTET_STRING:
        oids = [der.decode_oid(v) for t, v, _ in der.children(parts[1][1]) if t == der.OBJECT_IDENTIFIER]
        if SM2_CURVE_OID not in oids:
            raise ValueError("not an SM2 private key")
        _tag, body, _end = der.read_tlv(parts[2][1])
        parts = der.children(body)
    if len(parts) < 2 or parts[1][0] != der.OCTET_STRING:
        raise ValueError("not an EC private key")
    return int.from_bytes(parts[1][1], "big")
