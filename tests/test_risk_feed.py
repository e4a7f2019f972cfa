"""Risk-feed sync (风险资讯): the insurer's articles read from its feed reach the platform exactly once each, in
order, across a hub killed mid-sync; the cursor lives in the store and passes only what was delivered."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from hub.app import Hub, build_formats
from hub.config import DEFAULT_CONFIG, HubConfig, load_config
from hub.mappers import MessageFormat
from hub.models.risk import RiskArticle
from hub.operations import Operations
from hub.scheduler.risk_feed import cursor_name, sync_risk_feed
from hub.schemas import HUB_SCHEMAS, SchemaRegistry
from hub.store import Store, events, messages
from tests.conftest import FIXTURES, REPO, Exchange, hub_environ, wait_for

RISK = FIXTURES / "risk"
ACTIONS = ("new", "update", "withdraw")


def insurer_xml() -> MessageFormat:
    return build_formats(load_config(DEFAULT_CONFIG, environ={}), SchemaRegistry(HUB_SCHEMAS))["insurer"]


def article_story(fmt: MessageFormat, articles: int) -> list[RiskArticle]:
    """Each article published, updated, then withdrawn, the articles interleaved as a feed would have them."""
    made = {action: fmt.decode((RISK / "valid" / f"insurer-risk-article-{action}.xml").read_bytes())
            for action in ACTIONS}
    story = []
    for action in ACTIONS:
        for n in range(articles):
            story.append(made[action].model_copy(update={
                "message_id": str(uuid.uuid4()).upper(), "article_id": f"RISK-2026-{2000 + n}",
            }))
    return story


def publish(folder: Path, fmt: MessageFormat, entries: list[tuple[int, bytes, str]]) -> None:
    """The insurer's side: each entry written as POSITION__NAME, atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    for position, payload, name in entries:
        tmp = folder / f"{position:08d}__{name}.tmp"
        tmp.write_bytes(payload)
        os.replace(tmp, tmp.with_suffix(""))


def publish_story(folder: Path, fmt: MessageFormat, story: list[RiskArticle]) -> None:
    publish(folder, fmt, [(n, fmt.encode(m), f"RiskArticle_{m.message_id}.xml") for n, m in enumerate(story, 1)])


def cursor(store: Store) -> int:
    with store.read() as conn:
        return int(store.cursor(conn, cursor_name("insurer")) or 0)


def forwarded(store: Store) -> dict[str, list[Any]]:
    """The RiskArticles the hub stored for the platform, by message id, each with its delivery times."""
    with store.read() as conn:
        rows = conn.execute(
            select(messages.c.id, messages.c.message_id, messages.c.state).where(
                messages.c.direction == "out", messages.c.partner == "platform",
                messages.c.message_type == "RiskArticle")
        ).all()
        delivered = defaultdict(list)
        for row in conn.execute(select(events.c.message, events.c.at).where(events.c.event == "delivered")):
            delivered[row.message].append(row.at)
    found = defaultdict(list)
    for row in rows:
        found[row.message_id].append({"state": row.state, "delivered": delivered[row.id]})
    return found


def assert_each_once_in_order(store: Store, exchange: Exchange, story: list[RiskArticle]) -> None:
    found = forwarded(store)
    assert set(found) == {m.message_id for m in story}
    for m in story:
        (only,) = found[m.message_id]  # one message stored for the platform, delivered once
        assert len(only["delivered"]) == 1, (m.article_id, m.action, only)
    on_disk = {p.name for p in exchange.files("platform", "out", "RiskArticle_*")}
    assert on_disk == {f"RiskArticle_{m.message_id}.json" for m in story}
    by_article = defaultdict(list)
    for m in story:
        by_article[m.article_id].append((found[m.message_id][0]["delivered"][0], m.action.value))
    for article, deliveries in by_article.items():
        assert [action for _, action in sorted(deliveries)] == list(ACTIONS), article
    receipts = exchange.receipts("insurer")
    assert sorted(r["refMessageId"] for r in receipts) == sorted(m.message_id for m in story)
    assert {r["returnStatus"] for r in receipts} == {120}, "no entry was refused, none taken twice"


def sync_until(hub: Hub, done: Any, timeout: float = 30.0, what: str = "the feed synced") -> list[str]:
    said: list[str] = []

    def run() -> bool:
        said.append(sync_risk_feed(hub, datetime.now(UTC)))
        return bool(done())

    wait_for(run, timeout, what)
    return said


def test_new_updated_and_withdrawn_articles_reach_the_platform_once_each_in_order(
    backend_hub: Hub, exchange: Exchange
) -> None:
    hub = backend_hub
    fmt = hub.pipeline.formats["insurer"]
    story = article_story(fmt, 3)
    publish_story(exchange.folder("insurer", "feed"), fmt, story)
    store = hub.store

    said = sync_until(hub, lambda: cursor(store) == len(story))
    assert any("held behind an earlier entry of their article" in s and " 0 held" not in s for s in said), (
        "an update must wait for its article's delivery")
    assert_each_once_in_order(store, exchange, story)

    again = sync_risk_feed(hub, datetime.now(UTC))
    assert "cursor 9 -> 9, 0 entries read, 0 taken in" in again
    assert sum(len(v) for v in forwarded(store).values()) == len(story)


def test_the_cursor_waits_for_delivery_and_a_later_run_catches_up(
    hub: Hub, hub_config: HubConfig, exchange: Exchange
) -> None:
    fmt = hub.pipeline.formats["insurer"]
    story = article_story(fmt, 2)
    publish_story(exchange.folder("insurer", "feed"), fmt, story)
    store = hub.store
    outbox = exchange.folder("platform", "out")
    shutil.rmtree(outbox)
    outbox.write_text("the platform's folder is gone")  # every delivery to the platform fails, then parks

    wait_for(lambda: "2 parked" in sync_risk_feed(hub, datetime.now(UTC)), 30, "both new articles parked")
    assert cursor(store) == 0
    assert not any(r["delivered"] for v in forwarded(store).values() for r in v)

    outbox.unlink()
    outbox.mkdir()
    assert [o.changed for o in Operations(hub_config, hub.store).replay_all_parked()] == [True, True]
    sync_until(hub, lambda: cursor(store) == len(story))
    assert_each_once_in_order(store, exchange, story)


def test_an_unreadable_entry_is_refused_to_the_insurer_and_passed(
    hub: Hub, hub_config: HubConfig, exchange: Exchange
) -> None:
    fmt = hub.pipeline.formats["insurer"]
    story = article_story(fmt, 1)
    bad = (RISK / "invalid" / "insurer-risk-article-new-without-body.xml").read_bytes()
    feed = exchange.folder("insurer", "feed")
    publish(feed, fmt, [(1, fmt.encode(story[0]), "a.xml"), (2, bad, "bad.xml"),
                        (3, fmt.encode(story[1]), "b.xml"), (4, fmt.encode(story[2]), "c.xml")])

    sync_until(hub, lambda: cursor(hub.store) == 4)
    refused = exchange.receipt_for("insurer", "BADBAD00-1C2D-4E8F-A6B1-000000000002")
    assert refused["returnStatus"] == 100 and refused["errors"][0]["code"] == "FIELD_INVALID"
    assert set(forwarded(hub.store)) == {m.message_id for m in story}


# The hub as its own process, syncing the feed in a loop the way the scheduler will run the job.
SYNC_LOOP = """
import time
from datetime import UTC, datetime
from hub.app import Hub
from hub.config import load_config
from hub.scheduler.risk_feed import sync_risk_feed

hub = Hub(load_config())
hub.start()
while True:
    print(sync_risk_feed(hub, datetime.now(UTC), limit=4), flush=True)
    time.sleep(0.05)
"""


def test_killed_mid_sync_every_article_reaches_the_platform_exactly_once(tmp_path: Path, store_url: str) -> None:
    env = {**os.environ, **hub_environ(tmp_path, HUB_STORE__URL=store_url), "PYTHONPATH": str(REPO)}
    store = Store(store_url)
    store.create_schema()  # the test reads the store while the hub processes come and go
    exchange = Exchange(tmp_path / "exchange")
    fmt = insurer_xml()
    story = article_story(fmt, 15)
    publish_story(exchange.folder("insurer", "feed"), fmt, story)

    def start(log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            return subprocess.Popen([sys.executable, "-c", SYNC_LOOP], cwd=tmp_path, env=env, stdout=out,
                                    stderr=out)

    first = start(tmp_path / "first.log")
    try:
        wait_for(lambda: len(exchange.files("platform", "out", "RiskArticle_*")) >= 6, 60, "6 articles delivered")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    at_kill = cursor(store)
    delivered_at_kill = sum(1 for v in forwarded(store).values() if v[0]["delivered"])
    assert 0 < at_kill < len(story) and delivered_at_kill < len(story), "the kill must land mid-way"

    second = start(tmp_path / "second.log")
    try:
        wait_for(lambda: cursor(store) == len(story), 90, "the whole feed delivered after the restart")
    finally:
        second.terminate()
        second.wait(timeout=20)
    assert_each_once_in_order(store, exchange, story)
    store.close()
    # The restarted hub went on from the cursor the store kept, not from the start of the feed.
    restarted = (tmp_path / "second.log").read_text().splitlines()
    assert restarted[0].startswith(f"risk feed from insurer: cursor {at_kill} -> "), restarted[:3]
