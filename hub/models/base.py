"""The canonical form every message takes inside the hub, whatever format it arrived in."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from enum import IntEnum
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.alias_generators import to_camel

from hub import identifiers

BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")

# The JSON Schema shows each identifier's shape; the validator adds the check character rules.
USCC = Annotated[
    str, Field(json_schema_extra={"pattern": "^[0-9A-HJ-NP-RTUW-Y]{18}$"}),
    AfterValidator(identifiers.validate_uscc),
]
OrgCode = Annotated[
    str, Field(json_schema_extra={"pattern": "^[0-9A-Z]{8}[0-9X]$"}), AfterValidator(identifiers.validate_org_code)
]
Mobile = Annotated[
    str, Field(json_schema_extra={"pattern": "^1[3-9][0-9]{9}$"}), AfterValidator(identifiers.validate_mobile)
]
Landline = Annotated[str, Field(max_length=20), AfterValidator(identifiers.validate_landline)]
DeclarationNo = Annotated[
    str, Field(json_schema_extra={"pattern": "^[0-9]{18}$"}), AfterValidator(identifiers.validate_declaration_no)
]
ExportDeclarationNo = Annotated[
    str, Field(json_schema_extra={"pattern": "^[0-9]{18}$"}),
    AfterValidator(identifiers.validate_export_declaration_no),
]
HsCode = Annotated[
    str, Field(json_schema_extra={"pattern": "^[0-9]{10}$"}), AfterValidator(identifiers.validate_hs_code)
]
Swift = Annotated[
    str, Field(json_schema_extra={"pattern": "^[A-Z]{6}[A-Z0-9]{2}([A-Z0-9]{3})?$"}),
    AfterValidator(identifiers.validate_swift),
]
InquirySerial = Annotated[
    str, Field(json_schema_extra={"pattern": "^[0-9]{18}$"}), AfterValidator(identifiers.validate_inquiry_serial)
]
ShipmentSerial = Annotated[
    str, Field(json_schema_extra={"pattern": "^[0-9]{20}$"}), AfterValidator(identifiers.validate_shipment_serial)
]
DocumentNo = Annotated[str, Field(pattern=r"^[A-Z0-9-]{6,30}$")]
LongText = Annotated[str, Field(min_length=1, max_length=2000)]
PlatformEmail = Annotated[str, Field(max_length=100), AfterValidator(identifiers.validate_platform_email)]
MessageId = Annotated[
    str, Field(json_schema_extra={"pattern": "^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$"}),
    AfterValidator(identifiers.validate_message_id),
]
Text = Annotated[str, Field(min_length=1, max_length=200)]
# Amounts in a currency, to the cent. JSON Schema has no digit facets; the x- keys carry them to the XSD.
Money = Annotated[
    Decimal,
    Field(gt=0, max_digits=14, decimal_places=2, json_schema_extra={"x-total-digits": 14, "x-fraction-digits": 2}),
]


def new_message_id() -> str:
    return identifiers.time_ordered_id()


def beijing_now() -> datetime:
    return datetime.now(BEIJING).replace(microsecond=0)


# Characters XML 1.0 cannot carry: a message holding one could be accepted from JSON and never delivered.
_NOT_IN_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class Record(BaseModel):
    """Base of every canonical structure: camelCase names outside, no unknown fields, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, str_strip_whitespace=True
    )

    @field_validator("*")
    @classmethod
    def _text_fits_xml(cls, value: object) -> object:
        # Runs on every field of every record, so one call with exact class tests (enums' values are fixed).
        texts = (value,) if value.__class__ is str else value if isinstance(value, tuple) else ()
        for text in texts:
            if isinstance(text, str) and (found := _NOT_IN_XML.search(text)):
                raise ValueError(f"contains the control character U+{ord(found.group()):04X}, which XML cannot carry")
        return value


def required_when(field: str, other: str, values: tuple[object, ...], message: str) -> Any:
    """A validator: `field` may be absent unless `other` (declared before it) holds one of `values`.

    The field must be declared with `Field(default=None, validate_default=True)` so absence is checked too;
    the error then names the missing field itself.
    """

    def check(cls: type, value: object, info: ValidationInfo) -> object:
        if value is None and info.data.get(other) in values:
            raise ValueError(message)
        return value

    return field_validator(field)(check)


def only(field: str, allowed: object, message: str) -> Any:
    """A validator: `field` must hold exactly `allowed` (the legal-person card, an accepted declaration, …)."""

    def check(cls: type, value: object) -> object:
        if value != allowed:
            raise ValueError(message)
        return value

    return field_validator(field)(check)


class AppType(IntEnum):
    NEW = 1
    CHANGE = 2
    DELETE = 3


class Sender(Record):
    """Who sent the message: the customs convention's sender block (copCode, copName, dxpId)."""

    cop_code: Annotated[str, Field(min_length=1, max_length=18)]
    cop_name: Text
    dxp_id: Annotated[str, Field(min_length=1, max_length=30)]


class CanonicalMessage(Record):
    """The head every message carries: its id, when it was made, what it does, and who sent it."""

    message_type: ClassVar[str]
    family: ClassVar[str]
    # Which of the hub's XML schemas carries it ("eci": insurer, "cus": customs) and its number there: the
    # root is PREFIXnnnMessage and the receipt answering it is nnn+1 (requests are odd).
    schema_name: ClassVar[str] = "eci"
    xml_code: ClassVar[int]
    # The field holding the key of the conversation the message belongs to (None: it belongs to none), and
    # where a refusal about the key points (by default, that field).
    key_field: ClassVar[str | None] = None
    key_path: ClassVar[tuple[str, ...]] = ()

    message_id: MessageId
    created_at: datetime
    app_type: AppType = AppType.NEW
    sender: Sender

    @field_validator("created_at")
    @classmethod
    def _beijing_seconds(cls, value: datetime) -> datetime:
        # The customs convention (appTime) carries Beijing time to the second; keep the same precision
        # so that every format round-trips to the same instant.
        if value.tzinfo is None:
            value = value.replace(tzinfo=BEIJING)
        return value.astimezone(BEIJING).replace(microsecond=0)

    def business_key(self) -> str | None:
        """The key of the conversation this message belongs to, if it belongs to one."""
        return str(getattr(self, self.key_field)) if self.key_field else None

    @classmethod
    def key_location(cls) -> tuple[str, ...]:
        """Where the conversation's key sits, as partners spell the fields (for error paths)."""
        if cls.key_path or cls.key_field is None:
            return cls.key_path
        return (cls.model_fields[cls.key_field].alias or cls.key_field,)
