"""Configuration: TOML, overridden key by key from the environment, validated by pydantic.

`HUB_STATUS__PORT=9000` overrides `[status] port`; `HUB_PARTNERS__INSURER__CHANNEL__ROOT=/srv/x` overrides a
nested key. A bad value stops start-up with one line naming the key (ConfigError).
Secrets never live here: keys name the environment variable or file that holds them.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ENV_PREFIX = "HUB_"
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "hub.toml"


class ConfigError(Exception):
    """One line: which key, what is wrong."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HubIdentity(Section):
    """Who the hub is when it writes its own messages (receipts): the sender block."""

    cop_code: Annotated[str, Field(min_length=1, max_length=18)] = "SWECIHUB"
    cop_name: str = "单一窗口出口信用保险数据交换枢纽"
    dxp_id: Annotated[str, Field(min_length=1, max_length=30)] = "DXPHUB0000000001"


class StoreConfig(Section):
    url: str = "sqlite:///var/hub.db"


class QueueConfig(Section):
    kind: Literal["db"] = "db"
    workers: Annotated[int, Field(ge=1, le=64)] = 2
    lease_seconds: Annotated[float, Field(gt=0)] = 30.0
    poll_seconds: Annotated[float, Field(gt=0, le=10)] = 0.05


class RetryConfig(Section):
    """The one retry policy (Camel's redelivery policy): delays between attempts, jitter, then park."""

    delays_seconds: list[Annotated[float, Field(ge=0)]] = [1, 5, 30, 120, 600]
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.2

    @property
    def max_attempts(self) -> int:
        return len(self.delays_seconds) + 1


class FolderChannelConfig(Section):
    kind: Literal["folder"] = "folder"
    root: Path
    poll_seconds: Annotated[float, Field(gt=0, le=60)] = 0.2


class PartnerConfig(Section):
    """A party the hub exchanges messages with: how it speaks, and where its messages come and go."""

    format: Literal["platform-json", "xml"]
    # For xml partners: the schema and version they speak, e.g. "eci/1.0" (hub/schemas/eci/1.0/).
    schema_: str | None = Field(default=None, alias="schema", pattern=r"^[a-z]+/\d+\.\d+$")
    channel: FolderChannelConfig
    max_message_bytes: Annotated[int, Field(gt=0)] = 16 * 1024 * 1024

    @model_validator(mode="after")
    def _xml_needs_schema(self) -> PartnerConfig:
        if self.format == "xml" and not self.schema_:
            raise ValueError('an xml partner must name the schema it speaks, e.g. schema = "eci/1.0"')
        return self


class RouteConfig(Section):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    message: str
    from_partner: str = Field(alias="from")
    to_partner: str = Field(alias="to")


class StatusConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8470


class HubConfig(Section):
    hub: HubIdentity = HubIdentity()
    store: StoreConfig = StoreConfig()
    queue: QueueConfig = QueueConfig()
    retry: RetryConfig = RetryConfig()
    status: StatusConfig = StatusConfig()
    partners: dict[str, PartnerConfig]
    routes: list[RouteConfig] = []

    @model_validator(mode="after")
    def _routes_name_partners(self) -> HubConfig:
        from hub.models import MESSAGE_TYPES

        for i, route in enumerate(self.routes):
            for end in (route.from_partner, route.to_partner):
                if end not in self.partners:
                    raise ValueError(f"routes[{i}] names partner {end!r}, which is not under [partners]")
            if route.message not in MESSAGE_TYPES:
                raise ValueError(f"routes[{i}] names message {route.message!r}, which the hub does not know")
        return self


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> HubConfig:
    path = path or DEFAULT_CONFIG
    environ = os.environ if environ is None else environ
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    for key, value in sorted(environ.items()):
        if key.startswith(ENV_PREFIX) and "__" in key:
            _override(data, key[len(ENV_PREFIX):].lower().split("__"), value)
    try:
        return HubConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"config {path}: {where}: {err['msg']}{more}") from exc


def _override(data: dict[str, Any], keys: list[str], raw: str) -> None:
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            return
    node[keys[-1]] = _env_value(raw)


def _env_value(raw: str) -> Any:
    """An environment value read as a TOML value when it is one (numbers, booleans, lists), else as text."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
