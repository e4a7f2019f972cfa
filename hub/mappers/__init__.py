"""Mappers: pure functions between partners' bytes and canonical models, no I/O.

Each partner speaks one format; a format decodes bytes into a canonical message (raising HubError with a
stable code and the field's path) and encodes a canonical message into bytes its receiver accepts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from hub.models import CanonicalMessage


class MessageFormat(Protocol):
    name: str
    file_suffix: str

    def decode(self, raw: bytes) -> CanonicalMessage: ...

    def encode(self, message: CanonicalMessage) -> bytes: ...

    def field_path(self, message_type: str, loc: Sequence[int | str]) -> str:
        """Where a canonical field (by its camelCase names) sits in this format, for error reports."""
        ...
