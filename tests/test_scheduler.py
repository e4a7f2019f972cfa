"""The job runner: one leader across hub processes, missed runs caught up once, a job never overlapping itself,
operators' runs, and the retention sweep."""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from hub.app import Hub
from hub.config import DEFAULT_CONFIG, HubConfig, load_config
from hub.metrics import HubCollector
from hub.scheduler import jobs as registry
from hub.scheduler.retention import retire
from hub.scheduler.runs import job_store
from hub.store import Store, job_runs, messages, retired_totals, work
from tests.conftest import (
    REPO,
    UNDERWRITING,
    Exchange,
    fresh_postgres_database,
    hub_environ,
    platform_receipt,
    wait_for,
)
from tests.test_hub_process import HubProcess, _pending_policy
from tests.test_operations import bring_back, take_down


def config_for(root: Path, **env: str) -> HubConfig:
    return load_config(DEFAULT_CONFIG, environ=hub_environ(root, HUB_SCHEDULER__LEADER_CHECK_SECONDS="0.2", **env))


def runs_of(store: Store, job: str) -> list[Any]:
    with store.read() as conn:
        return list(conn.execute(select(job_runs).where(job_runs.c.job == job).order_by(job_runs.c.id)))


def stored_next_run(store: Store, job: str) -> float:
    table = job_store(store.engine).jobs_t
    with store.read() as conn:
        return float(conn.execute(select(table.c.next_run_time).where(table.c.id == job)).scalar_one())


def test_a_run_missed_while_the_hub_was_down_runs_once_on_restart(
    store_url: str, tmp_path: Path, start_hub: Callable[[HubConfig], Hub]
) -> None:
    interval = 4.0
    config = config_for(tmp_path, HUB_STORE__URL=store_url, HUB_JOBS__REAP_LEASES__INTERVAL_SECONDS=str(interval))
    first = Hub(config)
    first.start()
    try:
        wait_for(lambda: first.jobs.role == "leader", 10, "the hub to lead")
        due = stored_next_run(first.store, "reap_leases")
    finally:
        first.stop()
    assert not runs_of(Store(store_url), "reap_leases"), "stopped before its first tick"

    # Down across two ticks (due, due + interval); back before the third.
    time.sleep(max(0.0, due + interval + 0.5 - time.time()))
    restarted_at = time.time()
    hub = start_hub(config)
    third_tick = due + 2 * interval
    wait_for(lambda: runs_of(hub.store, "reap_leases"), third_tick - time.time() - 0.2, "the missed run")
    time.sleep(max(0.0, third_tick - 0.3 - time.time()))
    caught_up = runs_of(hub.store, "reap_leases")
    assert len(caught_up) == 1, "two missed ticks run once (coalesced), before the next tick"
    assert restarted_at <= caught_up[0].started_at < third_tick
    assert (caught_up[0].state, caught_up[0].trigger) == ("ok", "schedule")
    assert caught_up[0].result == "0 expired lease(s) returned to the queue"
    wait_for(lambda: len(runs_of(hub.store, "reap_leases")) == 2, interval + 3, "the regular tick after it")


def _leader_pid(run: Any) -> int:
    return int(run.runner.rsplit(":", 1)[1])


@pytest.mark.slow
def test_two_hub_processes_on_postgresql_run_each_tick_once_and_the_survivor_takes_over(tmp_path: Path) -> None:
    interval = 2.0
    with fresh_postgres_database() as url:
        env = {"HUB_STORE__URL": url, "HUB_JOBS__REAP_LEASES__INTERVAL_SECONDS": str(interval),
               "HUB_SCHEDULER__LEADER_CHECK_SECONDS": "0.5"}
        hubs = [HubProcess(tmp_path / name, **env) for name in ("a", "b")]
        store = Store(url)
        try:
            for process in hubs:
                process.root.mkdir()
                process.start()
            roles = sorted(process.get("/status")[1]["jobs"]["this_process"] for process in hubs)
            assert roles == ["leader", "standby"]
            both_up = time.time()  # the first hub's jobs ran while the second (and its worker processes) started
            time.sleep(5 * interval)
            every = runs_of(store, "reap_leases")
            before = [r for r in every if r.started_at >= both_up]
            leader = next(p for p in hubs if p.proc is not None and p.proc.pid == _leader_pid(every[0]))
            survivor = next(p for p in hubs if p is not leader)
            assert {_leader_pid(r) for r in every} == {_leader_pid(every[0])}, "only the leader runs jobs"
            # Once per tick: 5 intervals hold 4 to 6 ticks (jitter); two runs of one tick would start within
            # milliseconds of each other, while a run late on a loaded machine sits closer to the next.
            assert 4 <= len(before) <= 6, [r.started_at for r in before]
            gaps = [b.started_at - a.started_at for a, b in pairwise(before)]
            assert min(gaps) > 0.1, gaps

            leader.kill9()
            killed_at = time.time()
            taken = wait_for(lambda: [r for r in runs_of(store, "reap_leases") if _leader_pid(r) != _leader_pid(
                before[0])], interval + 5, "the survivor's first run")
            assert taken[0].started_at - killed_at < interval + 1.5, "taken over within one interval (+ margin)"
            assert survivor.get("/status")[1]["jobs"]["this_process"] == "leader"
            time.sleep(3 * interval)
            # Started after the kill: the leader may have started one more run between the look above and its death.
            after = [r for r in runs_of(store, "reap_leases") if r.started_at > killed_at]
            assert {_leader_pid(r) for r in after} == {survivor.proc.pid if survivor.proc else 0}
            assert 2 <= len(after) <= 5, [r.started_at for r in after]  # 3 intervals and the missed tick
            gaps = [b.started_at - a.started_at for a, b in pairwise(after)]
            assert min(gaps) > 0.1, gaps
            assert all(r.state == "ok" for r in before + after)
        finally:
            for process in hubs:
                process.stop()
            store.close()


def test_a_job_never_overlaps_itself_and_a_failing_job_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_hub: Callable[[HubConfig], Hub]
) -> None:
    running = threading.Semaphore(1)
    overlaps = []

    def slow(hub: Hub, now: datetime, seconds: float = 0.6, **params: Any) -> str:
        if not running.acquire(blocking=False):
            overlaps.append(now)
            return "overlapped"
        try:
            time.sleep(seconds)
        finally:
            running.release()
        return f"slept {seconds} s"

    def explode(hub: Hub, now: datetime, **params: Any) -> str:
        raise RuntimeError("the insurer's feed answered 503")

    monkeypatch.setitem(registry.JOBS, "slow", slow)
    monkeypatch.setitem(registry.JOBS, "explode", explode)
    hub = start_hub(config_for(tmp_path, HUB_JOBS__SLOW__INTERVAL_SECONDS="0.2",
                               HUB_JOBS__EXPLODE__INTERVAL_SECONDS="0.5"))
    wait_for(lambda: len(runs_of(hub.store, "slow")) >= 3, 15, "three runs of the slow job")
    hub.jobs.run("slow", "operator")  # an operator's run while the schedule keeps firing: waits its turn
    wait_for(lambda: len(runs_of(hub.store, "explode")) >= 2, 10, "two runs of the failing job")

    slow_runs = [r for r in runs_of(hub.store, "slow") if r.finished_at]
    assert not overlaps
    spans = sorted((r.started_at, r.finished_at) for r in slow_runs)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in pairwise(spans))
    assert "operator" in {r.trigger for r in slow_runs}
    failed = runs_of(hub.store, "explode")[0]
    assert (failed.state, failed.error) == ("failed", "RuntimeError: the insurer's feed answered 503")
    assert hub.jobs.role == "leader", "a failing job does not stop the scheduler"


def test_jobs_lists_each_job_and_jobs_run_is_run_by_the_leading_hub(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path, HUB_SCHEDULER__LEADER_CHECK_SECONDS="0.2")
    hub.start()
    try:
        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, str(REPO / "run_hub.py"), *args], cwd=tmp_path, env=hub.env,
                                  capture_output=True, text=True, timeout=60)

        wait_for(lambda: hub.get("/status")[1]["jobs"]["this_process"] == "leader", 10, "the hub to lead")
        done = cli("jobs", "run", "certificate_expiry", "--json")
        assert done.returncode == 0, done.stderr
        run = json.loads(done.stdout)
        assert hub.proc is not None and run["runner"].endswith(f":{hub.proc.pid}"), "run by the hub, not the command"
        assert (run["state"], run["trigger"], run["result"]) == (
            "ok", "operator", "0 certificate(s) valid beyond 30 days")

        listed = {j["job"]: j for j in json.loads(cli("jobs", "--json").stdout)}
        assert set(listed) == set(load_config(DEFAULT_CONFIG, environ={}).jobs)  # every configured job, no other
        assert {"reap_leases", "certificate_expiry", "retention", "sync_risk_feed"} <= set(listed)
        assert listed["certificate_expiry"]["last_run"]["result"] == run["result"]
        assert listed["retention"]["schedule"] == "cron 30 2 * * * (Asia/Shanghai)"
        assert listed["retention"]["next_run"] and listed["retention"]["last_run"] is None
        assert hub.get("/status")[1]["jobs"]["jobs"] == list(listed.values())

        text = cli("jobs").stdout
        assert "certificate_expiry: cron 0 7 * * * (Asia/Shanghai); next run" in text
        assert "ok: 0 certificate(s) valid beyond 30 days" in text

        unknown = cli("jobs", "run", "sync_everything")
        assert unknown.returncode == 2 and unknown.stderr.strip().splitlines() == [
            "hub: jobs run sync_everything: no [jobs.sync_everything] in the config (there are: "
            f"{', '.join(listed)})"]
    finally:
        hub.stop()

    alone = subprocess.run([sys.executable, str(REPO / "run_hub.py"), "jobs", "run", "retention"], cwd=tmp_path,
                           env=hub.env, capture_output=True, text=True, timeout=60)
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.startswith("retention: ok: nothing settled before "), "no hub leads: run by the command"


# -- retention ------------------------------------------------------------------------------------------

def _idle(store: Store) -> bool:
    with store.read() as conn:
        return not conn.execute(select(func.count()).select_from(work).where(work.c.state != "parked")).scalar()


def _message_ids(store: Store) -> dict[str, tuple[str, str, str]]:
    with store.read() as conn:
        return {r.id: (r.direction, r.message_type or "", r.state) for r in conn.execute(select(messages))}


def _archived(folder: Path) -> list[dict[str, Any]]:
    lines = []
    for path in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as file:
            lines += [json.loads(line) for line in file]
    return lines


def _answered(exchange: Exchange, policy_id: str) -> None:
    """The platform takes the forwarded policy and sends its receipt: until then the step awaits it, unsettled."""
    exchange.drop("platform", f"receipt-{policy_id}.json", platform_receipt(policy_id))


def test_retention_archives_and_removes_settled_steps_only_and_parked_ones_stay(
    store_url: str, tmp_path: Path, start_hub: Callable[[HubConfig], Hub]
) -> None:
    hub = start_hub(config_for(tmp_path, HUB_STORE__URL=store_url))
    exchange = Exchange(tmp_path / "exchange")
    keep = timedelta(days=90)
    archive = tmp_path / "archive"
    old_id, old_policy = _pending_policy(1)
    exchange.drop("insurer", "old-policy.xml", old_policy)
    exchange.drop_fixture(UNDERWRITING / "invalid" / "insurer-pending-policy-invalid-uscc.xml")
    exchange.wait_files("insurer", "archive", 1)
    exchange.wait_files("insurer", "rejected", 1, "*.xml")
    _answered(exchange, old_id)
    exchange.wait_files("platform", "archive", 1)
    wait_for(lambda: _idle(hub.store), what="the first two settled")
    first_two = _message_ids(hub.store)
    assert sorted(first_two.values()) == [
        ("in", "PendingPolicy", "accepted"), ("in", "PendingPolicy", "rejected"), ("in", "Receipt", "accepted"),
        ("out", "PendingPolicy", "acknowledged"), ("out", "Receipt", "delivered"), ("out", "Receipt", "delivered")]
    time.sleep(0.05)
    between = time.time()
    time.sleep(0.05)

    take_down(exchange, "platform")
    exchange.drop("insurer", "parked-policy.xml", _pending_policy(2)[1])
    wait_for(lambda: "parked" in {s for _, _, s in _message_ids(hub.store).values()}, 15, "a parked delivery")
    bring_back(exchange, "platform")
    new_id, new_policy = _pending_policy(3)
    exchange.drop("insurer", "new-policy.xml", new_policy)
    exchange.wait_files("insurer", "archive", 3)
    _answered(exchange, new_id)
    wait_for(lambda: len(exchange.files("platform", "archive")) == 2 and _idle(hub.store), 15, "all settled")
    everything = _message_ids(hub.store)

    # Everything settled before `between` is older than 90 days at between + 90 days; nothing after it is.
    said = retire(hub.store, archive, datetime.fromtimestamp(between, UTC) + keep, keep)
    assert said.startswith("6 message(s) settled before ")
    assert set(_message_ids(hub.store)) == set(everything) - set(first_two)
    lines = _archived(archive)
    assert sorted(line["message"]["id"] for line in lines) == sorted(first_two)
    original = next(line for line in lines if line["message"]["file_name"] == "old-policy.xml")
    assert base64.b64decode(original["message"]["raw_base64"]) == old_policy
    assert {"received", "accepted", "settled"} <= {e["event"] for e in original["history"]}

    # Long after: the recent step goes too; the parked one stays whole (its input, its receipt, the delivery).
    said = retire(hub.store, archive, datetime.now(UTC) + 10 * keep, keep)
    assert said.startswith("4 message(s)")
    left = _message_ids(hub.store)
    assert sorted(left.values()) == [
        ("in", "PendingPolicy", "accepted"), ("out", "PendingPolicy", "parked"), ("out", "Receipt", "delivered")]
    assert retire(hub.store, archive, datetime.now(UTC) + 10 * keep, keep).startswith("nothing settled before")
    assert len(_archived(archive)) == 10
    with hub.store.read() as conn:
        assert sum(r.messages for r in conn.execute(select(retired_totals))) == 10


def _job_metrics(store: Store) -> dict[tuple[str, str], float]:
    """/metrics' figures for scheduled jobs: (sample, job) -> value."""
    return {(sample.name, sample.labels["job"]): sample.value
            for family in HubCollector(store, dict, lambda: "follower").collect() if family.name.startswith("hub_job")
            for sample in family.samples}


def test_retention_removes_old_job_runs_but_keeps_each_job_s_last_run_last_success_and_counts(
        store_url: str, tmp_path: Path) -> None:
    """A job that runs every minute adds half a million runs a year, which `jobs`, /status and /metrics read whole.
    Runs that finished before retention's cutoff leave; each job's last finished run and last success stay
    (what `jobs` and /status show), and /metrics' counters of runs and failures do not move."""
    store = Store(store_url)
    store.create_schema()
    now = datetime.now(UTC)
    old, recent = (now - timedelta(days=100)).timestamp(), now.timestamp() - 60

    def run(job: str, state: str, at: float) -> dict[str, Any]:
        return {"job": job, "trigger": "schedule", "state": state, "requested_at": at, "started_at": at,
                "finished_at": at if state in ("ok", "failed") else None, "result": f"{job} {state} at {at}"}

    feed = [run("sync_risk_feed", state, old + n) for n, state in enumerate(["ok", "ok", "ok", "failed", "failed"])]
    retention = [run("retention", "ok", old + n) for n in range(3)] + [run("retention", "ok", recent)]
    unfinished = [run("statistics", "running", old), run("statistics", "requested", old)]
    with store.begin() as conn:
        for row in [*feed, *retention, *unfinished]:  # one at a time: ids in this order
            conn.execute(insert(job_runs).values(row))
    before = _job_metrics(store)

    said = retire(store, tmp_path / "archive", now, timedelta(days=90))
    assert said.startswith("nothing settled before")
    assert said.endswith("; 6 job run(s) that finished before then removed")
    with store.read() as conn:
        left = [row.result for row in conn.execute(select(job_runs.c.result).order_by(job_runs.c.id))]
    assert left == [feed[2]["result"], feed[4]["result"], retention[3]["result"],
                    unfinished[0]["result"], unfinished[1]["result"]], "the last success and last run of each"
    assert _job_metrics(store) == before
    assert before[("hub_job_runs_total", "sync_risk_feed")] == 5
    assert before[("hub_job_failures_total", "sync_risk_feed")] == 2
    assert retire(store, tmp_path / "archive", now, timedelta(days=90)).startswith("nothing settled before")
    assert _job_metrics(store) == before


def test_the_retention_job_uses_the_configured_policy(tmp_path: Path, start_hub: Callable[[HubConfig], Hub]) -> None:
    hub = start_hub(config_for(tmp_path, HUB_RETENTION__DELIVERED_DAYS="0.00001",  # under a second
                               HUB_RETENTION__ARCHIVE_DIR=f'"{tmp_path / "kept"}"'))
    exchange = Exchange(tmp_path / "exchange")
    policy_id, policy = _pending_policy(7)
    exchange.drop("insurer", "policy.xml", policy)
    exchange.wait_files("insurer", "archive", 1)
    _answered(exchange, policy_id)
    exchange.wait_files("platform", "archive", 1)
    wait_for(lambda: _idle(hub.store), what="settled")
    time.sleep(1.0)
    run = runs_of(hub.store, "retention")
    assert not run
    hub.jobs.run("retention", "operator")
    [run] = runs_of(hub.store, "retention")
    assert run.state == "ok" and run.result.startswith("4 message(s) settled before"), run.error
    assert str(tmp_path / "kept") in run.result
    assert not _message_ids(hub.store)
    assert os.listdir(tmp_path / "kept")


def test_certificate_expiry_warns_of_signers_and_trusted_certificates_near_their_end(
    tmp_path: Path, start_hub: Callable[[HubConfig], Hub], caplog: pytest.LogCaptureFixture
) -> None:
    from tests.signing.conftest import FIXTURES
    from tests.test_signed_messages import signing_config

    def checked(warn_days: int) -> Any:
        config, _ = signing_config(
            tmp_path,
            f'[signers.hub-key]\nkind = "software"\nkey = "{FIXTURES / "pengcheng-rsa.key.pem"}"\n'
            f'certificate = "{FIXTURES / "pengcheng-rsa.cert.pem"}"\n\n'
            f'[partners.insurer.signing]\ntrusted_certificates = ["{FIXTURES / "pengcheng-rsa-expired.cert.pem"}"]\n',
            HUB_JOBS__CERTIFICATE_EXPIRY__PARAMS__WARN_DAYS=str(warn_days), HUB_SCHEDULER__ENABLED="false",
        )
        hub = start_hub(config)
        return hub.jobs.runs.get(hub.jobs.run("certificate_expiry", "operator"))

    expired = checked(30)
    assert expired.state == "ok"
    assert expired.result.startswith("1 warning(s), 2 certificate(s) checked against 30 days: insurer's trusted "
                                     "certificate ") and " expired 20" in expired.result
    assert "certificate expiry: insurer's trusted certificate" in caplog.text
    both = checked(365 * 30)  # the signer's certificate runs to 2045
    assert both.result.startswith("2 warning(s)")
    assert "signer hub-key certificate 01a2b3c4 expires 2045-01-01" in both.result


def test_bad_job_config_is_refused_with_the_key_named(tmp_path: Path) -> None:
    from hub.config import ConfigError

    for env, said in (
        ({"HUB_JOBS__RETENTION__CRON": '"61 2 * * *"'}, "jobs.retention: Value error, cron '61 2 * * *': "),
        ({"HUB_JOBS__RETENTION__INTERVAL_SECONDS": "60"}, "jobs.retention: Value error, give cron"),
        ({"HUB_JOBS__NIGHTLY__CRON": '"0 1 * * *"'}, "jobs.nightly runs 'nightly', which is not a job the hub has"),
        ({"HUB_SCHEDULER__TIMEZONE": "Mars/Olympus"}, "scheduler: Value error, timezone 'Mars/Olympus' is not a known"),
    ):
        with pytest.raises(ConfigError) as refused:
            config_for(tmp_path, **env)
        assert said in str(refused.value)


def test_retention_knows_what_every_table_naming_a_message_means() -> None:
    """A table that names a message either holds it in the store or goes with it: a new one must say which,
    or retention would break its foreign key or take a message still in play."""
    from hub.scheduler.retention import GO_WITH, HOLD, referring
    from hub.store import metadata

    naming = {fk.parent.table.name for table in metadata.sorted_tables for fk in table.foreign_keys
              if fk.column is messages.c.id and table is not messages}
    assert naming <= HOLD | GO_WITH, f"retention does not know {sorted(naming - HOLD - GO_WITH)}"
    assert {c.table.name for c in referring(HOLD | GO_WITH)} == naming
