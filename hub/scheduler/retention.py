"""Retention: settled messages older than the policy's days leave the hot store for the archive.

What leaves, one conversation step at a time: a message nothing answers (an input, or something the hub sent
of its own accord) with everything the hub sent in answer to it, when all of it is settled and untouched
for `retention.delivered_days`: the input decided (accepted or rejected) and its file settled (archive/ or
rejected/), each outbound message delivered or acknowledged, none of them held (HOLD below: work in the
queue, a receipt still awaited, cited by later messages: a policy a claim names). Parked, pending, waiting or
refused messages never leave on their own.

The archive: `retention.archive_dir/YYYY-MM-DD.jsonl.gz` (the day of removal, UTC), one JSON line per message
with every column (its bytes as base64) and its whole history, written and synced before the rows go. Find
one with `zgrep MESSAGE_ID var/archive/*.jsonl.gz`. A crash between the two writes it again next run (the
same line twice). The message's dedupe key goes with it: after the retention period a copy of it is new.
Counts of what left are added to `retired_totals`, so the counters /metrics reports never go down.

Job runs that finished before the same cutoff leave too (not archived: their results are one line each), but each
job's last run and last success stay; their counts are added to `retired_job_runs`.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Connection, Select, Table, and_, delete, exists, func, insert, or_, select, union, update

from hub.scheduler.runs import FAILED, OK
from hub.store import (
    RECEIPT_TIMEOUT_EVENT,
    RETRY_EVENT,
    Store,
    events,
    job_runs,
    messages,
    metadata,
    retired_job_runs,
    retired_totals,
)

if TYPE_CHECKING:
    from hub.app import Hub

DECIDED = ("accepted", "rejected")
SETTLED = ("delivered", "acknowledged")
BATCH = 200  # conversation steps per transaction: short enough not to hold up the pipeline's writers

# Every table whose rows name a message, and what a row there means for retention (a test keeps this complete):
# the message is still in play and stays (work to do, cited by later messages, its receipt awaited) ...
HOLD = {"work", "references", "awaited_receipts"}
# ... or the row goes with the message (its history, archived with it; its dedupe keys).
GO_WITH = {"events", "seen_messages", "seen_versions"}


def referring(names: set[str]) -> list[Column[Any]]:
    """The columns naming a message in those of the tables `names` that the store has."""
    return [fk.parent for table in metadata.sorted_tables if table.name in names
            for fk in table.foreign_keys if fk.column is messages.c.id]


def retire_settled_messages(hub: Hub, now: datetime, **params: Any) -> str:
    policy = hub.config.retention
    return retire(hub.store, policy.archive_dir, now, timedelta(days=policy.delivered_days))


def retire(store: Store, archive_dir: Path, now: datetime, keep: timedelta) -> str:
    cutoff = (now - keep).timestamp()
    archive = archive_dir / f"{now.astimezone(UTC):%Y-%m-%d}.jsonl.gz"
    retired = 0
    while True:
        with store.begin() as conn:
            roots = list(conn.execute(retirable(cutoff).limit(BATCH)).scalars())
            if not roots:
                break
            rows = conn.execute(
                select(messages).where(or_(messages.c.id.in_(roots), messages.c.answers.in_(roots)))
            ).all()
            ids = [row.id for row in rows]
            history = conn.execute(select(events).where(events.c.message.in_(ids)).order_by(events.c.id)).all()
            _archive(archive, now, rows, history)
            _count(conn, rows, history)
            for column in referring(GO_WITH):
                conn.execute(delete(column.table).where(column.in_(ids)))
            conn.execute(delete(messages).where(messages.c.answers.in_(roots)))
            conn.execute(delete(messages).where(messages.c.id.in_(roots)))
        retired += len(ids)
    with store.begin() as conn:
        runs = retire_job_runs(conn, cutoff)
    kept = f"settled before {datetime.fromtimestamp(cutoff, UTC):%Y-%m-%d %H:%M} UTC"
    said = (f"{retired} message(s) {kept} archived to {archive} and removed from the store" if retired
            else f"nothing {kept} to archive")
    return f"{said}; {runs} job run(s) that finished before then removed" if runs else said


def retirable(cutoff: float) -> Select[Any]:
    """The ids of conversation steps whose every message is settled and untouched since `cutoff`."""
    answer = messages.alias("answer")
    held = or_(*(exists().where(column == messages.c.id) for column in referring(HOLD)))
    answer_open = exists().where(
        answer.c.answers == messages.c.id,
        or_(answer.c.state.not_in(SETTLED), answer.c.updated_at >= cutoff,
            *(exists().where(column == answer.c.id) for column in referring(HOLD))),
    )
    file_settled = exists().where(events.c.message == messages.c.id, events.c.event == "settled")
    return (
        select(messages.c.id)
        .where(
            messages.c.answers.is_(None),
            messages.c.updated_at < cutoff,
            or_(
                and_(messages.c.direction == "in", messages.c.state.in_(DECIDED), file_settled),
                and_(messages.c.direction == "out", messages.c.state.in_(SETTLED)),
            ),
            ~held, ~answer_open,
        )
        .order_by(messages.c.updated_at)
    )


def _archive(path: Path, now: datetime, rows: Sequence[Any], history: Sequence[Any]) -> None:
    by_message: dict[str, list[dict[str, Any]]] = {}
    for e in history:
        by_message.setdefault(e.message, []).append({"at": e.at, "event": e.event, "detail": e.detail})
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as file:
        with gzip.GzipFile(fileobj=file, mode="wb") as gz:  # each batch one gzip member; readers see one stream
            for row in rows:
                message = dict(row._mapping)
                raw = message.pop("raw")
                message["raw_base64"] = base64.b64encode(raw).decode("ascii") if raw is not None else None
                line = {"archived_at": now.isoformat(), "message": message, "history": by_message.get(row.id, [])}
                gz.write(json.dumps(line, ensure_ascii=False).encode() + b"\n")
        file.flush()
        os.fsync(file.fileno())


def _count(conn: Connection, rows: Sequence[Any], history: Sequence[Any]) -> None:
    """Add what leaves to the retired totals, per direction and partner."""
    where = {row.id: (row.direction, row.partner) for row in rows}
    counts: dict[tuple[str, str], Counter[str]] = {key: Counter() for key in where.values()}
    for row in rows:
        counts[where[row.id]]["messages"] += 1
    for e in history:
        if e.event == RETRY_EVENT:
            counts[where[e.message]]["retries"] += 1
        elif e.event == RECEIPT_TIMEOUT_EVENT:
            counts[where[e.message]]["receipt_timeouts"] += 1
    for (direction, partner), n in counts.items():
        _add_to(conn, retired_totals, {"direction": direction, "partner": partner},
                {name: n[name] for name in ("messages", "retries", "receipt_timeouts")})


def retire_job_runs(conn: Connection, cutoff: float) -> int:
    """Remove the job runs that finished before `cutoff`, and add them to `retired_job_runs`; how many. Each job's
    last finished run and last successful one stay, whenever they finished: `jobs`, /status and /metrics show them."""
    finished = job_runs.c.state.in_((OK, FAILED))
    kept = union(select(func.max(job_runs.c.id)).where(finished).group_by(job_runs.c.job),
                 select(func.max(job_runs.c.id)).where(job_runs.c.state == OK).group_by(job_runs.c.job))
    old = and_(finished, job_runs.c.finished_at < cutoff, job_runs.c.id.not_in(kept))
    counts: dict[str, Counter[str]] = {}
    for job, state, n in conn.execute(select(job_runs.c.job, job_runs.c.state, func.count()).where(old)
                                      .group_by(job_runs.c.job, job_runs.c.state)):
        counts.setdefault(job, Counter())["runs"] += n
        counts[job]["failures"] += n if state == FAILED else 0
    for job, n in counts.items():
        _add_to(conn, retired_job_runs, {"job": job}, {"runs": n["runs"], "failures": n["failures"]})
    return int(conn.execute(delete(job_runs).where(old)).rowcount) if counts else 0


def _add_to(conn: Connection, table: Table, key: dict[str, str], counts: dict[str, int]) -> None:
    """Add `counts` to the row of `table` at `key`, made if there is none."""
    where = and_(*(table.c[name] == value for name, value in key.items()))
    found = conn.execute(select(table).where(where)).first()
    if found is None:
        conn.execute(insert(table).values(**key, **counts))
    else:
        conn.execute(update(table).where(where).values({name: getattr(found, name) + n for name, n in counts.items()}))
