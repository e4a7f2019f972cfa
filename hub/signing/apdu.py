"""The command set of our card (ISO 7816-4 shaped), shared by the PC/SC signer and the virtual card.

SELECT        00 A4 04 00 Lc <AID>             -> 9000
READ BINARY   00 B0 <offset hi> <offset lo> Le -> certificate bytes from offset (DER), 9000
VERIFY        00 20 00 81 Lc <PIN>             -> 9000 | 63Cx (x tries left) | 6983 (locked)
VERIFY        00 20 00 81                      -> 9000 (verified) | 63Cx | 6983: reads the counter only
PSO:CDS       00 2A 9E 9A Lc <input> 00        -> signature, 9000 | 6982 (PIN not verified)
    RSA: input = DigestInfo (the card pads PKCS#1 v1.5); SM2: input = e = SM3(ZA || M), 32 bytes.
"""

from __future__ import annotations

AID = bytes.fromhex("F0454349485542")  # proprietary RID F0 + "ECIHUB"
PIN_REFERENCE = 0x81
READ_CHUNK = 0xFF  # short APDUs: Le up to 256; 255 keeps every response below pcscd's short-APDU limits

CLA = 0x00
INS_SELECT = 0xA4
INS_READ_BINARY = 0xB0
INS_VERIFY = 0x20
INS_PSO = 0x2A

SW_OK = 0x9000
SW_SECURITY_NOT_SATISFIED = 0x6982
SW_AUTH_BLOCKED = 0x6983
SW_WRONG_DATA = 0x6A80
SW_FILE_NOT_FOUND = 0x6A82
SW_WRONG_P1P2 = 0x6B00
SW_INS_NOT_SUPPORTED = 0x6D00
SW_CLA_NOT_SUPPORTED = 0x6E00
SW_WRONG_LENGTH = 0x6700
SW_CONDITIONS = 0x6985


def tries_left(sw: int) -> int | None:
    """x of a 63Cx answer: the PIN tries left."""
    return sw & 0x0F if sw & 0xFFF0 == 0x63C0 else None


def command(ins: int, p1: int, p2: int, data: bytes = b"", le: int | None = None) -> bytes:
    apdu = bytes([CLA, ins, p1, p2])
    if data:
        apdu += bytes([len(data)]) + data
    if le is not None:
        apdu += bytes([le & 0xFF])
    return apdu


def select() -> bytes:
    return command(INS_SELECT, 0x04, 0x00, AID)


def read_binary(offset: int) -> bytes:
    return command(INS_READ_BINARY, offset >> 8, offset & 0xFF, le=READ_CHUNK)


def verify(pin: bytes = b"") -> bytes:
    return command(INS_VERIFY, 0x00, PIN_REFERENCE, pin)


def sign(data: bytes) -> bytes:
    return command(INS_PSO, 0x9E, 0x9A, data, le=0)
