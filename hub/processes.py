"""Worker processes: with queue.processes of 2 or more, a hub runs that many processes that run only workers, and
runs none in its own, which takes input, relays work to RabbitMQ, runs jobs and serves status.

Python runs one thread of a process at a time: worker threads of one hub shared one core (measured: two
threads took 482-505 messages/s where one took 436-457/s, and two hub processes on one SQLite file 587-617/s).
A worker in the hub's own process made its intake and relay wait for the process's lock behind a message's
signing and mapping, and the work it took waited behind them: with 2 worker processes instead of the hub's and
one more, a backlog went 15-30 % faster on PostgreSQL and RabbitMQ (SQLite, whose writers take turns, the
same), and p99 at 100 messages/s was lower (measured on this 2-core machine, A/B in the same minutes).
A worker process is `run_hub.py run --worker-of PID` on the same config and environment: its workers claim
from the hub's store, beside the other worker processes' (leases and row claims keep them apart, as they keep
several hubs apart); it takes no input, serves no status and runs no jobs. The hub wakes it through its stdin when
it commits work (on the DB queue a worker otherwise looks every queue.poll_seconds), and it stops when its stdin
closes: when the hub stops it, or dies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hub.app import Hub

log = logging.getLogger(__name__)

RUN_HUB = Path(__file__).resolve().parent.parent / "run_hub.py"
RESTART_AFTER_SECONDS = 5.0  # a worker process that died is started again this long after
STOP_SECONDS = 40.0  # how long a worker process may take to finish its batch when stopped (a lease is 30 s)


class WorkerProcesses:
    """The worker processes of a hub, kept running until stop()."""

    def __init__(self, count: int, config_path: Path | None, workers: int) -> None:
        self.command = [sys.executable, str(RUN_HUB), *(["--config", str(config_path)] if config_path else []),
                        "--log-level", logging.getLevelName(logging.getLogger().level),
                        "run", "--workers", str(workers), "--worker-of", str(os.getpid())]
        self.workers = workers
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * count
        self.due = [0.0] * count  # when each may be started (again)
        self.deaths = [0] * count  # how often each has died
        # Held while a pipe is written to or closed: a closed pipe's fd number may be reused at once by a file
        # another thread opens, and a wake-up must never write into that.
        self._pipes = threading.Lock()

    def keep_up(self) -> None:
        """Start each worker process that is not running and is due to be started."""
        now = time.monotonic()
        for n, process in enumerate(self.processes):
            if process is not None and process.poll() is None:
                continue
            if process is not None:
                log.warning("worker process %d (pid %d) exited with %s; another starts in %.0f s", n + 1,
                            process.pid, process.returncode, RESTART_AFTER_SECONDS)
                self._close(process)
                self.processes[n], self.due[n] = None, now + RESTART_AFTER_SECONDS
                self.deaths[n] += 1
            elif now >= self.due[n]:
                # Its workers' places in the hub, after those of the processes before it (RabbitMQ ranks them).
                started = subprocess.Popen([*self.command, "--first-worker", str(n * self.workers)],
                                           stdin=subprocess.PIPE)
                assert started.stdin is not None
                os.set_blocking(started.stdin.fileno(), False)  # a wake-up never holds up the hub
                self.processes[n] = started
                log.info("worker process %d started (pid %d)", n + 1, started.pid)

    def describe(self) -> list[dict[str, Any]]:
        """For the status interface: each one's pid (None while it waits to be started again) and deaths."""
        return [{"pid": process.pid if process else None, "deaths": deaths}
                for process, deaths in zip(self.processes, self.deaths, strict=True)]

    def wake(self) -> None:
        """Work was committed in the hub: a byte on each worker process's stdin has its workers look now."""
        with self._pipes:
            for process in self.processes:
                if process is not None and process.stdin is not None and not process.stdin.closed:
                    with contextlib.suppress(OSError):  # full: it was woken and has not looked yet; or it died
                        os.write(process.stdin.fileno(), b"!")

    def stop(self) -> None:
        """Ask each to stop (they finish their batch), and wait; kill one that takes longer than STOP_SECONDS."""
        running = [p for p in self.processes if p is not None and p.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker process (pid %d) did not stop in %.0f s; killed", process.pid, STOP_SECONDS)
                process.kill()
                process.wait()
        for stopped in self.processes:
            if stopped is not None:
                self._close(stopped)
        self.processes = [None] * len(self.processes)

    def _close(self, process: subprocess.Popen[bytes]) -> None:
        with self._pipes, contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()


def serve_as_worker_process(hub: Hub, hub_pid: int) -> None:
    """Run `hub`'s workers until told to stop or until hub process `hub_pid` is gone (stdin closes), woken by
    each byte on stdin."""

    def _woken() -> None:
        while os.read(sys.stdin.fileno(), 512):
            hub.queue.notify()
        log.info("hub process %d, which started this worker process, is gone or stopping; stopping", hub_pid)
        hub.request_stop()

    threading.Thread(target=_woken, name="woken", daemon=True).start()
    hub.start_workers()
    log.info("worker process of hub process %d running (queue.workers = %d)", hub_pid, hub.config.queue.workers)
    hub.wait()
