"""授权数据查询统计 (DOMAIN.md §2): for each enterprise with a data authorization in force, how many of its
customs documents (declarations, bills of lading, certificates of origin) were used in a period of a frequency
(day, month, year), sent to the platform as one AuthorizedDataStatistics message per enterprise and period.

Counted from the store: a document is used when a customs answer carrying it as found (数据正常, the
enterprise's own) was delivered, and it counts in the period of that delivery (Beijing time) when an
authorization in force covered its kind on that day.

Each period is compiled once, after it has ended: its messages and the cursor naming it commit in one
transaction, so a re-run sends nothing twice, and a run after missed ones compiles every period since the
last compiled (the very first run compiles the last ended period only). Not sent again as a new version:
a period's counts cannot change once it has ended, because a delivery is recorded at the moment it happens.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, select

from hub.models.authorization import DataKind
from hub.models.base import BEIJING, Sender, new_message_id
from hub.models.customs import CustomsRecordAnswer, RecordResult
from hub.models.parties import Enterprise
from hub.models.statistics import AuthorizedDataStatistics, DataCount, Frequency, period_label, period_start
from hub.store import conversations, events, messages

if TYPE_CHECKING:
    from hub.app import Hub

log = logging.getLogger("hub.scheduler.statistics")

# A delivery's time is taken inside its transaction, a moment before it commits: a period is compiled only
# once it has been over this long, so no delivery of it is still on its way into the store.
SETTLED_AFTER = timedelta(minutes=1)


@dataclass(frozen=True)
class Authorization:
    number: str
    enterprise: Enterprise
    kinds: frozenset[DataKind]
    valid_from: date
    valid_to: date

    def covers(self, kind: DataKind, day: date) -> bool:
        return kind in self.kinds and self.valid_from <= day <= self.valid_to


def compile_authorised_data_statistics(hub: Hub, now: datetime, period: str = "day") -> str:
    frequency = Frequency(period)
    name = f"authorised-data-statistics:{frequency.value}"
    last = _period_before(frequency, (now.astimezone(BEIJING) - SETTLED_AFTER).date())
    with hub.store.read() as conn:
        compiled = hub.store.cursor(conn, name)
    pending = list(_periods(frequency, period_start(frequency, compiled), last)) if compiled else [last]
    if not pending:
        return f"authorised-data statistics by {frequency.value}: compiled through {compiled}, nothing to do"
    sent = 0
    for start in pending:
        label = period_label(frequency, start)
        with hub.store.begin() as conn:
            done = hub.store.cursor(conn, name)
            if done is not None and period_start(frequency, done) >= start:
                continue  # another run compiled it meanwhile
            for message in _statistics(conn, frequency, start, hub.pipeline.hub_sender):
                hub.pipeline.originate(conn, message)
                sent += 1
            hub.store.set_cursor(conn, name, label)
    said = (f"authorised-data statistics by {frequency.value}: {len(pending)} period(s) "
            f"{period_label(frequency, pending[0])}..{period_label(frequency, pending[-1])} compiled, "
            f"{sent} message(s) sent")
    log.info(said)
    return said


def _period_before(frequency: Frequency, day: date) -> date:
    """The first day of the last period that ended before `day` began."""
    if frequency is Frequency.DAY:
        return day - timedelta(days=1)
    if frequency is Frequency.MONTH:
        return (day.replace(day=1) - timedelta(days=1)).replace(day=1)
    return date(day.year - 1, 1, 1)


def _next_period(frequency: Frequency, start: date) -> date:
    if frequency is Frequency.DAY:
        return start + timedelta(days=1)
    if frequency is Frequency.MONTH:
        return (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return date(start.year + 1, 1, 1)


def _periods(frequency: Frequency, after: date, last: date) -> Iterator[date]:
    start = _next_period(frequency, after)
    while start <= last:
        yield start
        start = _next_period(frequency, start)


def _statistics(
    conn: Connection, frequency: Frequency, start: date, sender: Sender
) -> list[AuthorizedDataStatistics]:
    end = _next_period(frequency, start)  # exclusive
    authorizations = [a for a in _authorizations(conn) if a.valid_from < end and a.valid_to >= start]
    by_enterprise: dict[str, list[Authorization]] = defaultdict(list)
    for authorization in authorizations:
        by_enterprise[authorization.enterprise.uscc].append(authorization)
    used = _documents_used(conn, start, end, by_enterprise)
    now = datetime.now(BEIJING)
    return [
        AuthorizedDataStatistics(
            message_id=new_message_id(), created_at=now, sender=sender,
            enterprise=held[0].enterprise, authorization_nos=tuple(sorted({a.number for a in held})),
            frequency=frequency, period=period_label(frequency, start),
            counts=tuple(DataCount(data_kind=kind, count=used[uscc].get(kind, 0))
                         for kind in DataKind if any(kind in a.kinds for a in held)),
        )
        for uscc, held in sorted(by_enterprise.items())
    ]


def _authorizations(conn: Connection) -> list[Authorization]:
    """Each authorization the insurer put in force, as the enterprise requested it (the latest request
    accepted under its enterprise and insurer)."""
    in_force = select(conversations.c.business_key).where(
        conversations.c.family == "authorization", conversations.c.state == "in-force"
    )
    rows = conn.execute(
        select(messages.c.business_key, messages.c.canonical).where(
            messages.c.direction == "in", messages.c.state == "accepted",
            messages.c.message_type == "DataAuthorization", messages.c.business_key.in_(in_force),
        ).order_by(messages.c.created_at)
    )
    latest = {row.business_key: json.loads(row.canonical) for row in rows}
    return [
        Authorization(
            number=request["authorizationNo"], enterprise=Enterprise.model_validate(request["enterprise"]),
            kinds=frozenset(DataKind(kind) for kind in request["dataKinds"]),
            valid_from=date.fromisoformat(request["validFrom"]), valid_to=date.fromisoformat(request["validTo"]),
        )
        for request in latest.values()
    ]


def _documents_used(
    conn: Connection, start: date, end: date, authorized: dict[str, list[Authorization]]
) -> dict[str, dict[DataKind, int]]:
    """By enterprise and data kind: the found documents of customs answers delivered in [start, end), each
    counted when an authorization of its enterprise covered its kind on the day it was delivered."""
    delivered = conn.execute(
        select(messages.c.canonical, events.c.at)
        .join(events, and_(events.c.message == messages.c.id, events.c.event == "delivered"))
        .where(
            messages.c.direction == "out", messages.c.message_type == CustomsRecordAnswer.message_type,
            events.c.at >= _epoch(start), events.c.at < _epoch(end),
        )
    )
    used: dict[str, dict[DataKind, int]] = defaultdict(lambda: defaultdict(int))
    for canonical, at in delivered:
        answer: dict[str, Any] = json.loads(canonical)
        uscc = answer["enterprise"]["uscc"]
        day = datetime.fromtimestamp(at, BEIJING).date()
        for document in answer["answers"]:
            kind = DataKind(document["kind"])
            if document["result"] == RecordResult.FOUND and any(
                a.covers(kind, day) for a in authorized.get(uscc, ())
            ):
                used[uscc][kind] += 1
    return used


def _epoch(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=BEIJING).timestamp()
