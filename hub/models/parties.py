"""Parties and documents that several message families share."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Base64Bytes, Field, ValidationInfo, field_validator

from hub.models.base import USCC, OrgCode, Record, Text

MAX_ATTACHMENT_BYTES = 4 * 1024 * 1024


class Enterprise(Record):
    """The small or micro exporter (小微企业) the conversation is about."""

    name: Text
    uscc: USCC
    org_code: OrgCode

    @field_validator("org_code")
    @classmethod
    def _org_code_inside_uscc(cls, value: str, info: ValidationInfo) -> str:
        uscc = info.data.get("uscc")  # absent when uscc itself failed: that error is reported already
        if uscc and uscc[8:17] != value:
            raise ValueError(f"must equal positions 9-17 of uscc {uscc} ({uscc[8:17]})")
        return value


class Insurer(Record):
    name: Text
    institution_code: Annotated[str, Field(pattern=r"^[0-9A-Z]{4,18}$")]  # 保险机构编码


class CardKind(StrEnum):
    LEGAL_PERSON = "legal-person"  # 法人卡
    OPERATOR = "operator"  # 操作员卡


class Attachment(Record):
    """A file carried inside the message, at most 4 MB."""

    file_name: Annotated[str, Field(pattern=r"^[^/\\]{1,100}$")]
    content: Base64Bytes

    @field_validator("content")
    @classmethod
    def _at_most_4_mb(cls, value: bytes) -> bytes:
        if len(value) > MAX_ATTACHMENT_BYTES:
            raise ValueError(f"is {len(value)} bytes; an attachment may be at most {MAX_ATTACHMENT_BYTES} bytes (4 MB)")
        return value


class PdfDocument(Attachment):
    """A PDF carried inside the message (the application form, the electronic policy, the agreement)."""

    file_name: Annotated[str, Field(pattern=r"^[^/\\]{1,100}\.pdf$")]

    @field_validator("content")
    @classmethod
    def _is_pdf(cls, value: bytes) -> bytes:
        if not value.startswith(b"%PDF-"):
            raise ValueError("is not a PDF (the decoded content does not start with %PDF-)")
        return value
