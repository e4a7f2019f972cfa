"""The one retry policy (Camel's redelivery policy): a delay per attempt, some jitter, then park."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    delays_seconds: tuple[float, ...]
    jitter: float  # ± this fraction of the delay, so a crowd of failures does not retry in step

    @property
    def max_attempts(self) -> int:
        return len(self.delays_seconds) + 1

    def delay_after(self, attempt: int, rng: random.Random | None = None) -> float | None:
        """Seconds to wait after failed attempt number `attempt` (from 1), or None: park it."""
        if attempt >= self.max_attempts:
            return None
        base = self.delays_seconds[attempt - 1]
        spread = base * self.jitter
        return max(0.0, base + (rng or random).uniform(-spread, spread))
