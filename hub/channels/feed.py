"""A partner's feed: documents it publishes in order, read by position rather than taken (the insurer's risk
articles, DOMAIN.md §7). Reading changes nothing on the partner's side, so the hub asks again "since N"
whenever it likes; what it has taken in already is known by the hub id each entry always gets.

The embedded default is a folder: the partner writes each document as `feed/POSITION__NAME` (POSITION a
whole number, increasing; write NAME.tmp, then rename, as for in/). Another transport (HTTP, AMQP) is
another FeedSource.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hub.channels import ClaimedInput
from hub.channels.folder import TMP_SUFFIX

_SEP = "__"
# Entry hub ids are name-based UUIDs in this namespace: the same entry read twice is the same stored message.
_FEED_IDS = uuid.UUID("6f1d2c4e-7a0b-4c55-9e3d-2b8f61a0c9d7")


@dataclass(frozen=True)
class FeedEntry:
    position: int
    taken: ClaimedInput  # ready for the pipeline's intake, under the hub id this entry always gets


class FeedSource(Protocol):
    partner: str

    def since(self, position: int, limit: int) -> list[FeedEntry]:
        """At most `limit` entries after `position`, in order."""
        ...


def entry_hub_id(partner: str, feed: str, name: str) -> str:
    return str(uuid.uuid5(_FEED_IDS, f"{partner}/{feed}/{name}")).upper()


class FolderFeed:
    def __init__(self, partner: str, folder: Path) -> None:
        self.partner = partner
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def since(self, position: int, limit: int) -> list[FeedEntry]:
        found = []
        with os.scandir(self.folder) as entries:
            for entry in entries:
                head, sep, _rest = entry.name.partition(_SEP)
                if (not sep or not head.isdigit() or entry.name.endswith(TMP_SUFFIX)
                        or not entry.is_file(follow_symlinks=False)):
                    continue  # not a published entry (or still being written)
                if int(head) > position:
                    found.append((int(head), entry.name, Path(entry.path), entry.stat().st_size))
        found.sort()
        return [
            FeedEntry(at, ClaimedInput(entry_hub_id(self.partner, self.folder.name, name), self.partner, name,
                                       path, size))
            for at, name, path, size in found[:limit]
        ]
