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

from hub.signing.secret import Secret

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
    # PostgreSQL: the running hub vacuums a table of its own once this many of its rows (and a fifth of the live
    # ones) are dead, and analyzes it once that many (and half) changed, whether or not the server's autovacuum
    # runs (Store.vacuum); 0: leaves it to autovacuum.
    vacuum_rows: Annotated[int, Field(ge=0)] = 1000


class QueueConfig(Section):
    """"db": the store's work table is the queue. "rabbitmq": the table stays the record (outbox) and RabbitMQ
    carries the work to the workers of every hub process (hub/rabbitqueue.py); it needs a PostgreSQL store."""

    kind: Literal["db", "rabbitmq"] = "db"
    # Processes running workers on this machine. 1: the one `run` started runs them; 2 or more: it starts that many
    # worker processes and runs none itself (hub/processes.py). Python runs one thread of a process at a time;
    # processes use the machine's cores.
    processes: Annotated[int, Field(ge=1, le=64)] = 2
    workers: Annotated[int, Field(ge=1, le=64)] = 1  # worker threads of each process
    lease_seconds: Annotated[float, Field(gt=0)] = 30.0
    poll_seconds: Annotated[float, Field(gt=0, le=10)] = 0.05
    # Steps a worker takes at once: a batch of messages is decided in one transaction and its files delivered
    # together (one transaction per step spent most of the hub's time on commits and round trips; with 16 a
    # backlog went 20-45 % slower than with 64, by backend, and the latency at 100/s was the same).
    batch: Annotated[int, Field(ge=1, le=500)] = 64
    url: Annotated[str, Field(pattern=r"^amqps?://")] = "amqp://guest:guest@127.0.0.1:5672//"
    name_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,100}$")] = "hub"
    # Steps each worker holds ahead (at least batch), in whole broker messages of up to 16.
    prefetch: Annotated[int, Field(ge=1, le=1000)] = 128
    # Losses of a step (its worker died or stalled past the lease) before it is parked as a poison message; on
    # RabbitMQ also the work queue's x-delivery-limit (deliveries without an ack).
    delivery_limit: Annotated[int, Field(ge=1)] = 10
    # A row queued this long ago and never claimed is published again (the broker lost its message).
    requeue_after_seconds: Annotated[float, Field(gt=0)] = 300.0


class RetryConfig(Section):
    """The one retry policy (Camel's redelivery policy): delays between attempts, jitter, then park."""

    delays_seconds: list[Annotated[float, Field(ge=0)]] = [1, 5, 30, 120, 600]
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.2
    # While a signer cannot sign (card out, PIN blocked), a message waits and is tried again this often,
    # without counting against delays_seconds: a card may stay out for hours and nothing may park for it.
    wait_seconds: Annotated[float, Field(gt=0, le=300)] = 2.0

    @property
    def max_attempts(self) -> int:
        return len(self.delays_seconds) + 1


class FolderChannelConfig(Section):
    kind: Literal["folder"] = "folder"
    root: Path
    # How often in/ is listed. On Linux an input is seen as it lands (hub.channels.folder.InboxWatch): this bounds
    # only how late the hub takes one the kernel did not report (from a folder it cannot watch).
    poll_seconds: Annotated[float, Field(gt=0, le=60)] = 0.2


class SecretSource(Section):
    """A secret is named, never written: the environment variable or the file that holds it."""

    def secret_from(self, env_key: str, file_key: str, *, required: bool) -> tuple[str, Secret] | None:
        """(the key that names it, the secret); None when neither is given and it is optional."""
        env, file = getattr(self, env_key), getattr(self, file_key)
        if env is not None and file is not None:
            raise ValueError(f"give {env_key} or {file_key}, not both")
        if env is None and file is None:
            if required:
                raise ValueError(f"give {env_key} (an environment variable) or {file_key} (a file)")
            return None
        return (env_key, Secret.from_env(env)) if env is not None else (file_key, Secret.from_file(file))


_EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
_Algorithm = Literal["rsa-sha256", "rsa-sha1", "sm2-sm3"]


class SoftwareSignerConfig(SecretSource):
    """A key held by the hub: PEM key and certificate, or PKCS#12; its password, if any, by env or file."""

    kind: Literal["software"]
    key: Path | None = None
    certificate: Path | None = None
    pkcs12: Path | None = None
    password_env: _EnvName | None = None
    password_file: Path | None = None
    algorithm: _Algorithm = "rsa-sha256"

    @model_validator(mode="after")
    def _one_key(self) -> SoftwareSignerConfig:
        if (self.pkcs12 is None) == (self.key is None or self.certificate is None):
            raise ValueError("give key and certificate (PEM files), or pkcs12 (a .p12 file)")
        self.secret_from("password_env", "password_file", required=self.pkcs12 is not None)
        return self


class DeviceSignerConfig(SecretSource):
    """A card, reached one way or another: a PIN, one worker signing one request at a time, a PIN guard."""

    pin_env: _EnvName | None = None
    pin_file: Path | None = None
    state_dir: Path = Path("var/signing")  # where PIN blocks persist across restarts
    max_queue: Annotated[int, Field(ge=1)] = 100
    # How long one signature may wait for the card before its message is put back to wait (under the lease).
    timeout_seconds: Annotated[float, Field(gt=0)] = 5.0

    @model_validator(mode="after")
    def _pin(self) -> DeviceSignerConfig:
        self.secret_from("pin_env", "pin_file", required=True)
        return self

    @property
    def pin(self) -> tuple[str, Secret]:
        """(the key that names the PIN, the PIN's source)."""
        found = self.secret_from("pin_env", "pin_file", required=True)
        assert found is not None  # required
        return found


class CardSignerConfig(DeviceSignerConfig):
    """The E-Port card in a PC/SC reader."""

    kind: Literal["card"]
    reader: str | None = None  # a reader name or its prefix; none: the first reader holding a card
    algorithm: _Algorithm = "rsa-sha256"


class EPortClientSignerConfig(DeviceSignerConfig):
    """The card behind the E-Port client's local WebSocket service; it signs with the card's own algorithm."""

    kind: Literal["eport-client"]
    url: Annotated[str, Field(pattern=r"^wss?://")] = "ws://127.0.0.1:61232"
    algorithm: Literal["rsa-sha1", "sm2-sm3"] = "rsa-sha1"


SignerConfig = Annotated[
    SoftwareSignerConfig | CardSignerConfig | EPortClientSignerConfig, Field(discriminator="kind")
]


class PartnerSigningConfig(Section):
    """Signatures with one partner: who signs what the hub sends it, and what it must send signed."""

    signer: str | None = None  # a [signers] name: signs every business message the hub sends this partner
    require_signature: bool = False  # refuse what this partner sends unsigned
    # Certificates (PEM or DER files) whose signatures the hub believes from this partner. With some and
    # require_signature false, a signed message is checked and an unsigned one passes.
    trusted_certificates: list[Path] = []

    @model_validator(mode="after")
    def _required_needs_trust(self) -> PartnerSigningConfig:
        if self.require_signature and not self.trusted_certificates:
            raise ValueError("require_signature needs trusted_certificates: whose signature would do?")
        return self

    @property
    def verifies(self) -> bool:
        return self.require_signature or bool(self.trusted_certificates)


class PartnerConfig(Section):
    """A party the hub exchanges messages with: how it speaks, and where its messages come and go."""

    format: Literal["platform-json", "xml"]
    # For xml partners: the schema and version they speak, e.g. "eci/1.0" (hub/schemas/eci/1.0/).
    schema_: str | None = Field(default=None, alias="schema", pattern=r"^[a-z]+/\d+\.\d+$")
    channel: FolderChannelConfig
    max_message_bytes: Annotated[int, Field(gt=0)] = 16 * 1024 * 1024
    signing: PartnerSigningConfig = PartnerSigningConfig()
    # The transport envelope this partner's messages travel in, e.g. "dxp/1.0" (hub/schemas/dxp/1.0/); none:
    # bare XML. With one, `dxp_id` is the partner's node id (SenderId of what it sends, ReceiverId of what it gets).
    envelope: Annotated[str, Field(pattern=r"^dxp/\d+\.\d+$")] | None = None
    dxp_id: Annotated[str, Field(min_length=1, max_length=16)] | None = None
    # DxpRep codes that mean the node took an envelope (default: the receipt ladder's 2, 120, 399, 800).
    dxp_success_codes: frozenset[str] | None = None
    # What the hub delivers to this partner (receipts and DxpReps aside) expects its receipt within this time;
    # without one it is sent again, the same bytes and message id, up to receipt_resends times, then parked.
    receipt_timeout_seconds: Annotated[float, Field(gt=0)] = 600.0
    receipt_resends: Annotated[int, Field(ge=0)] = 3

    @model_validator(mode="after")
    def _xml_needs_schema(self) -> PartnerConfig:
        if self.format == "xml" and not self.schema_:
            raise ValueError('an xml partner must name the schema it speaks, e.g. schema = "eci/1.0"')
        if self.envelope is not None and self.format != "xml":
            raise ValueError("envelope: only xml partners' messages travel in the DXP envelope")
        if self.envelope is not None and self.dxp_id is None:
            raise ValueError('envelope needs dxp_id, the partner\'s node id, e.g. dxp_id = "DXPINS0000000001"')
        if self.format != "xml" and self.signing != PartnerSigningConfig():
            raise ValueError("signing: only xml partners' messages carry an XML signature")
        return self


class RouteRetryConfig(Section):
    """A route's own tiers and jitter, for partners slower or faster to come back than the rest; what it
    leaves out is [retry]'s."""

    delays_seconds: list[Annotated[float, Field(ge=0)]] | None = None
    jitter: Annotated[float, Field(ge=0, le=1)] | None = None


# A route's `from` for the messages the hub writes itself (a scheduled job's statistics): no partner sends them.
HUB_ORIGIN = "hub"


class RouteConfig(Section):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    message: str
    from_partner: str = Field(alias="from")
    to_partner: str = Field(alias="to")
    retry: RouteRetryConfig | None = None


class StatusConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8470


class JobConfig(Section):
    """One scheduled job: which registered function it runs (default: the job's own name), when, with what."""

    run: str | None = None  # a name in hub.scheduler.jobs.JOBS; one function may run as several jobs
    cron: str | None = None  # five fields, in scheduler.timezone: "30 2 * * *"
    interval_seconds: Annotated[float, Field(gt=0)] | None = None
    enabled: bool = True
    params: dict[str, Any] = {}

    @model_validator(mode="after")
    def _one_trigger(self) -> JobConfig:
        if (self.cron is None) == (self.interval_seconds is None):
            raise ValueError('give cron (e.g. "30 2 * * *") or interval_seconds, one of them')
        if self.cron is not None:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(self.cron)
            except ValueError as exc:
                raise ValueError(f"cron {self.cron!r}: {exc}") from None
        return self


class SchedulerConfig(Section):
    """The job runner: one leader across all hub processes on one store runs every job."""

    enabled: bool = True
    timezone: str = "Asia/Shanghai"  # cron schedules are business hours in Beijing
    # How often a process that does not lead tries for the leader lock: a dead leader's jobs move within this.
    leader_check_seconds: Annotated[float, Field(gt=0, le=300)] = 2.0
    # A run missed (hub down, leader handing over) still runs if it is at most this late; missed runs of one
    # job run once, not once each (coalesce).
    misfire_grace_seconds: Annotated[int, Field(ge=1)] = 6 * 3600

    @model_validator(mode="after")
    def _known_timezone(self) -> SchedulerConfig:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone {self.timezone!r} is not a known time zone, e.g. Asia/Shanghai") from None
        return self


class RetentionConfig(Section):
    """The retention sweep: settled messages older than this leave the hot store for the archive."""

    delivered_days: Annotated[float, Field(gt=0)] = 90
    archive_dir: Path = Path("var/archive")  # one gzipped JSON line per removed message, per day of removal


class HubConfig(Section):
    hub: HubIdentity = HubIdentity()
    store: StoreConfig = StoreConfig()
    queue: QueueConfig = QueueConfig()
    retry: RetryConfig = RetryConfig()
    status: StatusConfig = StatusConfig()
    signers: dict[str, SignerConfig] = {}
    partners: dict[str, PartnerConfig]
    routes: list[RouteConfig] = []
    scheduler: SchedulerConfig = SchedulerConfig()
    jobs: dict[str, JobConfig] = {}
    retention: RetentionConfig = RetentionConfig()

    def route_retry(self, route: RouteConfig) -> RetryConfig:
        """The retry policy for the processing and delivery of the route's messages."""
        if route.retry is None:
            return self.retry
        return self.retry.model_copy(update=route.retry.model_dump(exclude_none=True))

    @model_validator(mode="after")
    def _routes_name_partners(self) -> HubConfig:
        from hub.models import MESSAGE_TYPES

        if HUB_ORIGIN in self.partners:
            raise ValueError(f"partners.{HUB_ORIGIN}: the name is the hub's own, for routes of what it writes")
        for i, route in enumerate(self.routes):
            for end, known in ((route.from_partner, {*self.partners, HUB_ORIGIN}), (route.to_partner, self.partners)):
                if end not in known:
                    raise ValueError(f"routes[{i}] names partner {end!r}, which is not under [partners]")
            if route.message not in MESSAGE_TYPES:
                raise ValueError(f"routes[{i}] names message {route.message!r}, which the hub does not know")
        return self

    @model_validator(mode="after")
    def _signers_fit(self) -> HubConfig:
        for name, partner in self.partners.items():
            if partner.signing.signer is not None and partner.signing.signer not in self.signers:
                raise ValueError(f"partners.{name}.signing.signer names {partner.signing.signer!r}, "
                                 "which is not under [signers]")
        for name, signer in self.signers.items():
            # A signature must come back while the worker still holds its work item's lease.
            if isinstance(signer, DeviceSignerConfig) and signer.timeout_seconds >= self.queue.lease_seconds:
                raise ValueError(f"signers.{name}.timeout_seconds must be under queue.lease_seconds "
                                 f"({self.queue.lease_seconds})")
        return self

    @model_validator(mode="after")
    def _rabbitmq_needs_postgresql(self) -> HubConfig:
        # Several hub processes share RabbitMQ; they need a store they can all write at once.
        if self.queue.kind == "rabbitmq" and not self.store.url.startswith("postgresql"):
            raise ValueError('queue.kind = "rabbitmq" needs a PostgreSQL store: store.url must be postgresql+psycopg://…')
        return self

    @model_validator(mode="after")
    def _jobs_registered(self) -> HubConfig:
        from hub.scheduler.jobs import JOBS

        for name, job in self.jobs.items():
            if (job.run or name) not in JOBS:
                raise ValueError(f"jobs.{name} runs {job.run or name!r}, which is not a job the hub has "
                                 f"({', '.join(sorted(JOBS))})")
        return self

    @model_validator(mode="after")
    def _envelope_fits(self) -> HubConfig:
        enveloped = sorted(name for name, p in self.partners.items() if p.envelope is not None)
        if enveloped and len(self.hub.dxp_id) > 16:  # the envelope's SenderId and ReceiverId hold 16 characters
            raise ValueError(f"hub.dxp_id {self.hub.dxp_id!r} has {len(self.hub.dxp_id)} characters; partners "
                             f"{', '.join(enveloped)} use the DXP envelope, whose node ids have at most 16")
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
        loc = list(err["loc"])
        if loc[:1] == ["signers"] and len(loc) > 2:
            del loc[2]  # pydantic names the signer's kind there; the key is signers.NAME.KEY
        where = ".".join(str(p) for p in loc) or "(top level)"
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
