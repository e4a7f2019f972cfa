"""The read-only status interface: GET /health, /status, /messages/{id}, /metrics (Prometheus). Every other
method answers 405.

It reads the store, the source of truth, so what it shows is what the hub will act on. Built on the
standard library's threading HTTP server: a handful of JSON GET endpoints need no framework.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import Connection, func, or_, select

from hub.config import HubConfig
from hub.metrics import CONTENT_TYPE, HubCollector, Metrics
from hub.pipeline import AWAITING_SIGNATURE
from hub.scheduler.runs import overview
from hub.store import Store, messages, work
from hub.workqueue import DbWorkQueue

log = logging.getLogger("hub.status")


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds") if ts else None


# What a route's last error shows of its message.
_LAST_ERROR = ("id", "message_type", "direction", "partner", "error_code", "error_field", "error_message", "updated_at")


def _error(row: Any) -> dict[str, Any] | None:
    if not row.error_code:
        return None
    return {"code": row.error_code, "field": row.error_field or "", "message": row.error_message}


class StatusReader:
    def __init__(
        self, config: HubConfig, store: Store, started_at: float, signers: Callable[[], dict[str, Any]] = dict,
        scheduler_role: Callable[[], str] = lambda: "off",
        worker_processes: Callable[[], list[dict[str, Any]]] = list,
    ) -> None:
        self.config = config
        self.store = store
        self.started_at = started_at
        self.signers = signers  # each signer's status, read from the card or client without spending a PIN try
        self.scheduler_role = scheduler_role  # this process's part in running the jobs: leader, standby, off
        self.worker_processes = worker_processes  # the processes this hub started to run more workers
        self.metrics = Metrics(HubCollector(store, signers, scheduler_role))

    def status(self) -> dict[str, Any]:
        signers = self.signers()  # talks to cards and clients: not while holding a snapshot of the store
        with self.store.read() as conn:
            tally = self.store.message_tally(conn)  # the messages counted once, for every section below
            errors = self._last_errors(conn)
            return {
                "hub": {"started_at": _iso(self.started_at), "uptime_seconds": round(time.time() - self.started_at),
                        "worker_processes": self.worker_processes()},
                "messages": self._messages(tally),
                "queue": DbWorkQueue.depth(conn),
                "routes": [self._route(tally, errors, r.message, r.from_partner, r.to_partner)
                           for r in self.config.routes],
                "conversations": self._conversations(conn),
                "parked": self._parked(conn),
                "receipts": self._receipts(conn),
                "awaiting_signature": self._awaiting_signature(conn),
                "signers": signers,
                "jobs": {"this_process": self.scheduler_role(), "jobs": overview(self.config, conn, self.store.engine)},
            }

    @staticmethod
    def _messages(tally: list[Any]) -> dict[str, Any]:
        by_state: dict[str, dict[str, int]] = defaultdict(dict)
        by_type: dict[str, dict[str, int]] = defaultdict(dict)
        for _family, mtype, direction, _partner, state, count in tally:
            by_state[direction][state] = by_state[direction].get(state, 0) + count
            label = f"{mtype or 'unreadable'} {direction}"
            by_type[label][state] = by_type[label].get(state, 0) + count
        return {"by_state": by_state, "by_type": by_type}

    @staticmethod
    def _last_errors(conn: Connection) -> dict[tuple[str, str, str], Any]:
        """The last message with an error of each message type, direction and partner: one look at the few
        messages that have one (ix_messages_error), not one for each route."""
        ranked = select(*(messages.c[name] for name in _LAST_ERROR), func.row_number().over(
            partition_by=(messages.c.message_type, messages.c.direction, messages.c.partner),
            order_by=messages.c.updated_at.desc()).label("nth")).where(messages.c.error_code.is_not(None)).subquery()
        return {(row.message_type, row.direction, row.partner): row
                for row in conn.execute(select(ranked).where(ranked.c.nth == 1))}

    @staticmethod
    def _route(tally: list[Any], errors: dict[tuple[str, str, str], Any], mtype: str, source: str, target: str
               ) -> dict[str, Any]:
        counts: Counter[str] = Counter()
        for _family, of_type, direction, partner, _state, n in tally:
            if of_type == mtype and partner == (source if direction == "in" else target):
                counts[direction] += n
        failed = max((found for found in (errors.get((mtype, "in", source)), errors.get((mtype, "out", target)))
                      if found is not None), key=lambda row: row.updated_at, default=None)
        last_error = None
        if failed is not None:  # shaped as parked and awaiting_signature list theirs
            last_error = {"message": failed.id, "at": _iso(failed.updated_at), "error": _error(failed)}
        return {
            "message": mtype, "from": source, "to": target,
            "received": counts["in"], "forwarded": counts["out"], "last_error": last_error,
        }

    def _conversations(self, conn: Connection) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(dict)
        for family, state, count in self.store.conversation_tally(conn):
            out[family][state] = count
        return out

    def _parked(self, conn: Connection) -> list[dict[str, Any]]:
        rows = conn.execute(
            select(work.c.kind, work.c.last_error, work.c.attempts, messages)
            .join(messages, messages.c.id == work.c.message)
            .where(work.c.state == "parked")
            .order_by(work.c.created_at)
            .limit(50)
        ).all()
        return [
            {"message": r.id, "type": r.message_type, "partner": r.partner, "step": r.kind,
             "attempts": r.attempts, "error": r.last_error}
            for r in rows
        ]

    def _receipts(self, conn: Connection) -> dict[str, dict[str, Any]]:
        """Per partner: what awaits its receipt (overdue, resent, parked RECEIPT_TIMEOUT) and the limits."""
        found = self.store.receipts_awaited(conn, time.time())
        none = {"awaited": 0, "overdue": 0, "resent": 0, "timed_out": 0}
        return {
            name: {**found.get(name, none), "timeout_seconds": p.receipt_timeout_seconds,
                   "resends": p.receipt_resends}
            for name, p in self.config.partners.items()
        }

    def _awaiting_signature(self, conn: Connection) -> list[dict[str, Any]]:
        """Messages whose receiver's signer cannot sign now, and why (they go on by themselves once it can)."""
        rows = conn.execute(
            select(messages).where(messages.c.direction == "in", messages.c.state == AWAITING_SIGNATURE,
                                   messages.c.error_code.is_not(None))  # it always has one: ix_messages_error
            .order_by(messages.c.created_at).limit(50)
        ).all()
        return [{"message": r.id, "partner": r.partner, "file": r.file_name, "since": _iso(r.updated_at),
                 "error": _error(r)} for r in rows]

    def message(self, ident: str) -> dict[str, Any] | None:
        """One message's history, by the hub's id or by the message's own id (which may match several)."""
        with self.store.read() as conn:
            rows = conn.execute(
                select(messages).where(or_(messages.c.id == ident, messages.c.message_id == ident))
                .order_by(messages.c.created_at)
            ).all()
            if not rows:
                return None
            found = []
            for row in rows:
                related = conn.execute(
                    select(messages.c.id, messages.c.direction, messages.c.partner, messages.c.message_type,
                           messages.c.state)
                    .where(or_(messages.c.answers == row.id, messages.c.id == row.answers))
                    .order_by(messages.c.created_at)
                ).all()
                found.append({
                    "id": row.id, "direction": row.direction, "partner": row.partner, "message_id": row.message_id,
                    "type": row.message_type, "business_key": row.business_key, "state": row.state,
                    "file": row.file_name, "size": row.size, "error": _error(row),
                    "created_at": _iso(row.created_at), "updated_at": _iso(row.updated_at),
                    "history": [{"at": _iso(e.at), "event": e.event, "detail": e.detail}
                                for e in self.store.history(conn, row.id)],
                    "related": [dict(r._mapping) for r in related],
                })
            return {"messages": found}

    def healthy(self) -> bool:
        try:
            with self.store.read() as conn:
                conn.execute(select(1))
            return True
        except Exception:
            log.exception("store unreachable")
            return False


class _Handler(BaseHTTPRequestHandler):
    reader: StatusReader
    server_version = "sw-eci-hub"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/health":
            ok = self.reader.healthy()
            self._json(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, {"status": "ok" if ok else "down"})
        elif path == "/status":
            self._json(HTTPStatus.OK, self.reader.status())
        elif path == "/metrics":
            self._send(HTTPStatus.OK, self.reader.metrics.render(), CONTENT_TYPE)
        elif path.startswith("/messages/"):
            found = self.reader.message(path.removeprefix("/messages/"))
            if found is None:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no message {path.removeprefix('/messages/')}"})
            else:
                self._json(HTTPStatus.OK, found)
        else:
            self._json(HTTPStatus.NOT_FOUND,
                       {"error": f"no such page {path}; try /health, /status, /metrics, /messages/ID"})

    def do_HEAD(self) -> None:
        self.do_GET()

    def __getattr__(self, name: str) -> Any:
        # Any other method (POST, PUT, DELETE, or one never heard of) gets 405: this interface only reads.
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self) -> None:
        self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{self.command} is not allowed: read-only"},
                   {"Allow": "GET, HEAD"})

    def _json(self, status: HTTPStatus, body: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body, ensure_ascii=False, indent=2, default=str).encode()
        self._send(status, payload, "application/json; charset=utf-8", headers)

    def _send(self, status: HTTPStatus, payload: bytes, content_type: str, headers: dict[str, str] | None = None
              ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class StatusServer:
    def __init__(self, reader: StatusReader, host: str, port: int) -> None:
        handler = type("StatusHandler", (_Handler,), {"reader": reader})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="status", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
