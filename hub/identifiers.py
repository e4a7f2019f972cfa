"""Identifiers of the trade and insurance world, each with its check rule (DOMAIN.md, "Identifiers").

Each validator returns the value unchanged or raises ValueError with a sentence that says which rule failed;
pydantic turns that into a field error carrying the field's path.
"""

from __future__ import annotations

import os
import re
import time
import uuid

USCC_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)

_USCC_SHAPE = re.compile(r"[0-9A-HJ-NP-RTUW-Y]{18}")
_ORG_SHAPE = re.compile(r"[0-9A-Z]{8}[0-9X]")
_MOBILE = re.compile(r"1[3-9]\d{9}")
_LANDLINE = re.compile(r"0\d{2,3}-?\d{7,8}(-\d{1,6})?")
# The platform refuses underscores, hyphens and other special characters in an email's local part.
_EMAIL = re.compile(r"[A-Za-z0-9]+(\.[A-Za-z0-9]+)*@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9-]+)+")
_MESSAGE_ID = re.compile(r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}")


def uscc_check_char(first17: str) -> str:
    total = sum(USCC_CHARSET.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return USCC_CHARSET[(31 - total % 31) % 31]


def org_code_check_char(first8: str) -> str:
    total = sum(int(c, 36) * w for c, w in zip(first8, _ORG_WEIGHTS, strict=True))
    check = 11 - total % 11
    return {10: "X", 11: "0"}.get(check, str(check))


def validate_uscc(value: str) -> str:
    if not _USCC_SHAPE.fullmatch(value):
        raise ValueError(
            "a unified social credit code is 18 characters from 0-9 and A-Y without I, O, S, V, Z"
        )
    expected = uscc_check_char(value[:17])
    if value[17] != expected:
        raise ValueError(f"check character is {value[17]!r} but GB 32100 gives {expected!r}")
    org = value[8:17]
    if org_code_check_char(org[:8]) != org[8]:
        raise ValueError(f"positions 9-17 ({org}) are not a valid organisation code")
    return value


def validate_org_code(value: str) -> str:
    if not _ORG_SHAPE.fullmatch(value):
        raise ValueError("an organisation code is 8 characters from 0-9, A-Z and a check character")
    expected = org_code_check_char(value[:8])
    if value[8] != expected:
        raise ValueError(f"check character is {value[8]!r} but GB 11714 gives {expected!r}")
    return value


def validate_mobile(value: str) -> str:
    if not _MOBILE.fullmatch(value):
        raise ValueError("a mainland mobile number is 11 digits starting 13-19")
    return value


def validate_landline(value: str) -> str:
    if not _LANDLINE.fullmatch(value):
        raise ValueError("a landline is an area code starting 0, then 7 or 8 digits, e.g. 0571-87654321")
    return value


def validate_platform_email(value: str) -> str:
    if not _EMAIL.fullmatch(value):
        raise ValueError(
            "the platform accepts letters and digits (dot-separated) before @, no underscore, hyphen "
            "or other special characters"
        )
    return value


def time_ordered_id() -> str:
    """A new uppercase UUID whose first 48 bits are the time in milliseconds (the layout of RFC 9562's version 7):
    ids made one after another sort together, so each store index on them grows at its end. With random ids every
    new row landed on its own page of each index, and each transaction wrote each such page whole to SQLite's
    log: the hub wrote 150 KB a message (log, checkpoints and files), against 100 KB with these."""
    rand_a, rand_b = int.from_bytes(os.urandom(2), "big") & 0xFFF, int.from_bytes(os.urandom(8), "big") >> 2
    milliseconds = time.time_ns() // 1_000_000
    return str(uuid.UUID(int=milliseconds << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b)).upper()


def validate_message_id(value: str) -> str:
    if not _MESSAGE_ID.fullmatch(value):
        raise ValueError("a message id is a 36-character uppercase UUID")
    return value


_DECLARATION_NO = re.compile(r"\d{4}(19|20)\d{2}[01]\d{9}")
_HS_CODE = re.compile(r"\d{10}")
_SWIFT = re.compile(r"[A-Z]{4}[A-Z]{2}[A-Z0-9]{2}([A-Z0-9]{3})?")
_INQUIRY_SERIAL = re.compile(r"(20\d{2})\d{14}")
_SHIPMENT_SERIAL = re.compile(r"\d{20}")


def validate_declaration_no(value: str) -> str:
    """报关单号: customs office (4) + year (4) + 1 import / 0 export (1) + serial (9); no check digit."""
    if not _DECLARATION_NO.fullmatch(value):
        raise ValueError(
            "a declaration number is 18 digits: customs office (4), year (4), 0 export or 1 import, serial (9)"
        )
    return value


def validate_export_declaration_no(value: str) -> str:
    validate_declaration_no(value)
    if value[8] != "0":
        raise ValueError(f"position 9 is {value[8]}: an export declaration has 0 there (1 is an import)")
    return value


def validate_hs_code(value: str) -> str:
    if not _HS_CODE.fullmatch(value):
        raise ValueError("an HS code (海关商品编号) is 10 digits")
    return value


def validate_swift(value: str) -> str:
    if not _SWIFT.fullmatch(value):
        raise ValueError("a SWIFT/BIC is 4 bank letters, 2 country letters, 2 location characters, optional 3 branch")
    return value


def validate_inquiry_serial(value: str) -> str:
    """投保/询保流水号: 18 digits, the year then a sequence (e.g. 202400000000037819)."""
    if not _INQUIRY_SERIAL.fullmatch(value):
        raise ValueError("an inquiry serial number is 18 digits starting with the year (20xx)")
    return value


def validate_shipment_serial(value: str) -> str:
    """出运信息流水号: 20 digits."""
    if not _SHIPMENT_SERIAL.fullmatch(value):
        raise ValueError("a shipment serial number is 20 digits")
    return value
