"""The drop-folder channel's intake: a backlog taken a batch at a time, oldest first; and the watch that wakes the
intake when an input lands."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hub.app import Hub
from hub.channels.folder import FolderChannel, InboxWatch, write_atomically
from hub.config import DEFAULT_CONFIG, load_config
from tests.conftest import FIXTURES, hub_environ, wait_for


def _drop(channel: FolderChannel, name: str, written: int) -> None:
    path = channel.inbox / name
    path.write_bytes(b"<x/>")
    os.utime(path, ns=(written, written))


def test_a_backlog_is_taken_oldest_first_skipping_what_another_process_took_and_newcomers_come_after(
    tmp_path: Path,
) -> None:
    channel = FolderChannel("insurer", tmp_path / "insurer")
    start = 1_700_000_000 * 10**9
    for n in range(1, 6):  # named against their age, so the order is by when each was written
        _drop(channel, f"{6 - n}.xml", start + n)

    first = channel.poll(2)
    _drop(channel, "0-late.xml", start + 100)  # dropped while the backlog is being taken
    (channel.inbox / "3.xml").rename(tmp_path / "taken-by-another-hub.xml")  # the next oldest, gone meanwhile
    second = channel.poll(2)
    third = channel.poll(2)

    assert [c.name for c in first] == ["5.xml", "4.xml"]
    assert [c.name for c in second] == ["2.xml", "1.xml"], "the one taken meanwhile is skipped, the batch still full"
    assert [c.name for c in third] == ["0-late.xml"]
    assert channel.poll(2) == []
    taken = first + second + third
    assert sorted(p.name.split("__", 1)[1] for p in channel.intake.iterdir()) == sorted(c.name for c in taken)
    assert len({c.hub_id for c in taken}) == len(taken)


def test_poll_without_a_limit_takes_everything_waiting_even_after_a_limited_poll(tmp_path: Path) -> None:
    channel = FolderChannel("insurer", tmp_path / "insurer")
    start = 1_700_000_000 * 10**9
    for n in range(3):
        _drop(channel, f"{n}.xml", start + n)
    assert [c.name for c in channel.poll(1)] == ["0.xml"]
    _drop(channel, "late.xml", start + 100)
    assert [c.name for c in channel.poll()] == ["1.xml", "2.xml", "late.xml"]


def test_a_partner_folder_in_the_way_does_not_stop_the_channel_being_made_only_what_it_does_there(
    tmp_path: Path,
) -> None:
    """A worker process or a hub started while a partner's out/ is broken runs on: its deliveries there fail (and
    are retried, then parked) until an operator mends it."""
    root = tmp_path / "platform"
    root.mkdir()
    (root / "out").write_text("not a folder")
    channel = FolderChannel("platform", root)
    with pytest.raises(OSError):
        channel.deliver("PendingPolicy_x.json", b"{}")
    assert channel.inbox.is_dir() and channel.intake.is_dir()


@pytest.fixture
def watch(tmp_path: Path) -> Iterator[InboxWatch]:
    inboxes = [FolderChannel(partner, tmp_path / partner).inbox for partner in ("insurer", "platform")]
    watching = InboxWatch(inboxes)
    assert watching.watching, "this Linux machine has inotify"
    yield watching
    watching.close()


def _waited(watch: InboxWatch, timeout: float, meanwhile: Callable[[], None] = lambda: None) -> float:
    """Seconds watch.wait(timeout) took while `meanwhile` ran in another thread, 0.2 s into the wait."""
    doing = threading.Timer(0.2, meanwhile)
    doing.start()
    start = time.monotonic()
    watch.wait(timeout)
    doing.join()
    return time.monotonic() - start


def test_an_input_renamed_or_written_into_a_watched_inbox_ends_the_wait_at_once(watch: InboxWatch,
                                                                                 tmp_path: Path) -> None:
    inbox = tmp_path / "platform" / "in"
    assert _waited(watch, 30, lambda: write_atomically(inbox / "a.json", b"{}")) < 10, "a rename into in/"
    assert _waited(watch, 30, lambda: (inbox / "b.json").write_bytes(b"{}")) < 10, "a file written in place, closed"
    assert _waited(watch, 30, watch.interrupt) < 10, "the hub stopping"


def test_a_file_still_being_written_or_hidden_does_not_end_the_wait(watch: InboxWatch, tmp_path: Path) -> None:
    inbox = tmp_path / "insurer" / "in"
    assert _waited(watch, 1.0, lambda: (inbox / "c.xml.tmp").write_bytes(b"<x/>")) >= 1.0
    assert _waited(watch, 1.0, lambda: (inbox / ".c.xml").write_bytes(b"<x/>")) >= 1.0
    assert _waited(watch, 1.0, lambda: (tmp_path / "insurer" / "out" / "d.xml").write_bytes(b"<x/>")) >= 1.0, \
        "another folder"
    assert _waited(watch, 30, lambda: (inbox / "c.xml.tmp").rename(inbox / "c.xml")) < 10, "its rename counts"


def test_where_a_folder_cannot_be_watched_the_wait_is_a_plain_pause(tmp_path: Path) -> None:
    unwatchable = InboxWatch([tmp_path / "no-such-folder"])
    try:
        assert not unwatchable.watching
        assert _waited(unwatchable, 0.5) >= 0.5
        assert _waited(unwatchable, 30, unwatchable.interrupt) < 10
    finally:
        unwatchable.close()


def test_the_hub_takes_an_input_long_before_its_next_look_and_stops_without_waiting_for_it(tmp_path: Path) -> None:
    """The drop folders looked at every 30 s: an input is still taken as it lands, and a stop is not held up."""
    env = hub_environ(tmp_path, **{f"HUB_PARTNERS__{partner}__CHANNEL__POLL_SECONDS": "30"
                                   for partner in ("PLATFORM", "INSURER", "CUSTOMS")})
    hub = Hub(load_config(DEFAULT_CONFIG, environ=env))
    hub.start()
    try:
        time.sleep(0.5)  # the intake's first look is over: it waits for its next one, 30 s on
        fixture = FIXTURES / "underwriting" / "valid" / "insurer-pending-policy-new.xml"
        write_atomically(tmp_path / "exchange" / "insurer" / "in" / fixture.name, fixture.read_bytes())
        wait_for(lambda: list((tmp_path / "exchange" / "platform" / "out").glob("PendingPolicy_*.json")),
                 timeout=10, what="the PendingPolicy forwarded to the platform")
    finally:
        started = time.monotonic()
        hub.stop()
    assert time.monotonic() - started < 10
