"""The platform's JSON: one document per business event, `messageType` naming the canonical model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import from_json

from hub.errors import MALFORMED_JSON, MESSAGE_EMPTY, SCHEMA_VIOLATION, UNKNOWN_MESSAGE_TYPE, HubError
from hub.mappers.fields import hub_error_from_validation, json_pointer, readable_message_id
from hub.models import MESSAGE_TYPES, CanonicalMessage


class PlatformJson:
    name = "platform-json"
    file_suffix = ".json"

    def encode(self, message: CanonicalMessage) -> bytes:
        # Byte for byte what json.dumps(indent=2, ensure_ascii=False) writes, from pydantic's serialiser (Rust,
        # several times faster), with messageType put first.
        body = message.model_dump_json(by_alias=True, exclude_none=True, indent=2)
        return f'{{\n  "messageType": {json.dumps(message.message_type)},{body[1:]}'.encode()

    def field_path(self, message_type: str, loc: Sequence[int | str]) -> str:
        return json_pointer(loc)

    def decode(self, raw: bytes) -> CanonicalMessage:
        if not raw.strip():
            raise HubError(MESSAGE_EMPTY, "the file is empty")
        data = _parse(raw)
        if not isinstance(data, dict):
            raise HubError(SCHEMA_VIOLATION, f"a message is a JSON object, not {type(data).__name__}", "/")
        message_id = readable_message_id(data.get("messageId"))
        kind = data.pop("messageType", None)
        model = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
        if model is None:
            raise HubError(
                UNKNOWN_MESSAGE_TYPE,
                f"messageType {kind!r} is not one of {', '.join(sorted(MESSAGE_TYPES))}",
                "/messageType",
                message_id=message_id,
            )
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise hub_error_from_validation(exc, json_pointer, message_id=message_id, message_type=kind) from exc


def _parse(raw: bytes) -> Any:
    try:  # pydantic's JSON parser (jiter): the same values as json.loads, in half the time
        return from_json(raw, cache_strings="keys")
    except ValueError:
        pass  # json.loads reads a few documents jiter refuses (a BOM, UTF-16, lone surrogates) and words the errors
    try:
        return json.loads(raw)
    except UnicodeDecodeError as exc:
        raise HubError(MALFORMED_JSON, f"not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    except json.JSONDecodeError as exc:
        raise HubError(MALFORMED_JSON, f"{exc.msg} at line {exc.lineno} column {exc.colno}") from exc


def platform_json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of every platform message, generated from the canonical models."""
    schemas = {}
    for name, model in sorted(MESSAGE_TYPES.items()):
        schema = model.model_json_schema(by_alias=True)
        schema["properties"] = {"messageType": {"const": name}, **schema["properties"]}
        schema["required"] = ["messageType", *schema.get("required", [])]
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"urn:sw-eci-hub:platform:{name}"
        schemas[name] = schema
    return schemas
