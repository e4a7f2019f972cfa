"""The leader lock: one holder at a time, across processes, on both backends; a killed holder's lock is taken over
within seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from hub.leader import LeaderLock
from tests.conftest import REPO, fresh_postgres_database, wait_for

# A contender: tries for the lock every 0.1 s and, while it holds it, appends its pid to `ticks` every 0.02 s.
CONTENDER = """
import os, sys, time
from hub.leader import LeaderLock
lock = LeaderLock(sys.argv[1], "scheduler")
while True:
    if lock.acquire():
        with open(sys.argv[2], "a") as ticks:
            ticks.write(f"{os.getpid()}\\n")
        time.sleep(0.02)
    else:
        time.sleep(0.1)
"""


def test_one_holder_at_a_time_and_release_hands_it_on(store_url: str) -> None:
    first, second = LeaderLock(store_url, "scheduler"), LeaderLock(store_url, "scheduler")
    other_name = LeaderLock(store_url, "sweeper")
    try:
        assert first.acquire() and first.holds()
        assert first.acquire(), "acquiring again while holding is a no-op"
        assert not second.acquire() and not second.holds()
        assert other_name.acquire(), "locks of different names are independent"
        first.release()
        assert not first.holds()
        assert second.acquire() and second.holds()
        assert not first.acquire()
    finally:
        for lock in (first, second, other_name):
            lock.release()


def _holders(ticks: Path) -> list[int]:
    """The pids in the order they held the lock, each run of ticks once."""
    runs: list[int] = []
    for line in ticks.read_text().split():
        if not runs or runs[-1] != int(line):
            runs.append(int(line))
    return runs


def test_two_processes_never_both_hold_it_and_a_killed_holders_lock_is_taken_over(
    store_url: str, tmp_path: Path
) -> None:
    ticks = tmp_path / "ticks"
    ticks.touch()
    contenders = [
        subprocess.Popen([sys.executable, "-c", CONTENDER, store_url, str(ticks)], cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
        for _ in range(2)
    ]
    try:
        holder = wait_for(lambda: _holders(ticks), 20, "a contender to take the lock")[0]
        time.sleep(1.5)  # both contend all this time
        assert _holders(ticks) == [holder], "only the first holder ticked while it lived"
        os.kill(holder, signal.SIGKILL)
        killed_at = time.monotonic()
        successor = wait_for(lambda: len(_holders(ticks)) == 2 and _holders(ticks)[1], 5, "the takeover")
        assert time.monotonic() - killed_at < 5
        assert successor != holder and successor in (p.pid for p in contenders)
        time.sleep(0.5)
        assert _holders(ticks) == [holder, successor], "the dead holder never ticks again, nobody else ticks"
    finally:
        for process in contenders:
            process.kill()
            process.wait()


def test_a_holder_whose_postgresql_session_ends_knows_it_lost_the_lock() -> None:
    with fresh_postgres_database() as url:
        holder, other = LeaderLock(url, "scheduler"), LeaderLock(url, "scheduler")
        try:
            assert holder.acquire()
            with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'")
            assert other.acquire(), "the server released the ended session's lock"
            assert not holder.holds()
            assert not holder.acquire()
        finally:
            holder.release()
            other.release()
