"""The running hub: channels watched, work claimed by worker threads (in worker processes: hub/processes.py),
status served. The work queue's leases make a killed process harmless (its leased items return when their leases
run out).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from cryptography import x509

from hub.channels import Channel
from hub.channels.folder import FolderChannel, InboxWatch
from hub.config import (
    ConfigError,
    DeviceSignerConfig,
    EPortClientSignerConfig,
    HubConfig,
    SignerConfig,
    SoftwareSignerConfig,
)
from hub.mappers import MessageFormat
from hub.mappers.dxp import Dxp
from hub.mappers.hub_xml import HubXml
from hub.mappers.platform_json import PlatformJson
from hub.pipeline import INTAKE_BATCH, Pipeline
from hub.processes import WorkerProcesses
from hub.scheduler.runner import JobRunner
from hub.schemas import ALL_SCHEMAS, HUB_SCHEMAS, SchemaRegistry
from hub.signing import Signer, SigningError, SigningWorker, SoftwareKeySigner, load_certificate
from hub.signing.card import CardSigner
from hub.signing.eport_client import EPortClientSigner
from hub.status import StatusReader, StatusServer
from hub.store import Store
from hub.workqueue import DbWorkQueue, WorkQueue

log = logging.getLogger("hub")

RECOVER_EVERY_SECONDS = 10.0
# Overdue receipts are looked for this often at most (more often when a partner's timeout is shorter).
SWEEP_RECEIPTS_EVERY_SECONDS = 1.0
UPKEEP_EVERY_SECONDS = 1.0
WAIT_STEP_SECONDS = 0.2  # how soon the main thread sees a stop a signal asked for
# Recovery leaves alone what was claimed (renamed into intake/, which sets the file's ctime) less than this ago:
# with several hub processes on one store, a live one may have claimed it and be storing it now. Its owner
# stores it within milliseconds; should both store it anyway, the hub id (the primary key) keeps one.
RECOVER_GRACE_SECONDS = 5.0


MESSAGE_SCHEMAS = {f"{s.name}/{s.version}" for s in HUB_SCHEMAS}


def build_formats(config: HubConfig, registry: SchemaRegistry) -> dict[str, MessageFormat]:
    formats: dict[str, MessageFormat] = {}
    for name, partner in config.partners.items():
        if partner.format == "platform-json":
            formats[name] = PlatformJson()
        elif partner.schema_ in MESSAGE_SCHEMAS:
            formats[name] = HubXml(registry.get(partner.schema_))
        else:  # the registry also holds envelope schemas (dxp/…): those carry no messages of their own
            raise ConfigError(f"partners.{name}.schema: {partner.schema_!r} is not one of the hub's message "
                              f"schemas ({', '.join(sorted(MESSAGE_SCHEMAS))})")
    return formats


def build_envelopes(config: HubConfig, registry: SchemaRegistry) -> dict[str, Dxp]:
    """The envelope of each partner that has one, checked against its compiled schema."""
    envelopes: dict[str, Dxp] = {}
    for name, partner in config.partners.items():
        if partner.envelope is not None:
            try:
                envelopes[name] = Dxp(registry.get(partner.envelope))
            except KeyError as exc:
                raise ConfigError(f"partners.{name}.envelope: {exc.args[0]}") from None
    return envelopes


def load_trusted(config: HubConfig) -> dict[str, list[x509.Certificate]]:
    """Each partner's trusted certificates, read once; an unreadable one is a config error naming it."""
    trusted: dict[str, list[x509.Certificate]] = {}
    for name, partner in config.partners.items():
        trusted[name] = []
        for i, path in enumerate(partner.signing.trusted_certificates):
            try:
                trusted[name].append(load_certificate(path))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"partners.{name}.signing.trusted_certificates[{i}]: {path}: {exc}") from None
    return trusted


class Signers(Mapping[str, Signer]):
    """The configured signers by name. A card (PC/SC or through the E-Port client) is a slow, serial device:
    each sits behind its one SigningWorker, whose timeout bounds how long a pipeline worker waits for it."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self._signers: dict[str, Signer] = {}
        self._closers: list[Callable[[], None]] = []
        try:
            for name, signer in config.signers.items():
                self._signers[name] = self._build(name, signer)
        except BaseException:
            self.close()
            raise

    def _build(self, name: str, config: SignerConfig) -> Signer:
        where = f"signers.{name}"
        if isinstance(config, SoftwareSignerConfig):
            return _software_signer(where, config)
        _key, pin = config.pin
        device: CardSigner | EPortClientSigner
        if isinstance(config, EPortClientSignerConfig):
            device = EPortClientSigner(pin, config.state_dir, url=config.url, timeout=config.timeout_seconds)
        else:
            device = CardSigner(pin, config.state_dir, reader=config.reader)
        worker = SigningWorker(device, max_queue=config.max_queue, timeout=config.timeout_seconds, name=name)
        self._closers += [worker.close, device.close]  # the worker stops before its device closes
        return worker

    def status(self) -> dict[str, dict[str, Any]]:
        """Each signer's status (never spends a PIN try, never shows the holder's personal ID number)."""
        out: dict[str, dict[str, Any]] = {}
        for name, signer in self._signers.items():
            try:
                found = signer.status().as_dict()
            except Exception as exc:  # status must answer even when a signer cannot
                log.exception("status of signer %s failed", name)
                found = {"state": "status unavailable", "warnings": [f"{type(exc).__name__}: {exc}"]}
            signs_for = sorted(p for p, c in self.config.partners.items() if c.signing.signer == name)
            out[name] = {**found, "algorithm": self.config.signers[name].algorithm, "signs_for": signs_for}
        return out

    def close(self) -> None:
        for close in self._closers:
            close()
        self._closers.clear()

    def __getitem__(self, name: str) -> Signer:
        return self._signers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._signers)

    def __len__(self) -> int:
        return len(self._signers)


def require_pins(config: HubConfig) -> None:
    """Every PIN is where the config says: a missing one stops the start, rather than every message later."""
    for name, signer in config.signers.items():
        if isinstance(signer, DeviceSignerConfig):
            key, pin = signer.pin
            try:
                pin.reveal()
            except SigningError as exc:
                raise ConfigError(f"signers.{name}.{key}: {exc.detail}") from None


def _software_signer(where: str, config: SoftwareSignerConfig) -> Signer:
    for key in ("key", "certificate", "pkcs12"):
        path = getattr(config, key)
        if path is not None and not path.is_file():
            raise ConfigError(f"{where}.{key}: {path} is not a file")
    found = config.secret_from("password_env", "password_file", required=config.pkcs12 is not None)
    secret_key, password = found if found else ("password_env", None)
    try:
        if config.pkcs12 is not None:
            assert password is not None  # required with pkcs12 (the config says so)
            return SoftwareKeySigner.from_pkcs12(config.pkcs12, password)
        assert config.key is not None and config.certificate is not None
        return SoftwareKeySigner.from_pem(config.key, config.certificate, password)
    except SigningError as exc:
        key = secret_key if exc.code == "PIN_MISSING" else "pkcs12" if config.pkcs12 else "key"
        raise ConfigError(f"{where}.{key}: {exc.detail}") from None
    except ValueError as exc:
        raise ConfigError(f"{where}.certificate: {exc}") from None


class Hub:
    def __init__(self, config: HubConfig, worker_processes: WorkerProcesses | None = None,
                 first_worker: int = 0) -> None:
        """`worker_processes`: started with the hub, woken by its work, stopped with it (hub/processes.py).
        `first_worker`: in a worker process, the place of its first worker among the hub's (RabbitMQ ranks them)."""
        self.config = config
        self.worker_processes = worker_processes
        self.registry = SchemaRegistry(ALL_SCHEMAS)
        formats = build_formats(config, self.registry)
        envelopes = build_envelopes(config, self.registry)
        trusted = load_trusted(config)
        require_pins(config)
        self.signers = Signers(config)
        folders = [FolderChannel(name, Path(p.channel.root)) for name, p in config.partners.items()]
        self.channels: dict[str, Channel] = {channel.partner: channel for channel in folders}
        self._inboxes = [channel.inbox for channel in folders]
        self.arrivals: InboxWatch | None = None  # made when the intake starts: a worker process takes no input
        # One connection for each worker, the intake thread and the status interface.
        self.store = Store(config.store.url, connections=config.queue.workers + 2)
        self.store.create_schema()
        self.queue: WorkQueue
        if config.queue.kind == "rabbitmq":
            from hub.rabbitqueue import RabbitWorkQueue  # kombu is only loaded where RabbitMQ is used

            self.queue = RabbitWorkQueue(self.store, config, first_worker)
        else:
            self.queue = DbWorkQueue(self.store, config.queue.lease_seconds, config.queue.poll_seconds,
                                     worker_processes.wake if worker_processes else lambda: None)
        self.pipeline = Pipeline(config, self.store, self.queue, formats, self.channels, self.signers, trusted,
                                 envelopes)
        self.jobs = JobRunner(self)
        self.started_at = time.time()
        self.status_reader = StatusReader(config, self.store, self.started_at, self.signers.status,
                                          lambda: self.jobs.role,
                                          worker_processes.describe if worker_processes else list)
        self.status_server: StatusServer | None = None
        self._stop = threading.Event()
        self._stop_requested = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._recover()
        if self.config.status.enabled:
            self.status_server = StatusServer(self.status_reader, self.config.status.host, self.config.status.port)
            self.status_server.start()
            log.info("status interface on http://%s:%d/status", *self.status_server.address)
        self.arrivals = InboxWatch(self._inboxes)
        self._spawn("intake", self._intake_loop)
        self._spawn("upkeep", self._upkeep_loop)
        if not self.worker_processes:
            self.start_workers()
        for name, loop in self.queue.loops():
            self._spawn(name, lambda loop=loop: loop(self._stop))
        if self.config.scheduler.enabled:
            self.jobs.start()
        queue = self.config.queue
        workers = f"{queue.workers} worker{'s' * (queue.workers > 1)}" + (
            f" in each of {queue.processes} worker processes" if self.worker_processes else "")
        log.info("hub running: %d partners (new inputs %s), %d routes, %s, %d signers, store %s", len(self.channels),
                 "seen as they land" if self.arrivals.watching else "looked for every poll_seconds",
                 len(self.config.routes), workers, len(self.signers), self.store.engine.url)
        if self.worker_processes:
            self.worker_processes.keep_up()

    def start_workers(self) -> None:
        """The worker threads alone: all a worker process runs (hub/processes.py)."""
        for n in range(self.config.queue.workers):
            self._spawn(f"worker-{n + 1}", self._work_loop)

    def stop(self) -> None:
        self._stop.set()
        self.queue.notify()  # idle workers see the stop now
        if self.arrivals:
            self.arrivals.interrupt()  # and the intake
        if self.worker_processes:
            self.worker_processes.stop()
        self.jobs.stop()  # its jobs use the store and the signers: before they close
        for thread in self._threads:
            thread.join(timeout=10)
        if self.status_server:
            self.status_server.stop()
        self.signers.close()
        self.store.close()
        if self.arrivals:
            self.arrivals.close()
        log.info("hub stopped")

    def request_stop(self) -> None:
        """For a signal handler: it only sets a flag, which wait() sees within WAIT_STEP_SECONDS. A handler runs in
        the main thread wherever the signal finds it: had it set the stop event, as it did, and the signal come
        while the main thread held that event's lock (inside its wait), it would have waited for itself forever,
        and the hub ran on deaf to signals (seen once in a test run)."""
        self._stop_requested = True

    def wait(self) -> None:
        """Until request_stop(), keeping the worker processes up meanwhile; then the caller calls stop()."""
        while not self._stop_requested:
            time.sleep(WAIT_STEP_SECONDS)
            # Not once a stop is asked: Ctrl-C stops the worker processes too, which are not to be started again.
            if self.worker_processes and not self._stop_requested:
                self.worker_processes.keep_up()

    def _spawn(self, name: str, target: object) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _recover(self) -> None:
        """Inputs taken from a partner but not stored (the hub died in between) are stored now."""
        claimed_before = time.time() - RECOVER_GRACE_SECONDS
        for channel in self.channels.values():
            abandoned = []
            for claimed in channel.recover():
                try:
                    if claimed.path.stat().st_ctime < claimed_before:
                        abandoned.append(claimed)
                except FileNotFoundError:
                    continue  # settled since it was listed
            self.pipeline.take_in(abandoned, recovered=True)

    def _intake_loop(self) -> None:
        assert self.arrivals is not None
        poll = min(p.channel.poll_seconds for p in self.config.partners.values())
        next_recover = time.monotonic() + RECOVER_EVERY_SECONDS
        sweep_every = min(SWEEP_RECEIPTS_EVERY_SECONDS,
                          *(p.receipt_timeout_seconds for p in self.config.partners.values()))
        next_sweep = time.monotonic() + sweep_every
        while not self._stop.is_set():
            busy = False
            try:
                # A batch of inputs at a time, each channel in turn: the workers start on a backlog's first batch
                # while the rest is still being taken in (taking every file of a backlog at once kept them idle).
                for channel in self.channels.values():
                    claimed = channel.poll(INTAKE_BATCH)
                    self.pipeline.take_in(claimed)
                    busy |= len(claimed) == INTAKE_BATCH
                if time.monotonic() >= next_recover:
                    self._recover()
                    next_recover = time.monotonic() + RECOVER_EVERY_SECONDS
                if time.monotonic() >= next_sweep:
                    self.pipeline.sweep_overdue_receipts()
                    next_sweep = time.monotonic() + sweep_every
            except Exception:  # an input that could not be stored stays in intake/; the next recovery takes it
                log.exception("intake failed; retrying")
            if not busy:
                self.arrivals.wait(poll)

    def _upkeep_loop(self) -> None:
        """The store kept in shape here, off the workers' transactions: its counts summed (Store.compact_counts),
        SQLite's log copied into the database, and PostgreSQL's tables vacuumed and analyzed as their rows change
        (Store.vacuum)."""
        while not self._stop.wait(UPKEEP_EVERY_SECONDS):
            try:
                self.store.compact_counts()
                if self.store.is_sqlite:
                    self.store.checkpoint()
                elif vacuumed := self.store.vacuum(self.config.store.vacuum_rows):
                    log.debug("vacuumed %s", ", ".join(vacuumed))
            except Exception as exc:  # the store away (a restart): the next round tries again
                log.warning("store upkeep failed: %s: %s; trying again", type(exc).__name__, exc)

    def _work_loop(self) -> None:
        owner = f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"
        while not self._stop.is_set():
            try:
                items = self.queue.claim(owner, self.config.queue.batch)
            except Exception as exc:  # store or broker away (a restart): the work waits in the store
                log.warning("could not claim work: %s: %s; retrying", type(exc).__name__, exc)
                self._stop.wait(1.0)
                continue
            if not items:
                self.queue.idle()
                continue
            try:
                self.pipeline.handle(items)
            except Exception:  # not even a failure could be recorded: the leases run out and the work runs again
                log.exception("%s could not be finished; it runs again when its lease expires",
                              ", ".join(f"{item.kind} of {item.message}" for item in items))
            for item in items:
                self.queue.done(item)
