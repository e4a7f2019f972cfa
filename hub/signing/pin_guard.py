"""PIN safety: after the first wrong-PIN answer, the hub never presents a PIN to that card again.

The block is kept per card (by certificate number) in a JSON file in the caller's state directory, so it
survives restarts; only `unblock` (an operator's `run_hub.py card unblock`) lifts it. Hub processes on one
machine (a hub and its worker processes) present a PIN one at a time (`presenting`), so the first one's block
stops the others: a wrong PIN costs the card one try, not one a process.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import PinBlocked

BLOCKS_FILE = "pin-blocks.json"
PRESENTING_LOCK = "pin-presenting.lock"
_lock = threading.Lock()


@dataclass(frozen=True)
class PinBlock:
    card: str
    """The certificate number of the card."""
    reason: str
    blocked_at: str
    tries_left: int | None


def _path(state_dir: str | Path) -> Path:
    return Path(state_dir) / BLOCKS_FILE


def _read(state_dir: str | Path) -> dict[str, dict[str, object]]:
    try:
        return dict(json.loads(_path(state_dir).read_text(encoding="utf-8")))
    except FileNotFoundError:
        return {}


def _write(state_dir: str | Path, blocks: dict[str, dict[str, object]]) -> None:
    path = _path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(blocks, ensure_ascii=False, indent=2), encoding="utf-8")
    os.replace(tmp, path)  # a crash mid-write must not lose a block


def blocks(state_dir: str | Path) -> dict[str, PinBlock]:
    """Every blocked card in this state directory."""
    return {card: PinBlock(**entry) for card, entry in _read(state_dir).items()}  # type: ignore[arg-type]


def block(state_dir: str | Path, card: str, reason: str, tries_left: int | None = None) -> PinBlock:
    entry = PinBlock(card, reason, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), tries_left)
    with _lock:
        current = _read(state_dir)
        current[card] = asdict(entry)
        _write(state_dir, current)
    return entry


def unblock(state_dir: str | Path, card: str) -> bool:
    """Lift the block of one card (by certificate number). False when it was not blocked."""
    with _lock:
        current = _read(state_dir)
        if current.pop(card, None) is None:
            return False
        _write(state_dir, current)
    return True


def ensure_not_blocked(state_dir: str | Path, card: str) -> None:
    found = blocks(state_dir).get(card)
    if found is not None:
        raise PinBlocked(
            f"card {card} is blocked since {found.blocked_at} ({found.reason}); "
            "check the PIN, then unblock it: run_hub.py card unblock"
        )


@contextmanager
def presenting(state_dir: str | Path) -> Iterator[None]:
    """Held from checking the blocks until the card has answered the PIN and a refusal is blocked: by one signer
    at a time among the processes and threads sharing `state_dir` (an flock: released if its holder dies)."""
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(state_dir) / PRESENTING_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # drops the flock
