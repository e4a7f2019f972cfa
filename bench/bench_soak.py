"""Soak: minutes at a steady rate, partners answering: the hub's memory, files, /status and latency as its store grows

The hub runs as in the end-to-end section (`python run_hub.py`, 2 worker processes, the store under var/, the drop
folders in /dev/shm), on the embedded default and on RabbitMQ + PostgreSQL, for 10 minutes each (SOAK_MINUTES in the
environment). This process drops the same mix at 40 messages a second and plays each partner as a partner would: it
takes what the hub delivers to its out/ folder, and answers each forwarded message with its own receipt (which ends
the hub's wait for it, as in production), so the hub also takes in a receipt a message. Once a minute a second
thread notes each hub process's resident memory (VmRSS), open files and threads, and times GET /status and GET
/metrics, which count the whole store. The rows compare the end with the second minute (a warmed-up hub): a hub that
is to run for months must hold its memory, files and threads flat, and answer its operators as fast on a full store
as on an empty one (retention keeps 90 days). On 2026-11-24 such a soak found /status counting every message 22
times: 129 ms at the start, 2.4 s after 12 minutes (115,000 messages stored). Since 04:47 UTC that day they read
counts the store keeps beside the messages (message_counts, conversation_counts), not the messages.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from bench import Result, Unavailable
from bench.bench_e2e import (
    BACKENDS,
    PARTNERS,
    VAR,
    Backend,
    Message,
    Mix,
    RunningHub,
    exchange_place,
    on_each,
    p99,
)
from hub.mappers import MessageFormat
from hub.models import Receipt, ReturnStatus, Sender
from hub.models.base import BEIJING, new_message_id

SOAK_MINUTES = float(os.environ.get("SOAK_MINUTES", "10"))
SOAK_RATE = 40.0  # messages a second, and as many receipts back: a hub busy, not saturated, on this machine
SAMPLE_SECONDS = 60.0
SOAKED = ("embedded (SQLite store and DB queue)", "RabbitMQ + PostgreSQL")
PARTNER = Sender(cop_code="91330782MA2H7K3R9J", cop_name="伙伴", dxp_id="DXPSWP0000000001")


class Partners:
    """The partners' side: takes what the hub delivered (forwarded messages and receipts), answers each forwarded
    one with an accepting receipt, and notes each forwarded message's latency from its drop."""

    def __init__(self, hub: RunningHub, formats: dict[str, MessageFormat]) -> None:
        self.hub = hub
        self.formats = formats
        self.dropped: dict[str, float] = {}  # message id: when, until its forwarded copy is taken
        self.sent = 0
        self.latencies: list[float] = []  # ms, in the order they came
        self._answered = 0

    def drop(self, message: Message) -> None:
        self.dropped[message.message_id] = self.hub.drop(message)
        self.sent += 1

    def take_and_answer(self) -> None:
        for partner in PARTNERS:
            with os.scandir(self.hub.exchange / partner / "out") as entries:
                for entry in entries:
                    if entry.name.endswith(".tmp"):
                        continue
                    kind, _, rest = entry.name.partition("_")
                    written = entry.stat().st_mtime
                    os.unlink(entry.path)
                    if kind != "Receipt":
                        message_id = rest.rsplit(".", 1)[0]
                        self.latencies.append((written - self.dropped.pop(message_id)) * 1000)
                        self._answer(partner, kind, message_id)

    def _answer(self, partner: str, message_type: str, message_id: str) -> None:
        now = datetime.now(BEIJING)
        receipt = Receipt(message_id=new_message_id(), created_at=now, sender=PARTNER, ref_message_id=message_id,
                          ref_message_type=message_type, return_status=ReturnStatus.ACCEPTED, return_time=now,
                          return_info="已收到")
        self._answered += 1
        fmt = self.formats[partner]
        inbox = self.hub.exchange / partner / "in"
        name = f"{partner}-receipt-{self._answered:08d}{fmt.file_suffix}"
        (inbox / f"{name}.tmp").write_bytes(fmt.encode(receipt))
        os.replace(inbox / f"{name}.tmp", inbox / name)


class Sample:
    """The hub's processes and its answers to operators at one moment."""

    def __init__(self, hub: RunningHub, messages: int, latencies: list[float]) -> None:
        self.messages = messages  # dropped so far
        self.latencies = sorted(latencies)  # since the previous sample
        self.rss_mb = self.files = self.threads = 0.0
        for process in hub.processes():
            status = dict(line.split(":", 1) for line in Path(f"/proc/{process}/status").read_text().splitlines())
            self.rss_mb += int(status["VmRSS"].split()[0]) / 1024
            self.threads += int(status["Threads"])
            self.files += len(os.listdir(f"/proc/{process}/fd"))
        self.status_ms, status = _timed_get(hub, "/status")
        self.metrics_ms, _ = _timed_get(hub, "/metrics")
        self.stored = sum(sum(states.values()) for states in json.loads(status)["messages"]["by_state"].values())


def _timed_get(hub: RunningHub, path: str) -> tuple[float, bytes]:
    start = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{hub.port}{path}", timeout=120) as answer:
        body = answer.read()
    return (time.perf_counter() - start) * 1000, body


def soak(backend: Backend, mix: Mix) -> list[Sample]:
    VAR.mkdir(exist_ok=True)
    with (backend.setup() as overrides, tempfile.TemporaryDirectory(prefix="bench-", dir=VAR) as tmp,
          tempfile.TemporaryDirectory(prefix="hub-bench-exchange-", dir=exchange_place()) as exchange,
          RunningHub(Path(tmp), Path(exchange), overrides) as hub):
        for partner in PARTNERS:
            for folder in ("in", "out"):
                (hub.exchange / partner / folder).mkdir(parents=True, exist_ok=True)
        partners = Partners(hub, mix.formats)
        samples: list[Sample] = []
        stop = threading.Event()
        taken = 0  # latencies sampled so far

        def sample_every_minute() -> None:  # its own thread: a slow /status must not hold the partners back
            nonlocal taken
            while not stop.wait(SAMPLE_SECONDS):
                latencies = partners.latencies[taken:]
                taken += len(latencies)
                samples.append(Sample(hub, partners.sent, latencies))

        sampler = threading.Thread(target=sample_every_minute, name="soak-sampler")
        sampler.start()
        try:
            begin, batch = time.monotonic(), list[Message]()
            while time.monotonic() - begin < SOAK_MINUTES * 60:
                while begin + partners.sent / SOAK_RATE <= time.monotonic():
                    batch = batch or mix.take(len(mix.models))  # the whole mix at a time: every type alike
                    partners.drop(batch.pop(0))
                partners.take_and_answer()
                time.sleep(0.01)
        finally:
            stop.set()
            sampler.join()
    if len(samples) < 3:
        raise Unavailable(f"a soak of {SOAK_MINUTES} minutes gives fewer than 3 samples")
    return samples


def describe(backend: str, samples: list[Sample]) -> list[Result]:
    first, last = samples[1], samples[-1]  # minute 1 has the hub's start in it
    added = max(1, last.messages - first.messages)
    return [
        Result(f"{backend}: hub memory (all its processes' RSS), minute 2 → {len(samples)}", last.rss_mb, "MB",
               f"{first.rss_mb:,.0f} MB after minute 2: {(last.rss_mb - first.rss_mb) / added * 10_000:+,.1f} MB "
               f"per 10,000 messages since; highest {max(s.rss_mb for s in samples):,.0f} MB"),
        Result(f"{backend}: open files of the hub's processes, minute 2 → {len(samples)}", last.files, "files",
               f"{first.files:,.0f} after minute 2; threads {first.threads:,.0f} → {last.threads:,.0f}"),
        Result(f"{backend}: GET /status on the full store", last.status_ms, "ms",
               f"{last.stored:,} messages stored; {first.status_ms:,.0f} ms with {first.stored:,} after minute 2"),
        Result(f"{backend}: GET /metrics on the full store", last.metrics_ms, "ms",
               f"{first.metrics_ms:,.0f} ms after minute 2"),
        Result(f"{backend}: latency p99 in the last minute", p99(last.latencies), "ms",
               f"p50 {statistics.median(last.latencies):,.0f} ms; in minute 2: p99 {p99(first.latencies):,.0f}, "
               f"p50 {statistics.median(first.latencies):,.0f} ms (drop to forwarded copy, {SOAK_RATE:.0f}/s)"),
    ]


def run() -> list[Result]:
    return on_each([b for b in BACKENDS if b.name in SOAKED],
                   lambda backend, mix: describe(backend.name, soak(backend, mix)))
