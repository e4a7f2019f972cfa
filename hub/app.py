"""The running hub: channels polled, work claimed by worker threads, status served.

Threads, not processes, on the embedded default: SQLite serialises writers anyway, and the work queue's
leases make a killed process harmless (its leased items return when their leases run out).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path

from hub.channels import Channel
from hub.channels.folder import FolderChannel
from hub.config import ConfigError, HubConfig
from hub.mappers import MessageFormat
from hub.mappers.insurer_xml import InsurerXml
from hub.mappers.platform_json import PlatformJson
from hub.pipeline import Pipeline
from hub.schemas import HUB_SCHEMAS, SchemaRegistry
from hub.status import StatusReader, StatusServer
from hub.store import Store
from hub.workqueue import DbWorkQueue

log = logging.getLogger("hub")

RECOVER_EVERY_SECONDS = 10.0


def build_formats(config: HubConfig, registry: SchemaRegistry) -> dict[str, MessageFormat]:
    formats: dict[str, MessageFormat] = {}
    for name, partner in config.partners.items():
        if partner.format == "platform-json":
            formats[name] = PlatformJson()
        else:
            try:
                formats[name] = InsurerXml(registry.get(partner.schema_ or ""))
            except KeyError as exc:
                raise ConfigError(f"partners.{name}.schema: {exc.args[0]}") from None
    return formats


class Hub:
    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.registry = SchemaRegistry(HUB_SCHEMAS)
        formats = build_formats(config, self.registry)
        self.channels: dict[str, Channel] = {
            name: FolderChannel(name, Path(p.channel.root)) for name, p in config.partners.items()
        }
        self.store = Store(config.store.url)
        self.store.create_schema()
        self.queue = DbWorkQueue(self.store, config.queue.lease_seconds)
        self.pipeline = Pipeline(config, self.store, self.queue, formats, self.channels)
        self.started_at = time.time()
        self.status_reader = StatusReader(config, self.store, self.started_at)
        self.status_server: StatusServer | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._recover()
        if self.config.status.enabled:
            self.status_server = StatusServer(self.status_reader, self.config.status.host, self.config.status.port)
            self.status_server.start()
            log.info("status interface on http://%s:%d/status", *self.status_server.address)
        self._spawn("intake", self._intake_loop)
        for n in range(self.config.queue.workers):
            self._spawn(f"worker-{n + 1}", self._work_loop)
        log.info("hub running: %d partners, %d routes, %d workers, store %s",
                 len(self.channels), len(self.config.routes), self.config.queue.workers, self.store.engine.url)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        if self.status_server:
            self.status_server.stop()
        self.store.close()
        log.info("hub stopped")

    def request_stop(self) -> None:
        """Safe from a signal handler: the main thread's wait() returns and it calls stop()."""
        self._stop.set()

    def wait(self) -> None:
        while not self._stop.wait(0.5):
            pass

    def _spawn(self, name: str, target: object) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _recover(self) -> None:
        """Inputs taken from a partner but not stored (the hub died in between) are stored now."""
        for channel in self.channels.values():
            for claimed in channel.recover():
                self.pipeline.take_in(claimed)

    def _intake_loop(self) -> None:
        poll = min(p.channel.poll_seconds for p in self.config.partners.values())
        next_recover = time.monotonic() + RECOVER_EVERY_SECONDS
        while not self._stop.is_set():
            try:
                for channel in self.channels.values():
                    for claimed in channel.poll():
                        self.pipeline.take_in(claimed)
                if time.monotonic() >= next_recover:
                    self._recover()
                    next_recover = time.monotonic() + RECOVER_EVERY_SECONDS
            except Exception:  # an input that could not be stored stays in intake/; the next recovery takes it
                log.exception("intake failed; retrying")
            self._stop.wait(poll)

    def _work_loop(self) -> None:
        owner = f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"
        while not self._stop.is_set():
            try:
                item = self.queue.claim(owner)
            except Exception:
                log.exception("could not claim work; retrying")
                self._stop.wait(1.0)
                continue
            if item is None:
                self._stop.wait(self.config.queue.poll_seconds)
            else:
                self.pipeline.handle(item)
