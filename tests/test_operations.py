"""Operator commands on a real hub: a partner whose out/ folder cannot be written parks its deliveries;
`parked` shows them with every attempt, `replay` delivers them once the partner is back, `resend` delivers a
delivered message again. The commands run through the CLI, against the hub in this process or in another."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from hub.app import Hub
from hub.cli import main
from hub.config import DEFAULT_CONFIG, HubConfig, load_config
from hub.store import work
from tests.conftest import REPO, UNDERWRITING, Exchange, wait_for
from tests.test_hub_process import HubProcess, drop_pending_policies

PENDING = UNDERWRITING / "valid" / "insurer-pending-policy-new.xml"
PENDING_ID = "6F1C2A4E-3B7D-4E21-9A55-0C8E7D1B2A01"


def take_down(exchange: Exchange, partner: str) -> None:
    """The partner's out/ folder replaced by a file: every delivery to it fails."""
    out = exchange.folder(partner, "out")
    shutil.rmtree(out)
    out.write_text("not a folder")


def bring_back(exchange: Exchange, partner: str) -> None:
    out = exchange.folder(partner, "out")
    out.unlink()
    out.mkdir()


@pytest.fixture
def operator(hub_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """`python run_hub.py ARGS` in this process, on the test hub's store and folders: (exit code, stdout);
    stderr is kept in run.err."""
    for key, value in hub_env.items():
        monkeypatch.setenv(key, value)

    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        run.err = captured.err
        return code, captured.out

    return run


def parked(operator: Any, *args: str) -> list[dict[str, Any]]:
    code, out = operator("parked", "--json", *args)
    assert code == 0
    return list(json.loads(out))


def test_a_parked_delivery_is_listed_with_every_attempt_then_replayed_once_and_resent(
    hub: Hub, exchange: Exchange, operator: Any
) -> None:
    take_down(exchange, "platform")
    exchange.drop_fixture(PENDING)
    found = wait_for(lambda: parked(operator), what="the delivery to be parked")

    [item] = found
    assert (item["type"], item["message_id"], item["partner"], item["direction"], item["step"], item["attempts"]) \
        == ("PendingPolicy", PENDING_ID, "platform", "out", "deliver", 3)
    assert item["error"].startswith("RETRIES_EXHAUSTED: 3 attempts failed; last: DELIVERY_FAILED")
    target = f"platform/out/PendingPolicy_{PENDING_ID}.json"
    assert item["target"] == target
    attempts = [h for h in item["history"] if "attempt" in h]
    assert [(a["attempt"], a["target"]) for a in attempts] == [(1, target), (2, target)]
    assert all(a["error"].startswith("DELIVERY_FAILED") and a["at"] for a in attempts)
    assert item["history"][-1]["event"] == "parked" and item["parked_at"]
    assert parked(operator, "--route", "PolicyIssued") == []
    assert [p["hub_id"] for p in parked(operator, "--partner", "platform")] == [item["hub_id"]]
    code, text = operator("parked")
    assert code == 0 and "1 parked" in text
    assert f"attempts on {target}:" in text and "attempt 2: DELIVERY_FAILED" in text

    shown = hub.status_reader.message(item["hub_id"])
    assert shown is not None
    assert [e["event"] for e in shown["messages"][0]["history"]].count("retry") == 2

    bring_back(exchange, "platform")
    code, text = operator("replay", PENDING_ID)  # the message id names the inbound message and the onward one
    assert code == 0
    assert "already accepted: nothing to do" in text and "replayed: parked deliver runs now" in text
    [delivered] = exchange.wait_files("platform", "out", 1, "PendingPolicy_*")
    wait_for(lambda: hub.status_reader.message(item["hub_id"])["messages"][0]["state"] == "delivered",
             what="the message delivered")
    assert parked(operator) == []

    code, text = operator("replay", item["hub_id"])
    assert code == 0 and "already delivered: nothing to do; `resend` delivers it again" in text
    time.sleep(0.5)
    assert exchange.files("platform", "out", "PendingPolicy_*") == [delivered]

    sent = delivered.read_bytes()
    delivered.unlink()  # the platform took it
    code, text = operator("resend", PENDING_ID)
    assert (code, text.strip()) == (0, f"{item['hub_id']}: resent to {target}")
    assert delivered.read_bytes() == sent and json.loads(sent)["messageId"] == PENDING_ID
    history = hub.status_reader.message(item["hub_id"])["messages"][0]["history"]  # type: ignore[index]
    assert [h["detail"] for h in history if h["event"] in ("replayed", "resent")] == [
        "replayed by operator: parked deliver runs now",
        f"resent by operator: {target}, {len(sent)} bytes",
    ]


def test_resend_refuses_what_was_not_delivered_and_unknown_ids(hub: Hub, exchange: Exchange, operator: Any) -> None:
    take_down(exchange, "platform")
    exchange.drop_fixture(PENDING)
    [item] = wait_for(lambda: parked(operator), what="the delivery to be parked")
    assert operator("resend", item["hub_id"])[0] == 1
    assert "is parked, not delivered yet: `replay` it instead" in operator.err
    assert operator("replay", "NO-SUCH-MESSAGE")[0] == 1
    assert "no message NO-SUCH-MESSAGE in the store" in operator.err


def test_a_parked_settle_step_is_replayed_and_the_input_archived(hub: Hub, exchange: Exchange, operator: Any) -> None:
    archive = exchange.folder("insurer", "archive")
    archive.rmdir()
    archive.write_text("not a folder")  # the input cannot be filed away: settling fails
    exchange.drop_fixture(PENDING)
    [item] = wait_for(lambda: parked(operator, "--partner", "insurer"), what="the settle step to be parked")
    assert (item["type"], item["direction"], item["step"], item["attempts"]) == ("PendingPolicy", "in", "settle", 3)
    assert item["history"][-1]["event"] == "settle-parked"
    exchange.wait_files("platform", "out", 1, "PendingPolicy_*")  # the message itself went on

    archive.unlink()
    archive.mkdir()
    code, text = operator("replay", item["hub_id"])
    assert (code, text.strip()) == (0, f"{item['hub_id']}: replayed: parked settle runs now")
    exchange.wait_files("insurer", "archive", 1)
    assert not exchange.files("insurer", "intake") and parked(operator) == []


@pytest.fixture
def slow_route_hub(tmp_path: Path, hub_env: dict[str, str]) -> Iterator[Hub]:
    """PendingPolicy's route retries once after 0.1 s; [retry] (0.2 s, 0.5 s) for everything else."""
    text = DEFAULT_CONFIG.read_text().replace(
        'message = "PendingPolicy"\nfrom = "insurer"\nto = "platform"\n',
        'message = "PendingPolicy"\nfrom = "insurer"\nto = "platform"\nretry = { delays_seconds = [0.1] }\n', 1,
    )
    path = tmp_path / "hub.toml"
    path.write_text(text)
    config = load_config(path, environ=hub_env)
    running = Hub(config)
    running.start()
    yield running
    running.stop()


def test_a_route_retry_policy_overrides_the_default(
    slow_route_hub: Hub, exchange: Exchange, operator: Any, hub_config: HubConfig
) -> None:
    route = next(r for r in slow_route_hub.config.routes if r.message == "PendingPolicy")
    assert slow_route_hub.config.route_retry(route).delays_seconds == [0.1]
    assert slow_route_hub.config.route_retry(route).jitter == hub_config.retry.jitter  # left out: [retry]'s
    take_down(exchange, "platform")
    take_down(exchange, "insurer")  # the receipt to the insurer has no route: the default policy
    exchange.drop_fixture(PENDING)
    found = wait_for(lambda: len(items := parked(operator)) == 2 and items, what="both deliveries parked")
    assert {(p["type"], p["attempts"]) for p in found} == {("PendingPolicy", 2), ("Receipt", 3)}

    bring_back(exchange, "platform")
    bring_back(exchange, "insurer")
    code, text = operator("replay", "--all-parked", "--route", "PendingPolicy")
    assert code == 0 and text.count("replayed:") == 1
    exchange.wait_files("platform", "out", 1, "PendingPolicy_*")
    assert [p["type"] for p in parked(operator)] == ["Receipt"]
    code, text = operator("replay", "--all-parked")
    assert code == 0 and text.count("replayed:") == 1
    exchange.wait_files("insurer", "out", 1, "Receipt_*")
    assert operator("replay", "--all-parked") == (0, "nothing is parked\n")


@pytest.mark.slow
def test_replay_while_the_hub_runs_in_another_process_and_while_it_is_stopped(tmp_path: Path) -> None:
    exchange = Exchange(tmp_path / "exchange")
    process = HubProcess(tmp_path)

    def operate(*args: str) -> str:
        done = subprocess.run([sys.executable, str(REPO / "run_hub.py"), *args], cwd=tmp_path, env=process.env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def parked_now() -> list[dict[str, Any]]:
        return [p for p in json.loads(operate("parked", "--json", "--route", "PendingPolicy"))]

    process.start()
    try:
        take_down(exchange, "platform")
        ids = drop_pending_policies(exchange, 2)
        wait_for(lambda: len(parked_now()) == 2, 30, "both deliveries parked")
        bring_back(exchange, "platform")

        assert "replayed: parked deliver runs now" in operate("replay", ids[0])  # while the hub runs
        exchange.wait_files("platform", "out", 1, "PendingPolicy_*")
        process.stop()

        assert "replayed: parked deliver runs now" in operate("replay", "--all-parked")  # while it is stopped
        assert parked_now() == []
        time.sleep(0.5)
        assert len(exchange.files("platform", "out", "PendingPolicy_*")) == 1  # waits in the store

        process.start()
        delivered = exchange.wait_files("platform", "out", 2, "PendingPolicy_*", timeout=20)
        assert "already delivered: nothing to do" in operate("replay", ids[1])
        time.sleep(1)
    finally:
        process.stop()
    assert sorted(json.loads(p.read_bytes())["messageId"] for p in delivered) == sorted(ids)
    assert len(exchange.files("platform", "out", "PendingPolicy_*")) == 2


def test_a_step_its_workers_keep_dying_on_is_parked_as_a_poison_message_then_replayed(
    hub_config: HubConfig, exchange: Exchange, operator: Any
) -> None:
    """A step taken again after each worker that took it died (its lease ran out) would kill worker after
    worker: once it has been taken as often as the retry policy and queue.delivery_limit allow, the next worker
    parks it. The deaths are counted, not staged: the step's work row already holds that many claims."""
    hub = Hub(hub_config)
    try:
        exchange.drop_fixture(PENDING)
        hub.pipeline.take_in(hub.channels["insurer"].poll())
        with hub.store.begin() as conn:
            conn.execute(update(work).values(attempts=hub.pipeline.claims_allowed))
        hub.start()
        [item] = wait_for(lambda: parked(operator), what="the poison message parked")
        assert item["step"] == "process"
        assert item["error"].startswith(f"WORKER_LOST: process was taken {hub.pipeline.claims_allowed + 1} times")
        assert not exchange.files("platform", "out"), "parked before it was handled"

        code, text = operator("replay", item["hub_id"])
        assert code == 0 and "replayed: parked process runs now" in text
        assert len(exchange.wait_files("platform", "out", 1)) == 1
        assert parked(operator) == []
    finally:
        hub.stop()
