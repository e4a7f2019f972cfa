"""Benchmarks of the hub. `python -m bench` runs every `bench/bench_*.py` module and rewrites BENCHMARKS.md.

A module offers `run() -> list[Result]`; it raises `Unavailable` when what it measures is not on this machine.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    name: str
    value: float
    unit: str
    note: str = ""


class Unavailable(Exception):
    """What the benchmark needs (a service, a tool) is missing here."""


def rate(action: Callable[[], object], seconds: float = 2.0, warmup: int = 3) -> float:
    """Calls per second of `action`, run for about `seconds` after a short warm-up."""
    for _ in range(warmup):
        action()
    count = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        action()
        count += 1
    return count / elapsed


@dataclass(frozen=True)
class Rates:
    """Messages per second over several timed runs of a fixed number of calls."""

    runs: tuple[float, ...]
    seconds: float  # about, per run
    cpu_share: float  # process CPU time / wall time over the runs: below ~0.95, something else had the core

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def low(self) -> float:
        return min(self.runs)

    @property
    def high(self) -> float:
        return max(self.runs)

    def spread(self) -> str:
        """Like "median of 7 runs of 0.3 s, range 1,850–2,010/s", and the CPU share when others took the core."""
        text = f"median of {len(self.runs)} runs of {self.seconds:.1f} s, range {self.low:,.0f}–{self.high:,.0f}/s"
        if self.cpu_share < 0.95:
            text += f", got {self.cpu_share:.0%} of the core"
        return text


def rates(
    action: Callable[[], object], messages: int = 1, repeats: int = 7, seconds: float = 0.3, warmup: float = 0.2
) -> Rates:
    """Messages per second of `action`, which handles `messages` messages per call: warm up for `warmup`
    seconds, size a run to about `seconds`, then time `repeats` runs with time.perf_counter (garbage
    collection stays on, as in the hub)."""
    calls = 0
    start = time.perf_counter()
    while time.perf_counter() - start < warmup or calls < 3:
        action()
        calls += 1
    per_call = (time.perf_counter() - start) / calls
    calls = max(1, round(seconds / per_call))
    runs = []
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        begin = time.perf_counter()
        for _ in range(calls):
            action()
        runs.append(calls * messages / (time.perf_counter() - begin))
    wall = time.perf_counter() - wall_start
    return Rates(tuple(runs), wall / repeats, (time.process_time() - cpu_start) / wall)
