"""GET /metrics: the hub in Prometheus text format, read from the store at scrape time.

Several hub processes share one store, so every process reports the same figures: the store's, not its own
memory's. Totals (messages taken and sent, retries, receipt timeouts, job runs) are counted from the store plus
what retention has removed from it (`retired_totals`), so a counter never goes down.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from hub.store import (
    RECEIPT_TIMEOUT_EVENT,
    RETRY_EVENT,
    Store,
    job_runs,
    retired_job_runs,
    retired_totals,
    work,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HubCollector(Collector):
    def __init__(
        self, store: Store, signers: Callable[[], dict[str, dict[str, Any]]], scheduler_role: Callable[[], str]
    ) -> None:
        self.store = store
        self.signers = signers
        self.scheduler_role = scheduler_role

    def collect(self) -> Iterator[Metric]:
        signers = self.signers()  # talks to cards and clients: not while holding a snapshot of the store
        with self.store.read() as conn:
            yield from self._messages(conn)
            yield from self._queue(conn)
            yield from self._jobs(conn)
        yield from self._signers(signers)
        role = GaugeMetricFamily("hub_scheduler_leader", "1 if this hub process runs the scheduled jobs")
        role.add_metric([], 1 if self.scheduler_role() == "leader" else 0)
        yield role

    def _messages(self, conn: Any) -> Iterator[Metric]:
        by_state = GaugeMetricFamily("hub_stored_messages", "Messages in the store now, by family, direction and state",
                                     labels=["family", "direction", "state"])
        tally = self.store.message_tally(conn)
        stored: Counter[tuple[str, str, str]] = Counter()
        live: Counter[tuple[str, str]] = Counter()
        for family, _type, direction, partner, state, n in tally:
            stored[family or "unread", direction, state] += n
            live[direction, partner] += n
        for labels, n in sorted(stored.items()):
            by_state.add_metric(list(labels), n)
        yield by_state

        retired = {(r.direction, r.partner): r for r in conn.execute(select(retired_totals))}
        taken = CounterMetricFamily("hub_messages", "Messages ever stored: taken from partners (in) and sent to "
                                    "them (out), by partner", labels=["direction", "partner"])
        for key in sorted(live.keys() | retired.keys()):
            taken.add_metric(list(key), live.get(key, 0) + (retired[key].messages if key in retired else 0))
        yield taken

        for name, event, column, doc in (
            ("hub_retries", RETRY_EVENT, "retries", "Failed attempts put back to be tried again (retry policy)"),
            ("hub_receipt_timeouts", RECEIPT_TIMEOUT_EVENT, "receipt_timeouts",
             "Delivered messages whose receipt did not come in time"),
        ):
            counter = CounterMetricFamily(name, doc)
            retired_count = sum(getattr(r, column) for r in retired.values())
            counter.add_metric([], self.store.count_events(conn, event) + retired_count)
            yield counter

    def _queue(self, conn: Any) -> Iterator[Metric]:
        depth = GaugeMetricFamily("hub_queue_depth", "Work items in the queue, by state and step",
                                  labels=["state", "step"])
        parked = GaugeMetricFamily("hub_parked", "Work parked after its retries, waiting for an operator",
                                   labels=["step"])
        for state, kind, n in self.store.count_by(conn, work.c.state, work.c.kind):
            depth.add_metric([state, kind], n)
            if state == "parked":
                parked.add_metric([kind], n)
        yield depth
        yield parked
        oldest = conn.execute(
            select(func.min(work.c.created_at)).where(work.c.state.in_(("ready", "leased")))
        ).scalar()
        age = GaugeMetricFamily("hub_queue_oldest_waiting_seconds",
                                "Age of the oldest work item waiting or running (0 when none)")
        age.add_metric([], max(0.0, time.time() - oldest) if oldest else 0.0)
        yield age

    def _jobs(self, conn: Any) -> Iterator[Metric]:
        runs = CounterMetricFamily("hub_job_runs", "Finished runs of each scheduled job", labels=["job"])
        failures = CounterMetricFamily("hub_job_failures", "Runs of each scheduled job that failed", labels=["job"])
        last_ok = GaugeMetricFamily("hub_job_last_success_timestamp_seconds",
                                    "When each job's last successful run finished", labels=["job"])
        finished: dict[str, dict[str, int]] = {}
        for job, state, n in self.store.count_by(conn, job_runs.c.job, job_runs.c.state):
            finished.setdefault(job, {})[state] = n
        for row in conn.execute(select(retired_job_runs)):  # removed by retention, still counted
            states = finished.setdefault(row.job, {})
            states["ok"] = states.get("ok", 0) + row.runs - row.failures
            states["failed"] = states.get("failed", 0) + row.failures
        for job, states in sorted(finished.items()):
            runs.add_metric([job], states.get("ok", 0) + states.get("failed", 0))
            failures.add_metric([job], states.get("failed", 0))
        for job, at in conn.execute(
            select(job_runs.c.job, func.max(job_runs.c.finished_at)).where(job_runs.c.state == "ok")
            .group_by(job_runs.c.job)
        ):
            last_ok.add_metric([job], at)
        yield runs
        yield failures
        yield last_ok

    def _signers(self, signers: dict[str, dict[str, Any]]) -> Iterator[Metric]:
        up = GaugeMetricFamily("hub_signer_ready", "1 if the signer can sign now", labels=["signer"])
        state = GaugeMetricFamily("hub_signer_state", "The signer's state (1 for the current one)",
                                  labels=["signer", "state"])
        expiry = GaugeMetricFamily("hub_signer_certificate_expiry_timestamp_seconds",
                                   "When the signer's certificate expires", labels=["signer"])
        tries = GaugeMetricFamily("hub_signer_pin_tries_left", "PIN tries the card has left", labels=["signer"])
        for name, status in sorted(signers.items()):
            up.add_metric([name], 1 if status.get("state") == "ready" else 0)
            state.add_metric([name, str(status.get("state"))], 1)
            if status.get("not_after"):
                expiry.add_metric([name], datetime.fromisoformat(status["not_after"]).timestamp())
            if status.get("tries_left") is not None:
                tries.add_metric([name], status["tries_left"])
        yield from (up, state, expiry, tries)


class Metrics:
    """The exposition for one hub process; a registry of its own, so several hubs in one process never clash."""

    def __init__(self, collector: HubCollector) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)
