"""Channels: adapters between the hub and a partner's transport. The pipeline never knows which it has."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class ClaimedInput:
    """An input the channel has taken from the partner (so no one else takes it) but not yet settled."""

    hub_id: str
    partner: str
    name: str  # the name the partner gave it
    path: Path
    size: int

    def read(self, limit: int) -> bytes | None:
        """The content, or None when it is over `limit` bytes (it stays on disk for an operator)."""
        if self.size > limit:
            return None
        return self.path.read_bytes()


class Channel(Protocol):
    partner: str

    def poll(self, limit: int | None = None) -> list[ClaimedInput]:
        """Take the new inputs the partner has sent, oldest first: every one, or the oldest `limit`."""
        ...

    def recover(self) -> list[ClaimedInput]:
        """Inputs taken earlier and not yet settled: after a crash, those not in the store must be stored."""
        ...

    def deliver(self, name: str, payload: bytes) -> None:
        """Hand one message to the partner, atomically; delivering the same name again replaces it (a resend)."""
        ...

    def stage(self, name: str, payload: bytes) -> None:
        """The first half of a delivery made exactly once: the message made ready, unseen by the partner;
        staging it again replaces it."""
        ...

    def publish(self, name: str) -> bool:
        """The second half: the staged message shown to the partner at once. False if nothing is staged under
        this name (it was published before: publishing never shows a message twice)."""
        ...

    def settle(self, claimed_name: str, hub_id: str, accepted: bool, error: dict[str, Any] | None) -> bool:
        """Put an input where it belongs once the hub has decided on it; doing it twice is harmless (False: it
        was settled before)."""
        ...
