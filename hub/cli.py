"""`python run_hub.py [--config PATH] [command]`: run (the default), demo, schemas DIR, card status,
card unblock [--signer NAME] CERT_NO, parked, replay ID | --all-parked, resend ID, jobs, jobs run NAME."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from hub.config import ConfigError, HubConfig, load_config
from hub.schemas import SCHEMA_DIR, SchemaLoadError

EXIT_BAD_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run_hub.py", description="Single Window export-credit-insurance hub")
    parser.add_argument("--config", type=Path, help="config file (default: config/hub.toml)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="run the hub until stopped (the default)")
    run.add_argument("--workers", type=_positive, metavar="N",
                     help="worker threads of each process (default: queue.workers)")
    run.add_argument("--processes", type=_positive, metavar="P",
                     help="processes running workers: 1, this one; more, that many worker processes "
                          "(default: queue.processes)")
    run.add_argument("--worker-of", type=int, metavar="PID", help=argparse.SUPPRESS)  # hub/processes.py
    run.add_argument("--first-worker", type=int, default=0, help=argparse.SUPPRESS)  # hub/processes.py
    commands.add_parser("demo", help="play the whole underwriting conversation through a hub in a temporary folder")
    schemas = commands.add_parser("schemas", help="write the platform JSON Schemas and the XML schemas to DIR")
    schemas.add_argument("dir", type=Path)
    card = commands.add_parser("card", help="the signers' cards: status, or lift a PIN block")
    card_commands = card.add_subparsers(dest="card_command", required=True)
    card_commands.add_parser("status", help="each signer's status as JSON; reads the card without spending a PIN try")
    unblock = card_commands.add_parser(
        "unblock", help="lift the PIN block of a card (by certificate number) once its PIN is right in the config"
    )
    unblock.add_argument("--signer", help="the [signers] entry (default: every card and E-Port client signer)")
    unblock.add_argument("certificate_number", metavar="CERT_NO")
    parked = commands.add_parser("parked", help="list parked work: the message, the step, every attempt and error")
    parked.add_argument("--route", metavar="MESSAGE_TYPE", help="only messages of this type")
    parked.add_argument("--partner", help="only messages from or to this partner")
    parked.add_argument("--json", action="store_true", help="as JSON")
    replay = commands.add_parser("replay", help="put a message's unfinished work back to run now, attempts afresh")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", metavar="ID", help="the hub's id or the message's own id")
    which.add_argument("--all-parked", action="store_true", help="every parked message")
    replay.add_argument("--route", metavar="MESSAGE_TYPE", help="with --all-parked: only messages of this type")
    resend = commands.add_parser("resend", help="deliver a delivered message again: same message id, same bytes")
    resend.add_argument("id", metavar="ID", help="the hub's id or the message's own id")
    jobs = commands.add_parser("jobs", help="scheduled jobs: each one's schedule, next run, last run and result")
    jobs.add_argument("--json", action="store_true", help="as JSON")
    jobs_commands = jobs.add_subparsers(dest="jobs_command")
    run_job = jobs_commands.add_parser(
        "run", help="run a job now, once, under the scheduler's lock (by the leading hub if one runs)"
    )
    run_job.add_argument("name", metavar="NAME", help="a [jobs.NAME] entry of the config")
    run_job.add_argument("--json", action="store_true", help="the run as JSON")
    run_job.add_argument("--wait", type=float, default=3600.0, metavar="SECONDS",
                         help="how long to wait for the leading hub to run it (default 3600)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        if args.command == "schemas":
            return write_schemas(args.dir)
        if args.command == "demo":
            from hub.demo import run_demo

            return run_demo()
        if args.command == "card":
            config = load_config(args.config)
            if args.card_command == "unblock":
                return card_unblock(config, args.signer, args.certificate_number)
            return card_status(config)
        if args.command in ("parked", "replay", "resend"):
            return operate(load_config(args.config), args)
        if args.command == "jobs":
            config = load_config(args.config)
            if args.jobs_command == "run":
                return run_job(config, args.name, args.json, args.wait)
            return list_jobs(config, args.json)
        return run(args.config, getattr(args, "workers", None), getattr(args, "processes", None),
                   getattr(args, "worker_of", None), getattr(args, "first_worker", 0))
    except (ConfigError, SchemaLoadError) as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG


def _positive(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to 64")
    return int(text)


def run(config_path: Path | None, workers: int | None = None, processes: int | None = None,
        worker_of: int | None = None, first_worker: int = 0) -> int:
    """The hub, and its worker processes; or one of those, `worker_of` the hub process of that pid, which it
    does not outlive, its first worker `first_worker` of that hub's (hub/processes.py)."""
    from hub.app import Hub
    from hub.processes import WorkerProcesses, serve_as_worker_process

    config = load_config(config_path)
    # The queue's leases and row claims keep any number of workers apart, in threads and processes.
    overrides = {key: value for key, value in (("workers", workers), ("processes", processes)) if value is not None}
    config = config.model_copy(update={"queue": config.queue.model_copy(update=overrides)})
    log = logging.getLogger("hub")
    if worker_of is not None:  # its lines marked: several processes write to one stream
        logging.basicConfig(level=logging.getLogger().level, stream=sys.stderr, force=True,
                            format=f"%(asctime)s %(levelname)-7s [worker process {os.getpid()}] %(name)s: "
                                   "%(message)s")
    helpers = None
    if worker_of is None and config.queue.processes > 1:
        helpers = WorkerProcesses(config.queue.processes, config_path, config.queue.workers)
    hub = Hub(config, helpers, first_worker)
    # What the hub built to start (its schemas, models, mappers, config) lives as long as the process: out of the
    # collector's sight, a full collection no longer walks it. It did so about every 20 s under load, for 76-113 ms
    # in each process (measured at 100 messages/s), while every message in flight waited: a latency run's slowest.
    # Frozen, the same collection took under 2 ms.
    gc.freeze()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        hub.request_stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if worker_of is not None:
        serve_as_worker_process(hub, worker_of)
    else:
        hub.start()
        hub.wait()
    hub.stop()
    return 0


def operate(config: HubConfig, args: argparse.Namespace) -> int:
    """The operator commands, on the store: the hub may be running in another process or not at all."""
    from hub.errors import HubError
    from hub.operations import Operations, OperatorError
    from hub.store import Store

    if args.command == "replay" and args.route and not args.all_parked:
        raise ConfigError("replay --route goes with --all-parked")
    store = Store(config.store.url)
    try:
        store.create_schema()
        operations = Operations(config, store)
        if args.command == "parked":
            return print_parked(operations.parked(args.route, args.partner), args.json)
        if args.command == "resend":
            outcomes = operations.resend(args.id)
        elif args.all_parked:
            outcomes = operations.replay_all_parked(args.route)
        else:
            outcomes = operations.replay(args.id)
    except (OperatorError, HubError) as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    for outcome in outcomes:
        print(f"{outcome.message}: {outcome.said}")
    if not outcomes:  # only --all-parked finds nothing; an unknown id is an error above
        print("nothing is parked")
    return 0


def print_parked(parked: list[dict[str, Any]], as_json: bool) -> int:
    if as_json:
        print(json.dumps(parked, ensure_ascii=False, indent=2))
        return 0
    print(f"{len(parked)} parked")
    for item in parked:
        toward = "from" if item["direction"] == "in" else "to"
        print(f"\n{item['hub_id']}  {item['type'] or 'unread'} {item['message_id'] or ''}  {toward} {item['partner']}")
        print(f"  parked in {item['step']} after {item['attempts']} attempt(s) at {item['parked_at']}")
        print(f"  last error: {item['error']}")
        print(f"  attempts on {item['target']}:")
        for entry in item["history"]:
            what = f"attempt {entry['attempt']}" if "attempt" in entry else entry["event"]
            print(f"    {entry['at']}  {what}: {entry['error']}")
    return 0


def list_jobs(config: HubConfig, as_json: bool) -> int:
    from hub.scheduler.runs import overview
    from hub.store import Store

    store = Store(config.store.url)
    try:
        store.create_schema()
        with store.read() as conn:
            jobs = overview(config, conn, store.engine)
    finally:
        store.close()
    if as_json:
        print(json.dumps(jobs, ensure_ascii=False, indent=2))
        return 0
    for job in jobs:
        runs = "" if job["runs"] == job["job"] else f" (runs {job['runs']})"
        when = job["next_run"] if job["enabled"] else "disabled"
        print(f"{job['job']}{runs}: {job['schedule']}; next run {when or 'when a hub leads'}")
        last = job["last_run"]
        if last is None:
            print("  never run")
        else:
            print(f"  last run {last['started_at']} ({last['trigger']}, {last['seconds']} s): {last['state']}: "
                  f"{last['result'] or last['error']}")
        if job["running"]:
            print("  running now")
    return 0


def run_job(config: HubConfig, name: str, as_json: bool, wait: float) -> int:
    """Run a job now, once, under the scheduler's lock: here if no hub leads, else by the leading hub."""
    from hub.app import Hub
    from hub.leader import LeaderLock
    from hub.scheduler.runs import FAILED, OK, JobRuns, describe_run
    from hub.store import Store

    if name not in config.jobs:
        raise ConfigError(f"jobs run {name}: no [jobs.{name}] in the config (there are: {', '.join(config.jobs)})")
    lock = LeaderLock(config.store.url, "scheduler")
    if lock.acquire():
        try:
            hub = Hub(config)  # not started: the job has its store, signers and pipeline, and no hub leads
            try:
                run = hub.jobs.runs.get(hub.jobs.run(name, "operator"))
            finally:
                hub.stop()
        finally:
            lock.release()
    else:
        store = Store(config.store.url)
        try:
            runs = JobRuns(store)
            run_id = runs.request(name)
            print(f"{name}: the leading hub runs it (run {run_id})", file=sys.stderr)
            deadline = time.monotonic() + wait
            while (run := runs.get(run_id)).state not in (OK, FAILED):
                if time.monotonic() > deadline:
                    print(f"hub: run {run_id} of {name} is {run.state} after {wait:g} s; `jobs` shows its result "
                          "once it ends", file=sys.stderr)
                    return 1
                time.sleep(0.2)
        finally:
            store.close()
    if as_json:
        print(json.dumps({"job": name, **describe_run(run)}, ensure_ascii=False, indent=2))
    else:
        print(f"{name}: {run.state}: {run.result or run.error}")
    return 0 if run.state == OK else 1


def card_status(config: HubConfig) -> int:
    from hub.app import Signers

    signers = Signers(config)
    try:
        print(json.dumps(signers.status(), ensure_ascii=False, indent=2))
    finally:
        signers.close()
    return 0


def card_unblock(config: HubConfig, signer: str | None, certificate_number: str) -> int:
    from hub.config import DeviceSignerConfig
    from hub.signing import unblock

    devices = {name: s for name, s in config.signers.items() if isinstance(s, DeviceSignerConfig)}
    if signer is not None and signer not in devices:
        raise ConfigError(f"--signer {signer}: no card or E-Port client signer of that name under [signers]")
    number = certificate_number.strip().lower()  # certificate numbers are kept in lower-case hex
    lifted = [name for name, s in devices.items() if signer in (None, name) and unblock(s.state_dir, number)]
    if not lifted:
        print(f"card {number} is not blocked", file=sys.stderr)
        return 1
    print(f"card {number}: PIN block lifted ({', '.join(lifted)}); the next signature presents the configured PIN "
          "once")
    return 0


def write_schemas(target: Path) -> int:
    from hub.mappers.platform_json import platform_json_schemas

    platform = target / "platform"
    platform.mkdir(parents=True, exist_ok=True)
    for name, schema in platform_json_schemas().items():
        (platform / f"{name}.schema.json").write_text(json.dumps(schema, ensure_ascii=False, indent=2) + "\n")
    for xsd in SCHEMA_DIR.rglob("*.xsd"):
        dest = target / "xml" / xsd.relative_to(SCHEMA_DIR)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(xsd, dest)
    print(f"wrote {len(list(platform.iterdir()))} platform JSON Schemas to {platform} and the XML schemas to "
          f"{target / 'xml'}")
    return 0
