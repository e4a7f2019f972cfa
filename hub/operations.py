"""Operator commands on the store: list parked work, replay it, resend a delivered message.

They change only the store (the truth), so they work the same whether the hub is running in another process
(its workers pick the replayed work up at once) or not (the work waits for the next start). Replay is
idempotent: it puts back work that has not finished, and never schedules a second delivery of something
delivered; delivering again is `resend`, on purpose.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, or_, select, update

from hub.channels.folder import FolderChannel
from hub.config import HubConfig
from hub.errors import DELIVERY_FAILED, HubError
from hub.pipeline import AWAITING_SIGNATURE, DELIVERING, RECEIVED
from hub.store import RETRY_EVENT, Store, messages, work
from hub.workqueue import DbWorkQueue, enqueue_ready

REPLAYED = "replayed"
RESENT = "resent"
_DELIVERED = ("delivered", "acknowledged", "refused")  # handed to the partner at least once
# States in which a message still needs a step of work, and the step: a message here with no work item
# (parked, or its work lost) gets its step scheduled again.
_UNFINISHED = {"in": (RECEIVED, AWAITING_SIGNATURE, "parked"), "out": ("pending", DELIVERING, "parked")}
_STEP = {"in": "process", "out": "deliver"}
_BEFORE_STEP = {"in": RECEIVED, "out": "pending"}  # the state each step starts from
_PARKED = ("parked", "settle-parked")  # the events the pipeline records when it parks a step
_RETRY_DETAIL = re.compile(r"^(?P<step>\w+) attempt (?P<attempt>\d+) failed: (?P<error>.*); next in [\d.]+ s$")


class OperatorError(Exception):
    """The command cannot be done as asked (no such message, nothing delivered to resend): one line."""


@dataclass(frozen=True)
class Outcome:
    message: str  # the hub's id
    changed: bool
    said: str  # what the operator reads


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds") if ts else None


class Operations:
    def __init__(self, config: HubConfig, store: Store) -> None:
        self.config = config
        self.store = store

    # -- parked ---------------------------------------------------------------------------------------

    def parked(self, route: str | None = None, partner: str | None = None) -> list[dict[str, Any]]:
        """Parked work with its message and the whole history of its attempts, oldest first."""
        query = (
            select(work.c.kind, work.c.attempts, work.c.last_error, messages.c.id, messages.c.message_id,
                   messages.c.message_type, messages.c.partner, messages.c.direction, messages.c.file_name)
            .join(messages, messages.c.id == work.c.message)
            .where(work.c.state == "parked")
            .order_by(work.c.created_at, work.c.id)
        )
        if route is not None:
            query = query.where(messages.c.message_type == route)
        if partner is not None:
            query = query.where(messages.c.partner == partner)
        with self.store.read() as conn:
            return [self._parked_item(conn, row) for row in conn.execute(query)]

    def _parked_item(self, conn: Connection, row: Any) -> dict[str, Any]:
        target = f"{row.partner}/out/{row.file_name}" if row.direction == "out" else f"{row.kind} in the hub"
        attempts = []
        parked_at = None
        for event in self.store.history(conn, row.id):
            if event.event not in (RETRY_EVENT, REPLAYED, *_PARKED):
                continue
            entry = {"at": iso(event.at), "event": event.event, "error": event.detail, "target": target}
            retried = _RETRY_DETAIL.match(event.detail) if event.event == RETRY_EVENT else None
            if retried:
                entry |= {"attempt": int(retried["attempt"]), "step": retried["step"], "error": retried["error"]}
            attempts.append(entry)
            if event.event in _PARKED:
                parked_at = event.at
        return {
            "hub_id": row.id, "message_id": row.message_id, "type": row.message_type, "partner": row.partner,
            "direction": row.direction, "step": row.kind, "target": target, "attempts": row.attempts,
            "error": row.last_error,
            "parked_at": iso(parked_at), "history": attempts,
        }

    # -- replay ---------------------------------------------------------------------------------------

    def replay(self, ident: str) -> list[Outcome]:
        """Every message known by this hub id or message id, its unfinished work put back to run now."""
        return [self._replay(hub_id) for hub_id in self._find(ident)]

    def replay_all_parked(self, route: str | None = None) -> list[Outcome]:
        return [self._replay(hub_id) for hub_id in dict.fromkeys(item["hub_id"] for item in self.parked(route))]

    def _replay(self, hub_id: str) -> Outcome:
        with self.store.begin() as conn:
            row = self.store.get_message(conn, hub_id)
            items = DbWorkQueue.run_now(conn, hub_id)
            running = [kind for kind, state in items if state == "leased"]
            if running:
                return Outcome(hub_id, False, f"{', '.join(running)} is running now: nothing to do")
            if not items and row.state not in _UNFINISHED[row.direction]:
                more = "; `resend` delivers it again" if row.state in _DELIVERED else ""
                return Outcome(hub_id, False, f"already {row.state}: nothing to do{more}")
            if not items:  # unfinished with no work: its step is scheduled again
                enqueue_ready(conn, _STEP[row.direction], hub_id)
                items = [(_STEP[row.direction], "lost")]
            if row.state == "parked":  # the step only runs on a message in the state it starts from
                conn.execute(update(messages).where(messages.c.id == hub_id)
                             .values(state=_BEFORE_STEP[row.direction], updated_at=time.time()))
                self.store.stop_awaiting(conn, hub_id)  # delivered afresh, it awaits its receipt afresh
            said = ", ".join(f"{state} {kind} runs now" for kind, state in items)
            self.store.add_event(conn, hub_id, REPLAYED, f"replayed by operator: {said}")
        return Outcome(hub_id, True, f"replayed: {said}")

    # -- resend ---------------------------------------------------------------------------------------

    def resend(self, ident: str) -> list[Outcome]:
        """Deliver already delivered outbound messages again: the same bytes under the same name (the message
        id unchanged, so the receiver can tell it is the same message)."""
        with self.store.read() as conn:
            rows = [self.store.get_message(conn, hub_id) for hub_id in self._find(ident)]
        outbound = [row for row in rows if row.direction == "out"]
        if not outbound:
            raise OperatorError(f"{ident} is not a message the hub sends: only outbound messages are resent")
        undelivered = [row for row in outbound if row.state not in _DELIVERED]
        if undelivered:
            row = undelivered[0]
            raise OperatorError(f"{row.id} is {row.state}, not delivered yet: `replay` it instead")
        done = []
        for row in outbound:
            target = f"{row.partner}/out/{row.file_name}"
            try:
                FolderChannel(row.partner, Path(self.config.partners[row.partner].channel.root)).deliver(
                    row.file_name, row.raw)
            except OSError as exc:
                raise HubError(DELIVERY_FAILED, f"resend of {row.id} to {target}: {exc}") from None
            with self.store.begin() as conn:
                self.store.add_event(conn, row.id, RESENT, f"resent by operator: {target}, {len(row.raw)} bytes")
            done.append(Outcome(row.id, True, f"resent to {target}"))
        return done

    def _find(self, ident: str) -> list[str]:
        with self.store.read() as conn:
            found = conn.execute(
                select(messages.c.id).where(or_(messages.c.id == ident, messages.c.message_id == ident))
                .order_by(messages.c.created_at)
            ).scalars().all()
        if not found:
            raise OperatorError(f"no message {ident} in the store")
        return list(found)
