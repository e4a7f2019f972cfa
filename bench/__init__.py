"""Benchmarks of the hub. `python -m bench` runs every `bench/bench_*.py` module and rewrites BENCHMARKS.md.

A module offers `run() -> list[Result]`; it raises `Unavailable` when what it measures is not on this machine.
"""

from __future__ import annotations

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
