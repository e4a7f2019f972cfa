"""Shared helpers: a hub configured on a temporary folder, and ways to drop files and wait for results."""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hub.app import Hub
from hub.config import DEFAULT_CONFIG, HubConfig, load_config

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
UNDERWRITING = FIXTURES / "underwriting"
PARTNERS = ("platform", "insurer", "customs")


def hub_environ(root: Path, **extra: str) -> dict[str, str]:
    """Environment overrides that put the default config's store and folders under `root`."""
    env = {
        "HUB_STORE__URL": f"sqlite:///{root / 'hub.db'}",
        "HUB_STATUS__PORT": "0",
        "HUB_QUEUE__LEASE_SECONDS": "2",
        "HUB_RETRY__DELAYS_SECONDS": "[0.2, 0.5]",
    }
    for partner in PARTNERS:
        env[f"HUB_PARTNERS__{partner.upper()}__CHANNEL__ROOT"] = f'"{root / "exchange" / partner}"'
        env[f"HUB_PARTNERS__{partner.upper()}__CHANNEL__POLL_SECONDS"] = "0.05"
    env.update(extra)
    return env


def needs(available: bool, reason: str) -> None:
    """Skip a test whose tool or service is missing, but fail it where CI promises everything is there."""
    if available:
        return
    if os.environ.get("HUB_REQUIRE_SERVICES") == "1":
        pytest.fail(f"HUB_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


def wait_for(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def child_processes(pid: int) -> list[int]:
    """The running processes whose parent is `pid` (a hub's worker processes: hub/processes.py)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except OSError:  # gone meanwhile
            continue
        if parent == str(pid) and state != "Z":
            found.append(int(stat.parent.name))
    return found


class Exchange:
    """The partners' side of the drop folders."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, partner: str, name: str) -> Path:
        return self.root / partner / name

    def drop(self, partner: str, name: str, content: bytes) -> None:
        """Drop a file the way partners must: write NAME.tmp, then rename."""
        inbox = self.folder(partner, "in")
        inbox.mkdir(parents=True, exist_ok=True)
        tmp = inbox / (name + ".tmp")
        tmp.write_bytes(content)
        os.replace(tmp, inbox / name)

    def drop_fixture(self, path: Path) -> None:
        self.drop(path.name.split("-", 1)[0], path.name, path.read_bytes())

    def files(self, partner: str, folder: str, pattern: str = "*") -> list[Path]:
        return sorted(p for p in self.folder(partner, folder).glob(pattern) if not p.name.endswith(".tmp"))

    def wait_files(
        self, partner: str, folder: str, count: int, pattern: str = "*", timeout: float = 10.0
    ) -> list[Path]:
        return wait_for(
            lambda: (found := self.files(partner, folder, pattern)) and len(found) >= count and found,
            timeout, f"{count} file(s) {pattern} in {partner}/{folder}",
        )

    def receipts(self, partner: str) -> list[dict[str, Any]]:
        """Every receipt the hub delivered to `partner`, decoded, oldest first."""
        from hub.app import build_formats
        from hub.schemas import HUB_SCHEMAS, SchemaRegistry

        fmt = build_formats(_default_config(), SchemaRegistry(HUB_SCHEMAS))[partner]
        found = [fmt.decode(p.read_bytes()) for p in self.files(partner, "out", "Receipt_*")]
        return [json.loads(r.model_dump_json(by_alias=True)) for r in sorted(found, key=lambda r: r.return_time)]

    def receipt_for(self, partner: str, ref: str, timeout: float = 10.0) -> dict[str, Any]:
        """The one receipt answering message id (or file name) `ref`, waiting for it to arrive."""

        def find() -> list[dict[str, Any]]:
            return [r for r in self.receipts(partner) if ref in (r.get("refMessageId"), r.get("refFileName"))]

        found = wait_for(find, timeout, what=f"the receipt for {ref} in {partner}/out")
        assert len(found) == 1, f"{len(found)} receipts answer {ref}"
        return found[0]


def platform_receipt(ref: str) -> bytes:
    """The platform's receipt accepting the PendingPolicy `ref` the hub delivered to it, as the platform sends it."""
    from hub.mappers.platform_json import PlatformJson
    from hub.models import Receipt, ReturnStatus, Sender
    from hub.models.base import BEIJING, new_message_id

    now = datetime.now(BEIJING)
    return PlatformJson().encode(Receipt(
        message_id=new_message_id(), created_at=now,
        sender=Sender(cop_code="91330782MA2H7K3R9J", cop_name="单一窗口", dxp_id="DXPSWP0000000001"),
        ref_message_id=ref, ref_message_type="PendingPolicy", return_status=ReturnStatus.ACCEPTED,
        return_time=now, return_info="已收到",
    ))


def _default_config() -> HubConfig:
    return load_config(DEFAULT_CONFIG, environ={})


@pytest.fixture
def exchange(tmp_path: Path) -> Exchange:
    return Exchange(tmp_path / "exchange")


@pytest.fixture
def hub_env(tmp_path: Path) -> dict[str, str]:
    """The test hub's environment overrides (a module may put the hub on another backend by overriding this)."""
    return hub_environ(tmp_path)


@pytest.fixture
def hub_config(hub_env: dict[str, str]) -> HubConfig:
    return load_config(DEFAULT_CONFIG, environ=hub_env)


@pytest.fixture
def hub(hub_config: HubConfig) -> Iterator[Hub]:
    running = Hub(hub_config)
    running.start()
    yield running
    running.stop()


POSTGRES_SERVER = os.environ.get("HUB_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")


def postgres_reachable() -> bool:
    import psycopg

    try:
        psycopg.connect(f"{POSTGRES_SERVER.replace('+psycopg', '')}/postgres", connect_timeout=3).close()
    except psycopg.Error:
        return False
    return True


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test (its URL), dropped afterwards: tests never share rows."""
    import psycopg

    needs(postgres_reachable(), f"PostgreSQL is not reachable at {POSTGRES_SERVER}")
    name = f"hub_test_{secrets.token_hex(6)}"
    admin = f"{POSTGRES_SERVER.replace('+psycopg', '')}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{POSTGRES_SERVER}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The store on each backend the hub supports: every test using it runs on both."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub.db'}"
    else:
        with fresh_postgres_database() as url:
            yield url


@pytest.fixture
def start_hub() -> Iterator[Callable[[HubConfig], Hub]]:
    """Start hubs with configs a test builds itself; every one is stopped afterwards."""
    started: list[Hub] = []

    def start(config: HubConfig) -> Hub:
        hub = Hub(config)
        started.append(hub)
        hub.start()
        return hub

    yield start
    for hub in started:
        hub.stop()


@pytest.fixture
def backend_hub(store_url: str, tmp_path: Path, start_hub: Callable[[HubConfig], Hub]) -> Hub:
    """A running hub on the default config and temporary folders, on each store backend."""
    return start_hub(load_config(DEFAULT_CONFIG, environ=hub_environ(tmp_path, HUB_STORE__URL=store_url)))


RABBITMQ_URL = os.environ.get("HUB_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672//")


def rabbitmq_reachable() -> bool:
    from kombu import Connection

    try:
        with Connection(RABBITMQ_URL, connect_timeout=5) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception:  # kombu raises the transport's own errors
        return False
    return True


def delete_rabbitmq_queues(prefix: str) -> None:
    """Delete every queue named under `prefix`. Each quorum queue keeps files open in the broker: left behind,
    a few hundred used up its file handles and it stopped accepting connections (seen on this machine)."""
    import subprocess

    assert prefix.startswith("hubtest-") and len(prefix) > 12
    subprocess.run(["rabbitmqctl", "eval", "length([rabbit_amqqueue:delete(Q, false, false, <<\"hub tests\">>) || "
                    "Q <- rabbit_amqqueue:list(), binary:match(element(4, amqqueue:get_name(Q)), "
                    f"<<\"{prefix}.\">>) =:= {{0,{len(prefix) + 1}}}])."], capture_output=True, timeout=120)


BACKENDS = ("sqlite", "postgresql", "rabbitmq")


@contextmanager
def backend_environ(backend: str) -> Iterator[dict[str, str]]:
    """The environment overrides that put a hub on one of its three backends: the embedded default (SQLite and
    its work table), PostgreSQL and its work table, RabbitMQ + PostgreSQL (queues under a fresh prefix, deleted
    afterwards)."""
    if backend == "sqlite":
        yield {}
        return
    with fresh_postgres_database() as url:
        env = {"HUB_STORE__URL": url}
        if backend != "rabbitmq":
            yield env
            return
        needs(rabbitmq_reachable(), f"RabbitMQ is not reachable at {RABBITMQ_URL}")
        prefix = f"hubtest-{secrets.token_hex(6)}"
        env |= {"HUB_QUEUE__KIND": "rabbitmq", "HUB_QUEUE__URL": RABBITMQ_URL, "HUB_QUEUE__NAME_PREFIX": prefix}
        try:
            yield env
        finally:
            delete_rabbitmq_queues(prefix)
