"""The drop-folder channel, the E-Port clients' own convention.

Under the partner's root: `in/` what the partner sends the hub, `out/` what the hub delivers, `archive/`
inputs processed, `rejected/` inputs refused (each beside NAME.error.json), and `intake/` inputs the hub has
taken but not yet settled. Writers write NAME.tmp and rename; the hub ignores .tmp files and writes the same
way, so nobody ever reads half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hub.channels import ClaimedInput
from hub.store import new_id

TMP_SUFFIX = ".tmp"
_SEP = "__"


def write_atomically(path: Path, payload: bytes) -> None:
    """Readers see the whole file or none of it. Not fsynced: a process crash (kill -9) loses nothing written
    (the page cache survives it), and against a power cut the embedded store (WAL, synchronous=NORMAL) gives
    up its last commits too. A delivery lost that way is resent when its receipt is overdue, a receipt when its
    sender sends again; an fsync per file cost 3 ms on this machine's disk, more than the rest of a message."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    tmp.write_bytes(payload)
    os.replace(tmp, path)


class FolderChannel:
    def __init__(self, partner: str, root: Path) -> None:
        self.partner = partner
        self.root = root
        self.inbox = root / "in"
        self.outbox = root / "out"
        self.archive = root / "archive"
        self.rejected = root / "rejected"
        self.intake = root / "intake"
        for folder in (self.inbox, self.outbox, self.archive, self.rejected, self.intake):
            folder.mkdir(parents=True, exist_ok=True)
        # The rest of the last listing of in/, newest first (pop() takes the oldest): a backlog is taken a batch
        # at a time, and listing it again for each batch (a stat per file) cost O(n²): 1,500 inputs, 30
        # listings, in each hub process.
        self._listed: list[tuple[int, str, os.DirEntry[str]]] = []

    def poll(self, limit: int | None = None) -> list[ClaimedInput]:
        """Up to `limit` inputs waiting in in/ (all of them: None), oldest first, each renamed into intake/; in/
        is listed again once the last listing's inputs are all taken (here or by another hub process)."""
        if limit is None or not self._listed:
            self._listed = sorted(self._waiting(), reverse=True)
        claimed: list[ClaimedInput] = []
        while self._listed and (limit is None or len(claimed) < limit):
            _written, _name, entry = self._listed.pop()
            hub_id = new_id()
            target = self.intake / f"{hub_id}{_SEP}{entry.name}"
            try:
                os.rename(entry.path, target)  # atomic: if another hub process took it first, this fails
            except FileNotFoundError:
                continue
            claimed.append(ClaimedInput(hub_id, self.partner, entry.name, target, target.stat().st_size))
        return claimed

    def _waiting(self) -> list[tuple[int, str, os.DirEntry[str]]]:
        """The inputs waiting in in/, each with when it was written: oldest first once sorted."""
        waiting = []
        with os.scandir(self.inbox) as entries:
            for entry in entries:
                if entry.name.endswith(TMP_SUFFIX) or entry.name.startswith("."):
                    continue
                try:
                    if entry.is_file(follow_symlinks=False):
                        waiting.append((entry.stat().st_mtime_ns, entry.name, entry))
                except FileNotFoundError:
                    continue  # another hub process took it since the folder was listed
        return waiting

    def recover(self) -> list[ClaimedInput]:
        found = []
        for path in sorted(self.intake.iterdir()):
            hub_id, sep, name = path.name.partition(_SEP)
            if sep and path.is_file():
                found.append(ClaimedInput(hub_id, self.partner, name, path, path.stat().st_size))
        return found

    def deliver(self, name: str, payload: bytes) -> None:
        write_atomically(self.outbox / name, payload)

    def stage(self, name: str, payload: bytes) -> None:
        (self.outbox / (name + TMP_SUFFIX)).write_bytes(payload)  # partners ignore .tmp files

    def publish(self, name: str) -> bool:
        try:
            os.replace(self.outbox / (name + TMP_SUFFIX), self.outbox / name)
        except FileNotFoundError:
            if not self.outbox.is_dir():
                raise  # the partner's folder is gone: a failed delivery, not one made before
            return False
        return True

    def settle(self, claimed_name: str, hub_id: str, accepted: bool, error: dict[str, Any] | None) -> bool:
        source = self.intake / f"{hub_id}{_SEP}{claimed_name}"
        if not source.exists():
            return False  # settled before a crash interrupted the bookkeeping
        folder = self.archive if accepted else self.rejected
        target = folder / claimed_name
        if target.exists():  # the same name was sent before: keep both, this one marked with its hub id
            target = folder / f"{hub_id}{_SEP}{claimed_name}"
        if error is not None:
            report = json.dumps({"hubId": hub_id, "file": claimed_name, **error}, ensure_ascii=False, indent=2)
            write_atomically(target.with_name(target.name + ".error.json"), report.encode())
        os.replace(source, target)
        return True
