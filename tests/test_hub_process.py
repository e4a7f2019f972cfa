"""The hub as a real subprocess, the way `make run` starts it: folders on disk, status over HTTP, kill -9."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from tests.conftest import REPO, UNDERWRITING, Exchange, hub_environ, wait_for

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HubProcess:
    def __init__(self, root: Path, **env: str) -> None:
        self.root = root
        self.port = free_port()
        self.env = {**os.environ, **hub_environ(root, HUB_STATUS__PORT=str(self.port), **env)}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "hub.log"
        self.args: list[str] = []  # run_hub.py's arguments (none: run, the default)

    def start(self, timeout: float = 20) -> None:
        """Start it and wait for its status interface (a restart first stores what the last one left in intake/)."""
        self.launch()
        self.wait_up(timeout)

    def launch(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO / "run_hub.py"), *self.args], cwd=self.root, env=self.env, stdout=log,
                stderr=log,
            )

    def wait_up(self, timeout: float = 20) -> None:
        """Its status interface answers and its worker processes, if it has any, are running."""
        wait_for(self._up, timeout, "the hub's status interface")
        wait_for(self._workers_up, timeout, "the hub's worker processes")

    def _workers_up(self) -> bool:
        """As many worker processes running since the hub's last start as its start line says it has."""
        _, started, since = self.log.read_text().rpartition("hub running: ")
        expected = re.match(r"[^\n]* in each of (\d+) worker processes", since)
        return bool(started) and since.count("] hub.processes: worker process of hub process") >= (
            int(expected.group(1)) if expected else 0)

    def _up(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
        try:
            return self.get("/health")[0] == 200
        except OSError:
            return False

    def get(self, path: str, method: str = "GET") -> tuple[int, dict]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


@pytest.fixture
def hub_process(tmp_path: Path) -> Iterator[HubProcess]:
    process = HubProcess(tmp_path)
    yield process
    process.stop()


def test_pending_policy_reaches_the_platform_within_two_seconds(hub_process: HubProcess, tmp_path: Path) -> None:
    hub_process.start()
    exchange = Exchange(tmp_path / "exchange")
    started = time.monotonic()
    exchange.drop_fixture(UNDERWRITING / "valid" / "insurer-pending-policy-new.xml")
    forwarded = exchange.wait_files("platform", "out", 1, "PendingPolicy_*.json", timeout=2.0)
    exchange.wait_files("insurer", "out", 1, "Receipt_*.xml", timeout=2.0 - (time.monotonic() - started))
    assert json.loads(forwarded[0].read_bytes())["proposalNo"] == "XW2026330100017"

    code, status = hub_process.get("/status")
    assert code == 200
    assert status["messages"]["by_type"]["PendingPolicy in"] == {"accepted": 1}
    route = next(r for r in status["routes"] if r["message"] == "PendingPolicy")
    assert (route["received"], route["forwarded"], route["last_error"]) == (1, 1, None)

    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert hub_process.get("/status", method)[0] == 405
    pending_id = "6F1C2A4E-3B7D-4E21-9A55-0C8E7D1B2A01"
    code, history = hub_process.get(f"/messages/{pending_id}")
    assert code == 200
    events = [e["event"] for m in history["messages"] for e in m["history"]]
    assert {"received", "accepted", "delivered", "settled"} <= set(events)
    assert hub_process.get("/messages/NOPE")[0] == 404


def test_the_status_interface_listens_on_loopback_only(hub_process: HubProcess) -> None:
    hub_process.start()
    listening = subprocess.run(["ss", "-ltnH", f"sport = :{hub_process.port}"], capture_output=True, text=True)
    if listening.returncode != 0:
        pytest.skip("ss is not available to read the listening address")
    assert f"127.0.0.1:{hub_process.port}" in listening.stdout


def _pending_policy(n: int) -> tuple[str, bytes]:
    """The valid pending policy fixture with a new message id and proposal number."""
    root = etree.parse(str(UNDERWRITING / "valid" / "insurer-pending-policy-new.xml")).getroot()
    ns = {"e": root.nsmap[None]}
    message_id = f"5C0FFEE0-0000-4000-8000-{n:012d}"
    root.set("guid", message_id)
    root.find("e:Head/e:guid", ns).text = message_id
    root.find("e:PendingPolicy/e:proposalNo", ns).text = f"XW2026{n:09d}"
    return message_id, etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def drop_pending_policies(exchange: Exchange, count: int, every: float = 0.0) -> list[str]:
    """The insurer drops `count` fresh pending policies (`every` seconds apart): their message ids, in order."""
    ids = []
    for n in range(count):
        message_id, payload = _pending_policy(n)
        ids.append(message_id)
        exchange.drop("insurer", f"insurer-pending-policy-{n}.xml", payload)
        time.sleep(every)
    return ids


def test_kill_9_in_the_middle_of_500_pending_policies(tmp_path: Path) -> None:
    count = 500
    exchange = Exchange(tmp_path / "exchange")
    process = HubProcess(tmp_path)
    process.start()
    try:
        for n in range(count):
            _, payload = _pending_policy(n)
            exchange.drop("insurer", f"insurer-pending-policy-{n:04d}.xml", payload)
        exchange.wait_files("platform", "out", 50, "PendingPolicy_*", timeout=60)
        process.kill9()
        done_at_kill = len(exchange.files("platform", "out", "PendingPolicy_*"))
        assert done_at_kill < count, "the kill must land mid-way for this test to mean anything"
        process.start()
        exchange.wait_files("platform", "out", count, "PendingPolicy_*", timeout=120)
        exchange.wait_files("insurer", "out", count, "Receipt_*", timeout=60)
        wait_for(lambda: len(exchange.files("insurer", "archive")) == count, 60, "every input archived")
        time.sleep(3)  # lease expiry (2 s) has passed: any duplicate would have been written by now
    finally:
        process.stop()

    forwarded = exchange.files("platform", "out", "PendingPolicy_*")
    assert len(forwarded) == count
    assert {json.loads(p.read_bytes())["messageId"] for p in forwarded} == {
        _pending_policy(n)[0] for n in range(count)
    }
    receipts = exchange.receipts("insurer")
    assert len(receipts) == count, "exactly one receipt per pending policy"
    assert sorted(r["refMessageId"] for r in receipts) == sorted(_pending_policy(n)[0] for n in range(count))
    assert all(r["returnStatus"] == 120 for r in receipts)
    assert not exchange.files("insurer", "rejected") and not exchange.files("insurer", "intake")
    assert not exchange.files("insurer", "in")


def test_a_stop_signal_is_heard_even_while_the_main_thread_holds_a_lock(tmp_path: Path) -> None:
    """SIGTERM's handler runs in the main thread, wherever the signal finds it. When it set the hub's stop event
    and the signal came while the main thread was inside that event's wait (holding its lock), the handler waited
    for itself forever and the hub never stopped (a test run left one running). Here the main thread's place is
    taken by a thread holding every lock the hub's stop machinery has; the handler must return at once, and
    wait() must then return."""
    from hub.app import Hub
    from hub.config import DEFAULT_CONFIG, load_config

    hub = Hub(load_config(DEFAULT_CONFIG, environ=hub_environ(tmp_path)))
    returned = threading.Event()

    def interrupted_main_thread() -> None:
        locks = [value._cond for value in vars(hub).values() if isinstance(value, threading.Event)]
        for lock in locks:
            lock.acquire()
        hub.request_stop()  # the signal handler, in the thread that holds them
        hub.wait()
        returned.set()
        for lock in locks:
            lock.release()

    threading.Thread(target=interrupted_main_thread, daemon=True).start()
    stopped = returned.wait(5)
    if stopped:  # else its locks stay held by the stuck thread, and stop() would wait for them too
        hub.stop()
    assert stopped, "the stop request waited for a lock its own thread held: the hub would run on"


def test_a_bad_config_stops_start_up_with_one_line_and_exit_code_2(tmp_path: Path) -> None:
    env = {**os.environ, "HUB_STATUS__PORT": "not-a-port"}
    done = subprocess.run([sys.executable, str(REPO / "run_hub.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "status.port" in lines[0], done.stderr

    broken = tmp_path / "broken.toml"
    broken.write_text((REPO / "config" / "hub.toml").read_text().replace('schema = "eci/1.0"', 'schema = "eci/9.9"', 1))
    done = subprocess.run([sys.executable, str(REPO / "run_hub.py"), "--config", str(broken)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "hub: partners.insurer.schema: 'eci/9.9' is not one of the hub's message schemas (cus/1.0, eci/1.0)"
    ]


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its parent to collect it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def worker_pids(log: str) -> list[int]:
    """The worker processes the hub started, and ready to work (their own first line)."""
    return [int(pid) for pid in re.findall(r"worker process \d+ started \(pid (\d+)\)", log)
            if f"[worker process {pid}] hub.processes: worker process of hub process" in log]


def test_the_default_runs_two_worker_processes_that_share_the_work_and_stop_with_the_hub(tmp_path: Path) -> None:
    """Python runs one thread of a process at a time, so `run` starts queue.processes worker processes (the
    default config: two) and runs no worker itself. Both take a share, each message is forwarded and answered once,
    and neither outlives its hub, even one killed -9. An idle worker looks for work every 10 s here: the worker
    processes take their shares because the hub wakes them when it has stored the inputs."""
    count = 60
    exchange = Exchange(tmp_path / "exchange")
    # Batches of 8: the 60 policies are several claims, so both processes can take some.
    process = HubProcess(tmp_path, HUB_QUEUE__POLL_SECONDS="10", HUB_QUEUE__BATCH="8")
    process.start()
    try:
        for n in range(count):
            exchange.drop("insurer", f"insurer-pending-policy-{n:04d}.xml", _pending_policy(n)[1])
        exchange.wait_files("insurer", "out", count, "Receipt_*", timeout=60)
        wait_for(lambda: len(exchange.files("insurer", "archive")) == count, 60, "every input archived")
        log = process.log.read_text()
        workers = worker_pids(log)
        assert len(workers) == 2
        process.kill9()
        wait_for(lambda: not any(map(_alive, workers)), 10, "the worker processes to stop once their hub was killed")
    finally:
        process.stop()
    log = process.log.read_text()
    assert "hub running: 3 partners (new inputs seen as they land), 21 routes, 1 worker in each of 2 worker " \
           "processes" in log
    assert not re.search(r"INFO    hub.pipeline: accepted", log), "the hub's own process runs no worker"
    for worker in workers:
        assert f"[worker process {worker}] hub.pipeline: accepted PendingPolicy" in log, "each took a share"
        assert f"[worker process {worker}] hub.processes: hub process {process.proc.pid}, which started this " \
               "worker process, is gone or stopping; stopping" in log
    forwarded = [json.loads(p.read_bytes())["messageId"] for p in exchange.files("platform", "out", "PendingPolicy_*")]
    assert sorted(forwarded) == sorted(_pending_policy(n)[0] for n in range(count))
    assert sorted(r["refMessageId"] for r in exchange.receipts("insurer")) == sorted(forwarded)


def test_run_processes_1_runs_the_workers_in_the_hubs_own_process(tmp_path: Path) -> None:
    exchange = Exchange(tmp_path / "exchange")
    process = HubProcess(tmp_path)
    process.args = ["run", "--processes", "1"]
    process.start()
    try:
        exchange.drop_fixture(UNDERWRITING / "valid" / "insurer-pending-policy-new.xml")
        exchange.wait_files("platform", "out", 1, "PendingPolicy_*", timeout=10)
        assert process.get("/status")[1]["hub"]["worker_processes"] == []
    finally:
        process.stop()
    log = process.log.read_text()
    assert "21 routes, 1 worker, " in log
    assert "INFO    hub.pipeline: accepted PendingPolicy" in log and "[worker process" not in log


def test_a_worker_process_that_dies_is_started_again_and_stopping_the_hub_stops_it(tmp_path: Path) -> None:
    exchange = Exchange(tmp_path / "exchange")
    process = HubProcess(tmp_path)
    process.start()
    try:
        [first, other] = worker_pids(process.log.read_text())
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: len(worker_pids(process.log.read_text())) == 3, 15, "another worker process")
        [_, _, second] = worker_pids(process.log.read_text())
        assert process.get("/status")[1]["hub"]["worker_processes"] == [{"pid": second, "deaths": 1},
                                                                         {"pid": other, "deaths": 0}]
        exchange.drop_fixture(UNDERWRITING / "valid" / "insurer-pending-policy-new.xml")
        exchange.wait_files("platform", "out", 1, "PendingPolicy_*", timeout=10)
    finally:
        process.stop()
    assert process.proc is not None and process.proc.returncode == 0
    assert not _alive(second), "the worker process stops with its hub"
    log = process.log.read_text()
    assert f"worker process 1 (pid {first}) exited with -9; another starts in 5 s" in log
    assert f"[worker process {second}] hub: hub stopped" in log
