"""Worker processes: `run` starts queue.processes - 1 hub processes beside itself that run only workers.

Python runs one thread of a process at a time: worker threads of one hub shared one core (measured: two
threads took 482-505 messages/s where one took 436-457/s, and two hub processes on one SQLite file 587-617/s).
A worker process is `run_hub.py run --worker-of PID` on the same config and environment: its workers claim
from the same store as this process's (leases and row claims keep them apart, as they keep several hubs apart);
it takes no input, serves no status and runs no jobs. It stops when this process stops it or is gone.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

RUN_HUB = Path(__file__).resolve().parent.parent / "run_hub.py"
RESTART_AFTER_SECONDS = 5.0  # a worker process that died is started again this long after
STOP_SECONDS = 40.0  # how long a worker process may take to finish its batch when stopped (a lease is 30 s)


class WorkerProcesses:
    """The worker processes of this hub process, kept running until stop()."""

    def __init__(self, count: int, config_path: Path | None, workers: int) -> None:
        self.command = [sys.executable, str(RUN_HUB), *(["--config", str(config_path)] if config_path else []),
                        "--log-level", logging.getLevelName(logging.getLogger().level),
                        "run", "--workers", str(workers), "--worker-of", str(os.getpid())]
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * count
        self.due = [0.0] * count  # when each may be started (again)

    def keep_up(self) -> None:
        """Start each worker process that is not running and is due to be started."""
        now = time.monotonic()
        for n, process in enumerate(self.processes):
            if process is not None and process.poll() is None:
                continue
            if process is not None:
                log.warning("worker process %d (pid %d) exited with %s; another starts in %.0f s", n + 1,
                            process.pid, process.returncode, RESTART_AFTER_SECONDS)
                self.processes[n], self.due[n] = None, now + RESTART_AFTER_SECONDS
            elif now >= self.due[n]:
                self.processes[n] = subprocess.Popen(self.command)
                log.info("worker process %d started (pid %d)", n + 1, self.processes[n].pid)  # type: ignore[union-attr]

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
        self.processes = [None] * len(self.processes)
