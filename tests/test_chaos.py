"""Chaos: 2,000 pending policies through hub processes that are killed -9 at random while (on RabbitMQ +
PostgreSQL) the broker is restarted once and the database crashes once (an immediate stop: no checkpoint, so the
commits that did not wait for their WAL flush, claims and the relay's queue marks, may be lost). Counted at the
receiving side: a partner that takes every file from its out/ folder as it lands, so a second delivery of anything
shows up as a second arrival. Nothing may be lost, nothing processed twice, and nothing delivered twice (Receiver).

These tests restart the machine's shared RabbitMQ and PostgreSQL: they run only with HUB_CHAOS=1 (CI sets it).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Exchange, backend_environ, child_processes, wait_for
from tests.test_hub_process import HubProcess, _pending_policy

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("HUB_CHAOS") != "1",
                       reason="restarts the shared RabbitMQ and PostgreSQL: run with HUB_CHAOS=1"),
]

COUNT = 2000
KILLS = 10
# Generous tiers: a database restart must not use up a message's attempts (a claim counts as one).
CHAOS_ENV = {"HUB_RETRY__DELAYS_SECONDS": "[0.5, 1, 2, 5, 10, 20]", "HUB_QUEUE__LEASE_SECONDS": "5"}


class Receiver:
    """The partners: every file the hub delivers is taken from out/ as soon as it lands, and counted.

    Two kinds of "more than once" are told apart, and neither may happen. A message processed twice shows up
    as two different files for one message (two receipts answering it, or two different forwarded copies). The
    same file with the same bytes arriving again is a redelivery: a worker killed between showing the file and
    recording it (the pipeline's two-phase delivery is there to prevent it)."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.forwarded: dict[str, set[bytes]] = defaultdict(set)  # message id: the distinct copies forwarded
        self.receipts: dict[str, set[str]] = defaultdict(set)  # message id: the receipt files answering it
        self.arrivals: Counter[tuple[str, bytes]] = Counter()  # (file name, bytes): how often it arrived
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.take()
            self._stop.wait(0.01)

    def take(self) -> None:
        for partner, pattern in (("platform", "PendingPolicy_*"), ("insurer", "Receipt_*")):
            taken = self.exchange.folder(partner, "taken")
            taken.mkdir(parents=True, exist_ok=True)
            for path in self.exchange.files(partner, "out", pattern):
                content = path.read_bytes()
                os.replace(path, taken / f"{path.name}.{time.monotonic_ns()}")
                self.arrivals[(path.name, content)] += 1
                if partner == "platform":
                    self.forwarded[json.loads(content)["messageId"]].add(content)
                else:
                    self.receipts[_answered(content)].add(path.name)

    def complete(self, sent: list[str]) -> int:
        return sum(1 for m in sent if self.forwarded[m] and self.receipts[m])

    def verdict(self, sent: list[str]) -> list[str]:
        """What went wrong, in words: lost (never arrived) or processed twice (two different files for one)."""
        wrong = []
        for what, counted in (("forwarded", self.forwarded), ("answered", self.receipts)):
            lost = [m for m in sent if not counted[m]]
            doubled = {m: len(copies) for m, copies in counted.items() if len(copies) > 1}
            if lost:
                wrong.append(f"{len(lost)} never {what}: {lost[:10]}")
            if doubled:
                wrong.append(f"{len(doubled)} {what} more than once, differently: {dict(list(doubled.items())[:10])}")
        return wrong

    def redelivered(self) -> list[str]:
        return sorted(name for (name, _content), n in self.arrivals.items() if n > 1)


def _answered(receipt: bytes) -> str:
    from lxml import etree

    root = etree.fromstring(receipt)
    return str(root.findtext(".//{*}refMessageId"))


def _drop(exchange: Exchange, start: int, stop: int) -> None:
    for n in range(start, stop):
        exchange.drop("insurer", f"insurer-pending-policy-{n:05d}.xml", _pending_policy(n)[1])


def restart_rabbitmq() -> None:
    subprocess.run(["rabbitmqctl", "shutdown"], check=True, capture_output=True, timeout=120)
    _start_rabbitmq()


def _start_rabbitmq() -> None:
    # Its own session, no pipes to this process: the node outlives the test.
    subprocess.run(["rabbitmq-server", "-detached"], check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, start_new_session=True, timeout=60)
    _await_rabbitmq()


def _await_rabbitmq() -> None:
    deadline = time.monotonic() + 120
    while subprocess.run(["rabbitmqctl", "await_startup"], capture_output=True, timeout=120).returncode != 0:
        assert time.monotonic() < deadline, "RabbitMQ did not come back within 2 minutes"
        time.sleep(1)  # exit 69 until the node has registered


def crash_postgresql() -> None:
    """Stopped as a crash stops it (immediate mode: no checkpoint, crash recovery at start), then started."""
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", "--mode", "immediate", "15", "main", "restart"],
                   check=True, capture_output=True, timeout=120)


@pytest.fixture
def services_come_back() -> Iterator[None]:
    """Whatever happens in the test, the shared services are running when it ends."""
    yield
    if subprocess.run(["rabbitmqctl", "await_startup", "--timeout", "5"], capture_output=True).returncode != 0:
        _start_rabbitmq()
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "start"], capture_output=True)


def run_chaos(tmp_path: Path, env: dict[str, str], processes: int, restarts: dict[int, Callable[[], None]]) -> None:
    """Drop COUNT policies in KILLS waves; after each wave kill -9 a random hub (and start it again) or one of
    its worker processes (the hub starts another), and after the waves named in `restarts` restart that service.
    Then wait until everything has arrived."""
    exchange = Exchange(tmp_path / "exchange")
    hubs = [HubProcess(tmp_path, **CHAOS_ENV, **env) for _ in range(processes)]
    sent = [_pending_policy(n)[0] for n in range(COUNT)]
    wave = COUNT // KILLS
    rng = random.Random(os.environ.get("HUB_CHAOS_SEED"))
    with Receiver(exchange) as receiver:
        try:
            for hub in hubs:
                hub.start()
            for kill in range(KILLS):
                _drop(exchange, kill * wave, (kill + 1) * wave)
                time.sleep(rng.uniform(0.5, 2.0))
                victim = rng.choice(hubs)
                assert victim.proc is not None
                workers = child_processes(victim.proc.pid)
                if workers and rng.random() < 0.5:
                    os.kill(rng.choice(workers), signal.SIGKILL)  # its hub starts another
                else:
                    victim.kill9()  # its worker process stops by itself
                    victim.start(timeout=60)
                if kill in restarts:
                    before = receiver.complete(sent)
                    restarts[kill]()
                    assert before < COUNT, "the restart must land while messages are under way"
            wait_for(lambda: receiver.complete(sent) == COUNT, 300, f"all {COUNT} pending policies forwarded and "
                     "answered")
            wait_for(lambda: not exchange.files("insurer", "in") and not exchange.files("insurer", "intake"),
                     60, "every input settled")
            time.sleep(6)  # past the lease (5 s): a delivery left to repeat would have arrived by now
        finally:
            for hub in hubs:
                hub.stop()
        receiver.take()
    wrong = receiver.verdict(sent)
    assert not wrong, "; ".join(wrong)
    again = receiver.redelivered()
    assert not again, f"{len(again)} files delivered twice (the same bytes): {again[:10]}"
    assert not exchange.files("insurer", "rejected"), "nothing is refused: every copy is a fresh message"
    assert len(exchange.files("insurer", "archive")) == COUNT


def test_rabbitmq_and_postgresql_three_processes_killed_the_broker_restarted_and_the_database_crashed(
    tmp_path: Path, services_come_back: None
) -> None:
    with backend_environ("rabbitmq") as env:
        run_chaos(tmp_path, env, processes=3, restarts={3: restart_rabbitmq, 6: crash_postgresql})


def test_embedded_default_one_hub_or_its_worker_process_killed_ten_times(tmp_path: Path) -> None:
    with backend_environ("sqlite") as env:
        run_chaos(tmp_path, env, processes=1, restarts={})
