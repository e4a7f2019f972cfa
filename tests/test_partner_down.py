"""A partner down, then back (issue 5): its messages wait on the retry policy's tiers and arrive in the order of
their retry schedule, none parked; a partner down past the last tier gets its messages parked, shown in status,
and `replay --all-parked` delivers them, each once.

Time is scaled down: the default tiers (1 s, 5 s, 30 s, 2 min, 10 min) divided by 60 for the first test (so
"down for 3 minutes" is down for 3 s) and by 100 for the second; the default jitter (±20 %) stays.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hub.app import Hub
from hub.config import DEFAULT_CONFIG, load_config
from tests.conftest import Exchange, hub_environ, wait_for
from tests.test_hub_process import drop_pending_policies
from tests.test_operations import bring_back, operator, parked, take_down  # noqa: F401 (a fixture)

DEFAULT_TIERS = (1, 5, 30, 120, 600)
_APART = 0.2  # seconds between two retries' due times for their order to be certain
_NEXT = re.compile(r"next in (?P<delay>[\d.]+) s$")


def _tiered_hub(tmp_path: Path, scale: float) -> Hub:
    tiers = ", ".join(f"{t / scale:.4f}" for t in DEFAULT_TIERS)
    hub = Hub(load_config(DEFAULT_CONFIG, environ=hub_environ(tmp_path, HUB_RETRY__DELAYS_SECONDS=f"[{tiers}]")))
    hub.start()
    return hub


@pytest.fixture
def hub_60x(tmp_path: Path) -> Any:
    hub = _tiered_hub(tmp_path, 60)
    yield hub
    hub.stop()


@pytest.fixture
def hub_100x(tmp_path: Path) -> Any:
    hub = _tiered_hub(tmp_path, 100)
    yield hub
    hub.stop()


def _forwarded(hub: Hub, message_id: str) -> dict[str, Any]:
    found = hub.status_reader.message(message_id)
    assert found is not None
    [out] = [m for m in found["messages"] if m["direction"] == "out" and m["type"] == "PendingPolicy"]
    return dict(out)


def test_a_partner_down_3_minutes_gets_its_messages_in_retry_order_none_parked(
    hub_60x: Hub, exchange: Exchange
) -> None:
    take_down(exchange, "platform")
    down_at = time.time()
    # One every 0.2 s while the platform is down. Those sent in its first half second have their 2-minute-tier
    # attempt due about when it returns (jitter ±20 %): the ones due before go to the 10-minute tier and arrive
    # last. With one message every 0.4 s, a loaded machine once pushed every such attempt past the return, and
    # the schedule's order was the order sent.
    ids = drop_pending_policies(exchange, 11, every=0.2)
    wait_for(lambda: time.time() - down_at >= 3.0, what="3 scaled minutes")
    bring_back(exchange, "platform")

    out = exchange.folder("platform", "out")
    wait_for(lambda: len(list(out.glob("PendingPolicy_*"))) == len(ids), timeout=40, what="every message delivered")
    arrived = {json.loads(p.read_bytes())["messageId"]: p.stat().st_mtime for p in out.glob("PendingPolicy_*")}
    assert sorted(arrived) == sorted(ids), "each delivered once"

    scheduled = {}
    for message_id in ids:
        history = _forwarded(hub_60x, message_id)["history"]
        retries = [h for h in history if h["event"] == "retry"]
        assert retries, f"{message_id} failed at least once while the platform was down"
        last = retries[-1]
        due_in = _NEXT.search(last["detail"])
        assert due_in is not None, last
        scheduled[message_id] = datetime.fromisoformat(last["at"]).timestamp() + float(due_in["delay"])
        assert arrived[message_id] >= scheduled[message_id] - 0.05, "no delivery before its retry is due"
    # Two workers may finish two retries due within a few ms in either order: compare those due apart.
    for a in ids:
        for b in ids:
            if scheduled[a] + _APART < scheduled[b]:
                assert arrived[a] < arrived[b], (f"{a} was due {scheduled[b] - scheduled[a]:.2f} s before {b} but "
                                                 f"arrived {arrived[a] - arrived[b]:.2f} s after it")
    assert sorted(ids, key=arrived.__getitem__) != ids, "the retry schedule, not the order sent, sets the order"
    status = hub_60x.status_reader.status()
    assert status["parked"] == [] and status["queue"]["parked"] == 0


def test_a_partner_down_past_the_last_tier_gets_its_messages_parked_then_replayed(
    hub_100x: Hub, exchange: Exchange, operator: Any  # noqa: F811 (the fixture imported above)
) -> None:
    take_down(exchange, "platform")
    ids = drop_pending_policies(exchange, 3)
    found = wait_for(lambda: len(items := parked(operator)) == 3 and items, timeout=30, what="3 deliveries parked")
    assert {(p["type"], p["step"], p["attempts"]) for p in found} == {("PendingPolicy", "deliver", 6)}
    assert all(p["error"].startswith("RETRIES_EXHAUSTED: 6 attempts failed") for p in found)
    status = hub_100x.status_reader.status()
    assert status["queue"]["parked"] == 3 and len(status["parked"]) == 3
    assert status["messages"]["by_state"]["out"]["parked"] == 3
    assert sorted(p["message_id"] for p in found) == sorted(ids)

    bring_back(exchange, "platform")
    code, text = operator("replay", "--all-parked")
    assert code == 0 and text.count("replayed: parked deliver runs now") == 3
    delivered = exchange.wait_files("platform", "out", 3, "PendingPolicy_*")
    assert sorted(json.loads(p.read_bytes())["messageId"] for p in delivered) == sorted(ids)
    wait_for(lambda: all(_forwarded(hub_100x, i)["state"] == "delivered" for i in ids), what="all delivered")
    assert parked(operator) == [] and hub_100x.status_reader.status()["queue"]["parked"] == 0
