"""The drop-folder channel's intake: a backlog taken a batch at a time, oldest first."""

from __future__ import annotations

import os
from pathlib import Path

from hub.channels.folder import FolderChannel


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
