"""The drop-folder channel, the E-Port clients' own convention.

Under the partner's root: `in/` what the partner sends the hub, `out/` what the hub delivers, `archive/`
inputs processed, `rejected/` inputs refused (each beside NAME.error.json), and `intake/` inputs the hub has
taken but not yet settled. Writers write NAME.tmp and rename; the hub ignores .tmp files and writes the same
way, so nobody ever reads half a file.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import selectors
import struct
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from hub.channels import ClaimedInput
from hub.store import new_id

log = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"
_SEP = "__"
# inotify(7): a file renamed into a watched folder, or a file written there closed.
_IN_MOVED_TO = 0x80
_IN_CLOSE_WRITE = 0x08
_IN_Q_OVERFLOW = 0x4000
_EVENT = struct.Struct("iIII")


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
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # a file in its place, no right to make it: the hub runs on, and what it does
                # there fails, is retried, then parked, until an operator mends it (a worker process started then
                # had died at once, again and again, and left all the work undone)
                log.warning("%s's folder %s cannot be made: %s", partner, folder, exc)
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
                if not _is_input(entry.name):
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


class InboxWatch:
    """Wakes the intake as soon as a file lands in one of the watched in/ folders (Linux inotify), so that an input
    waits for no poll: listing three folders every 10 ms to keep that wait short took an eighth of a core at 100
    messages/s, and every 200 ms (the default) cost each input 100 ms on average. The intake still lists the
    folders every poll_seconds, which is all it does where inotify is not to be had (another system, the kernel's
    limit of watches reached, a folder gone): nothing is missed either way."""

    def __init__(self, folders: Iterable[Path]) -> None:
        self._selector = selectors.DefaultSelector()
        self._interrupt_read, self._interrupt_write = os.pipe()
        os.set_blocking(self._interrupt_read, False)
        self._selector.register(self._interrupt_read, selectors.EVENT_READ)
        self._inotify = _watch(list(folders))
        if self._inotify is not None:
            self._selector.register(self._inotify, selectors.EVENT_READ)

    @property
    def watching(self) -> bool:
        return self._inotify is not None

    def wait(self, timeout: float) -> None:
        """Until an input lands in a watched folder (a .tmp file, being written, does not count), interrupt() is
        called, or `timeout` seconds pass. What woke it is read away: what lands later wakes the next wait, so
        nothing is missed between a wait and the listing after it."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            woken = False
            for key, _events in self._selector.select(remaining):
                read = _read_all(key.fd)
                woken |= key.fd == self._interrupt_read or any(_is_input(name) for name in _landed(read))
            if woken:
                return

    def interrupt(self) -> None:
        """The waiting intake returns now (the hub is stopping)."""
        os.write(self._interrupt_write, b"!")

    def close(self) -> None:
        self._selector.close()
        for fd in (self._interrupt_read, self._interrupt_write, self._inotify):
            if fd is not None:
                os.close(fd)


def _read_all(fd: int) -> bytes:
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _landed(events: bytes) -> Iterator[str]:
    """The names in inotify events (struct inotify_event: wd, mask, cookie, len, then a name padded with NULs);
    a queue overflow names nothing but stands for anything."""
    offset = 0
    while offset < len(events):
        _wd, mask, _cookie, length = _EVENT.unpack_from(events, offset)
        offset += _EVENT.size
        yield "*" if mask & _IN_Q_OVERFLOW else events[offset:offset + length].rstrip(b"\0").decode(errors="replace")
        offset += length


def _is_input(name: str) -> bool:
    """What the intake takes: not a file being written (NAME.tmp) nor a hidden one."""
    return not (name.endswith(TMP_SUFFIX) or name.startswith("."))


def _watch(folders: list[Path]) -> int | None:
    """An inotify descriptor (non-blocking) watching `folders`, or None where that cannot be had."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        init, add_watch = libc.inotify_init1, libc.inotify_add_watch
    except (OSError, AttributeError):
        log.info("no inotify on this system: the drop folders are listed every poll_seconds")
        return None
    fd = init(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        log.warning("inotify: %s; the drop folders are listed every poll_seconds", os.strerror(ctypes.get_errno()))
        return None
    for folder in folders:
        if add_watch(fd, os.fsencode(folder), _IN_MOVED_TO | _IN_CLOSE_WRITE) < 0:
            log.warning("inotify cannot watch %s: %s; the drop folders are listed every poll_seconds", folder,
                        os.strerror(ctypes.get_errno()))
            os.close(fd)
            return None
    return int(fd)
