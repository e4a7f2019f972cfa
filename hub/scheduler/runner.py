"""The job runner: APScheduler on the hub's database, run by exactly one hub process at a time.

Every hub process runs a JobRunner. Each tries for the leader lock (hub/leader.py) every
`scheduler.leader_check_seconds`; the one that holds it runs a BackgroundScheduler whose job store is the hub's
database, and the others wait. When the leader dies the server (PostgreSQL) or the kernel (SQLite's flock)
drops its lock and the next process to try takes over, with the job store as the leader left it: a run missed
meanwhile runs once (coalesce) if it is within `misfire_grace_seconds`. A job never overlaps itself: one run of
a job at a time in the leader, scheduled or asked for by an operator (`jobs run NAME` from another process
becomes a request the leader runs). Every run is recorded in the store (runs.py).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from hub.config import HubConfig, JobConfig
from hub.leader import LeaderLock
from hub.scheduler.jobs import JOBS
from hub.scheduler.runs import JobRuns, job_store

if TYPE_CHECKING:
    from hub.app import Hub

log = logging.getLogger("hub.scheduler")
# The runner logs each run and its result itself; APScheduler's own lines for every run would double them. Its
# warnings (a run missed past its grace time, a run skipped as still running) still show.
logging.getLogger("apscheduler").setLevel(logging.WARNING)

REQUEST_POLL_SECONDS = 0.5  # how soon the leader takes up an operator's `jobs run NAME`

# APScheduler keeps a job in its store as a reference to a module-level function and pickled arguments, so a
# scheduled run reaches its runner through this table, by a token the leader writes into every job it schedules.
_RUNNERS: dict[str, JobRunner] = {}


def _run_scheduled(token: str, name: str) -> None:
    runner = _RUNNERS.get(token)
    if runner is None:  # scheduled by a runner that has stepped down since
        log.warning("job %s: its runner %s is gone; not run", name, token)
        return
    if not runner.lock.holds():  # the session holding the lock broke: another process may lead by now
        log.warning("job %s: this process no longer holds the scheduler lock; not run", name)
        return
    runner.run(name, "schedule")


def trigger_of(job: JobConfig, timezone: str) -> BaseTrigger:
    if job.cron is not None:
        return CronTrigger.from_crontab(job.cron, timezone=timezone)
    assert job.interval_seconds is not None  # one of the two (config)
    return IntervalTrigger(seconds=job.interval_seconds, timezone=timezone)


class JobRunner:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.config: HubConfig = hub.config
        self.runs = JobRuns(hub.store)
        # Created now, beside the hub's tables, before anything writes: APScheduler would create it when a process
        # first leads, checking and creating in one deferred transaction, which SQLite refuses ("database is
        # locked") when a pipeline write lands in between.
        hub.store.create_schema(job_store(hub.store.engine).jobs_t)
        self.lock = LeaderLock(self.config.store.url, "scheduler")
        self.process = f"{socket.gethostname()}:{os.getpid()}"
        self.token = f"{self.process}:{id(self):x}"
        self._scheduler: BackgroundScheduler | None = None
        self._one_at_a_time = {name: threading.Lock() for name in self.config.jobs}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def role(self) -> str:
        """This process's part: "leader" (runs the jobs), "standby" (takes over if the leader goes), "off"."""
        if self._thread is None:
            return "off"
        return "leader" if self._scheduler is not None else "standby"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._step_down(wait=True)

    def run(self, name: str, trigger: str, run_id: int | None = None) -> int:
        """Run job `name` now, in this process, once; this process must hold the leader lock. Its run's id."""
        job = self.config.jobs[name]
        with self._one_at_a_time[name]:
            run_id = self.runs.start(name, trigger, self.process, run_id)
            log.debug("job %s starts (%s)", name, trigger)
            try:
                result = JOBS[job.run or name](self.hub, datetime.now(UTC), **job.params)
            except Exception as exc:
                log.exception("job %s failed", name)
                self.runs.finish(run_id, None, f"{type(exc).__name__}: {exc}")
            else:
                log.info("job %s: %s", name, result)
                self.runs.finish(run_id, result, None)
        return run_id

    def _loop(self) -> None:
        next_check = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_check:
                    self._check_leadership()
                    next_check = time.monotonic() + self.config.scheduler.leader_check_seconds
                if self._scheduler is not None:
                    for run_id, name in self.runs.requested():
                        self._run_requested(run_id, name)
            except Exception:  # the store may be briefly unreachable: try again, as the workers do
                log.exception("scheduler: leadership check or requested runs failed; retrying")
            self._stop.wait(REQUEST_POLL_SECONDS)

    def _run_requested(self, run_id: int, name: str) -> None:
        if name not in self.config.jobs:
            self.runs.start(name, "operator", self.process, run_id)
            self.runs.finish(run_id, None, f"no job {name} in this process's config")
            return
        self.run(name, "operator", run_id)

    def _check_leadership(self) -> None:
        if self._scheduler is None:
            if self.lock.acquire():
                self._lead()
        elif not self.lock.holds():
            log.warning("scheduler: lost the leader lock; another hub process runs the jobs now")
            self._step_down(wait=False)

    def _lead(self) -> None:
        interrupted = self.runs.interrupted(self.process)
        if interrupted:
            log.warning("scheduler: %d run(s) of the previous leader were interrupted", interrupted)
        settings = self.config.scheduler
        scheduler = BackgroundScheduler(
            jobstores={"default": job_store(self.hub.store.engine)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": settings.misfire_grace_seconds},
            timezone=settings.timezone,
        )
        _RUNNERS[self.token] = self
        scheduler.start(paused=True)  # the stored jobs are brought in line with the config before any runs
        try:
            self._schedule(scheduler)
            scheduler.resume()
        except BaseException:
            scheduler.shutdown(wait=False)
            _RUNNERS.pop(self.token, None)
            self.lock.release()
            raise
        self._scheduler = scheduler
        log.info("scheduler: this process leads; %d job(s) scheduled", len(scheduler.get_jobs()))

    def _schedule(self, scheduler: BackgroundScheduler) -> None:
        """Every enabled job in the store with this runner's token; a job whose schedule is unchanged keeps its
        next run time, so a run missed while no process led still happens."""
        timezone = self.config.scheduler.timezone
        enabled = {name: job for name, job in self.config.jobs.items() if job.enabled}
        for stored in scheduler.get_jobs():
            if stored.id not in enabled:
                scheduler.remove_job(stored.id)
        for name, job in enabled.items():
            trigger = trigger_of(job, timezone)
            stored = scheduler.get_job(name)
            kept: dict[str, Any] = {}
            if stored is not None and _same(stored.trigger, trigger) and stored.next_run_time is not None:
                kept["next_run_time"] = stored.next_run_time
            scheduler.add_job(_run_scheduled, trigger, args=(self.token, name), id=name, name=name,
                              replace_existing=True, **kept)

    def _step_down(self, wait: bool) -> None:
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.shutdown(wait=wait)
        _RUNNERS.pop(self.token, None)
        self.lock.release()


def _same(a: BaseTrigger, b: BaseTrigger) -> bool:
    return type(a) is type(b) and str(a) == str(b) and getattr(a, "timezone", None) == getattr(b, "timezone", None)
