"""风险资讯 sync (DOMAIN.md §7): the insurer's new, updated and withdrawn risk articles read from its feed and
forwarded to the platform, each exactly once, in the order the insurer published them.

Each run reads the feed after the cursor, moves the cursor over the leading entries whose fate the store has
recorded (delivered to the platform, or refused with a receipt to the insurer), and takes in the entries not
taken yet through the ordinary intake, so each is validated, mapped, signed, routed and delivered like any
message. An entry always gets the same hub id: read again after a crash, it is the message already stored,
not a second one. The cursor never passes an entry that is not delivered, so a failed or missed run catches
up on the next; a parked entry holds the cursor until an operator replays it.

The pipeline's workers run in parallel, and an update processed before the article it updates would be
refused: an article's later entry is taken in only once its earlier ones are delivered.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from hub.channels import ClaimedInput
from hub.channels.feed import FeedEntry, FeedSource, FolderFeed
from hub.errors import HubError
from hub.models.risk import RiskArticle
from hub.store import Store, messages

if TYPE_CHECKING:
    from hub.app import Hub

log = logging.getLogger("hub.scheduler.risk_feed")

DELIVERED = ("delivered", "acknowledged", "refused")  # refused: by the platform's own receipt, after delivery
DONE, WAITING, PARKED = "done", "waiting", "parked"


def sync_risk_feed(
    hub: Hub, now: datetime, *, partner: str = "insurer", feed: str | None = None, limit: int = 100
) -> str:
    """`feed`: the folder the partner publishes in (default: `feed/` beside its drop folders); `limit`: the
    entries read per run. `now` is not needed: the feed's positions, not the clock, say what is new."""
    folder = Path(feed) if feed else Path(hub.config.partners[partner].channel.root) / "feed"
    return sync(hub, FolderFeed(partner, folder), int(limit))


def cursor_name(partner: str) -> str:
    return f"risk-feed:{partner}"


def sync(hub: Hub, source: FeedSource, limit: int) -> str:
    name = cursor_name(source.partner)
    with hub.store.read() as conn:
        start = int(hub.store.cursor(conn, name) or 0)
    entries = source.since(start, limit)
    fates = _fates(hub.store, [entry.taken.hub_id for entry in entries])

    cursor = start
    for entry in entries:
        if fates.get(entry.taken.hub_id) != DONE:
            break
        cursor = entry.position
    if cursor != start:
        with hub.store.begin() as conn:
            if int(hub.store.cursor(conn, name) or 0) < cursor:  # forward only, whoever ran meanwhile
                hub.store.set_cursor(conn, name, str(cursor))

    counts: Counter[str] = Counter()
    new: list[ClaimedInput] = []
    unfinished: set[str] = set()  # articles with an entry taken in but not yet delivered
    for entry in entries:
        fate = fates.get(entry.taken.hub_id)
        if entry.position <= cursor or fate == DONE:
            continue
        article = _article_of(hub, source.partner, entry)
        if fate is None and article in unfinished:
            counts["held"] += 1
            continue
        if fate is None:
            new.append(entry.taken)
        else:
            counts[fate] += 1
        if article is not None:
            unfinished.add(article)

    # Ids are the entries' own: one stored by a run that crashed, or by a run beside this one, is kept, not doubled.
    hub.pipeline.take_in(new, recovered=True)
    counts["taken"] = len(new)
    said = (f"risk feed from {source.partner}: cursor {start} -> {cursor}, {len(entries)} entries read, "
            f"{counts['taken']} taken in, {counts[WAITING]} awaiting delivery, "
            f"{counts['held']} held behind an earlier entry of their article, {counts[PARKED]} parked")
    log.info(said)
    return said


def _fates(store: Store, hub_ids: Sequence[str]) -> dict[str, str]:
    """Each entry the store has taken in: done (delivered, or refused and answered), waiting, or parked."""
    if not hub_ids:
        return {}
    with store.read() as conn:
        taken = {row.id: row for row in conn.execute(
            select(messages.c.id, messages.c.state, messages.c.message_type).where(messages.c.id.in_(hub_ids))
        )}
        forwarded = {row.answers: row.state for row in conn.execute(
            select(messages.c.answers, messages.c.message_type, messages.c.state).where(
                messages.c.answers.in_(list(taken)), messages.c.direction == "out",
                messages.c.message_type == RiskArticle.message_type,
            )
        )}
    fates = {}
    for hub_id, row in taken.items():
        out = forwarded.get(hub_id)
        if row.state == "rejected" or out in DELIVERED:
            fates[hub_id] = DONE
        elif PARKED in (row.state, out):
            fates[hub_id] = PARKED
        else:
            fates[hub_id] = WAITING
    return fates


def _article_of(hub: Hub, partner: str, entry: FeedEntry) -> str | None:
    """The article an entry is about; None when it cannot be read (the pipeline refuses it on its own)."""
    try:
        raw = entry.taken.read(hub.config.partners[partner].max_message_bytes)
        message = hub.pipeline.formats[partner].decode(raw) if raw is not None else None
    except (OSError, HubError):
        return None
    return message.article_id if isinstance(message, RiskArticle) else None
