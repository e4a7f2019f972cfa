"""Turning pydantic's validation errors into field errors that name the field as the input spelled it."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from hub.errors import FIELD_INVALID, SCHEMA_VIOLATION, ErrorCode, FieldError, HubError
from hub.identifiers import validate_message_id

_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# Errors that are about the message's shape rather than a business rule.
_SHAPE_ERRORS = {"missing", "extra_forbidden", "model_type", "list_type", "dict_type", "model_attributes_type"}


def _short(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def hub_error_from_validation(
    exc: ValidationError,
    path_of: Callable[[Sequence[int | str]], str],
    *,
    message_id: str | None = None,
    message_type: str | None = None,
) -> HubError:
    """One HubError listing every field problem; its code is that of the first problem."""
    problems: list[tuple[ErrorCode, FieldError]] = []
    for err in exc.errors(include_url=False):
        kind: ErrorCode = SCHEMA_VIOLATION if err["type"] in _SHAPE_ERRORS else FIELD_INVALID
        field = path_of(err["loc"])
        value = err.get("input")
        shown = f" (value {value!r})" if isinstance(value, str | int | float) and len(str(value)) <= 60 else ""
        problems.append((kind, FieldError(kind.code, field, f"{_short(err['msg'])}{shown}")))
    first_kind, first = problems[0]
    return HubError(
        first_kind,
        first.message,
        first.field,
        [p for _, p in problems],
        message_id=message_id,
        message_type=message_type,
    )


def json_pointer(loc: Sequence[int | str]) -> str:
    return "/" + "/".join(str(part) for part in partner_names(loc))


def partner_names(loc: Sequence[int | str]) -> list[int | str]:
    """pydantic names a field by its alias, except an absent field whose default it validated: that one comes
    by its Python name, which partners never see. (Only camelCase models validate defaults.)"""
    return [to_camel(part) if isinstance(part, str) and "_" in part else part for part in loc]


def clip(text: str, limit: int) -> str:
    """Free text for a bounded field: no control characters (XML forbids them), at most `limit` characters."""
    text = _UNPRINTABLE.sub("?", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def readable_message_id(value: Any) -> str | None:
    """The message id if it is a well-formed one, so a refusal can name the message it refuses."""
    if not isinstance(value, str):
        return None
    try:
        return validate_message_id(value)
    except ValueError:
        return None
