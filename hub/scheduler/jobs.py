"""The jobs the hub can run, by name. A job is `(hub, now, **params) -> str`: the running Hub, the time of the
run (UTC), the params of its `[jobs.NAME]` entry; it returns one line saying what it did, and raises when it
failed. Config names the job (or `run = "NAME"` to run one function under several schedules)."""

from __future__ import annotations

from collections.abc import Callable

from hub.scheduler.retention import retire_settled_messages
from hub.scheduler.risk_feed import sync_risk_feed
from hub.scheduler.statistics import compile_authorised_data_statistics
from hub.scheduler.sweeps import reap_leases, warn_of_certificate_expiry

Job = Callable[..., str]

JOBS: dict[str, Job] = {
    "reap_leases": reap_leases,
    "certificate_expiry": warn_of_certificate_expiry,
    "retention": retire_settled_messages,
    "sync_risk_feed": sync_risk_feed,
    "authorised_data_statistics": compile_authorised_data_statistics,
}
