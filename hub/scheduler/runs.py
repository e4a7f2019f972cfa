"""Runs of scheduled jobs, recorded in the store (`job_runs`), so every process and command sees them: the last
run and result of each job, the runs an operator requested, how many ran and failed."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from sqlalchemy import Connection, Engine, func, insert, select, update

from hub.config import HubConfig, JobConfig
from hub.store import Store, job_runs

REQUESTED, RUNNING, OK, FAILED = "requested", "running", "ok", "failed"


def job_store(engine: Engine) -> SQLAlchemyJobStore:
    """APScheduler's job store in the hub's database: each job's trigger and next run time, kept across restarts."""
    return SQLAlchemyJobStore(engine=engine)


def schedule_of(job: JobConfig, timezone: str) -> str:
    return f"cron {job.cron} ({timezone})" if job.cron else f"every {job.interval_seconds:g} s"


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts else None


class JobRuns:
    def __init__(self, store: Store) -> None:
        self.store = store

    def start(self, job: str, trigger: str, runner: str, run_id: int | None = None) -> int:
        """A run begins: a new row, or an operator's requested row taken up."""
        now = time.time()
        with self.store.begin() as conn:
            if run_id is not None:
                conn.execute(update(job_runs).where(job_runs.c.id == run_id)
                             .values(state=RUNNING, started_at=now, runner=runner))
                return run_id
            return _inserted(conn, job=job, trigger=trigger, state=RUNNING, requested_at=now, started_at=now,
                             runner=runner)

    def finish(self, run_id: int, result: str | None, error: str | None) -> None:
        with self.store.begin() as conn:
            conn.execute(update(job_runs).where(job_runs.c.id == run_id).values(
                state=FAILED if error else OK, finished_at=time.time(), result=result, error=error))

    def request(self, job: str) -> int:
        """An operator asks the leader to run `job` now."""
        with self.store.begin() as conn:
            return _inserted(conn, job=job, trigger="operator", state=REQUESTED, requested_at=time.time())

    def requested(self) -> list[tuple[int, str]]:
        with self.store.read() as conn:
            rows = conn.execute(select(job_runs.c.id, job_runs.c.job).where(job_runs.c.state == REQUESTED)
                                .order_by(job_runs.c.id)).all()
        return [(row.id, row.job) for row in rows]

    def interrupted(self, runner: str) -> int:
        """Runs left "running" by a leader that died: only the leader runs jobs, and `runner` leads now."""
        with self.store.begin() as conn:
            return conn.execute(
                update(job_runs).where(job_runs.c.state == RUNNING, job_runs.c.runner != runner)
                .values(state=FAILED, finished_at=time.time(), error="interrupted: its process stopped")
            ).rowcount

    def get(self, run_id: int) -> Any:
        with self.store.read() as conn:
            return conn.execute(select(job_runs).where(job_runs.c.id == run_id)).one()


def _inserted(conn: Connection, **values: Any) -> int:
    return int(conn.execute(insert(job_runs).values(**values).returning(job_runs.c.id)).scalar_one())


def describe_run(row: Any) -> dict[str, Any]:
    return {
        "state": row.state, "trigger": row.trigger, "runner": row.runner, "requested_at": _iso(row.requested_at),
        "started_at": _iso(row.started_at), "finished_at": _iso(row.finished_at),
        "seconds": round(row.finished_at - row.started_at, 3) if row.finished_at and row.started_at else None,
        "result": row.result, "error": row.error,
    }


def overview(config: HubConfig, conn: Connection, engine: Engine) -> list[dict[str, Any]]:
    """Each configured job: its schedule, next run (as the leader's job store has it), last run and result."""
    table = job_store(engine).jobs_t
    next_runs: dict[str, float | None] = {}
    if engine.dialect.has_table(conn, table.name):
        next_runs = {row.id: row.next_run_time for row in conn.execute(select(table.c.id, table.c.next_run_time))}
    latest = (select(job_runs.c.job, func.max(job_runs.c.id).label("id"))
              .where(job_runs.c.state.in_((OK, FAILED))).group_by(job_runs.c.job).subquery())
    last = {row.job: row for row in conn.execute(select(job_runs).join(latest, latest.c.id == job_runs.c.id))}
    running = {row.job for row in conn.execute(select(job_runs.c.job).where(job_runs.c.state == RUNNING))}
    return [
        {
            "job": name, "runs": job.run or name, "schedule": schedule_of(job, config.scheduler.timezone),
            "enabled": job.enabled, "params": job.params, "next_run": _iso(next_runs.get(name)),
            "running": name in running, "last_run": describe_run(last[name]) if name in last else None,
        }
        for name, job in config.jobs.items()
    ]
