"""The same hub on PostgreSQL: the end-to-end stories of the SQLite suite replayed on a fresh PostgreSQL database.
Several hub processes sharing one store (one killed -9 mid-batch) and concurrent copies of one message run on
every backend in tests/test_contract.py, as do the duplicate stories."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from hub.app import Hub
from hub.config import DEFAULT_CONFIG, HubConfig, load_config
from tests import test_bad_input, test_families, test_underwriting_flow
from tests.conftest import Exchange, fresh_postgres_database, hub_environ, wait_for

FIXTURE = Path(__file__).parent.parent / "fixtures" / "underwriting" / "valid" / "insurer-pending-policy-new.xml"


@pytest.fixture
def hub_config(tmp_path: Path) -> Iterator[HubConfig]:
    """The conftest's hub, on PostgreSQL: the stories below run there as they run on SQLite in their own modules."""
    with fresh_postgres_database() as url:
        yield load_config(DEFAULT_CONFIG, environ=hub_environ(tmp_path, HUB_STORE__URL=url))


test_issued_ending_flows_both_ways = test_underwriting_flow.test_issued_ending_flows_both_ways
test_returned_ending_flows_both_ways = test_underwriting_flow.test_returned_ending_flows_both_ways
test_story_flows_through_the_hub = test_families.test_story_flows_through_the_hub
test_invalid_fixture_is_rejected_with_its_code_and_field = (
    test_bad_input.test_invalid_fixture_is_rejected_with_its_code_and_field
)


def test_a_running_hub_vacuums_its_work_table_as_its_steps_leave_dead_rows(tmp_path: Path, exchange: Exchange) -> None:
    """On a server whose autovacuum is off, as this machine's, nothing else would (autovacuum's own runs are
    counted apart, as last_autovacuum)."""
    with fresh_postgres_database() as url:
        hub = Hub(load_config(DEFAULT_CONFIG, environ=hub_environ(
            tmp_path, HUB_STORE__URL=url, HUB_STORE__VACUUM_ROWS="20")))
        hub.start()

        def work_vacuumed() -> bool:
            with hub.store.read() as conn:
                return bool(conn.execute(text(
                    "SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'work'")).scalar())

        try:
            for n in range(20):  # one accepted, then copies of it answered as duplicates: a step each
                exchange.drop("insurer", f"insurer-{n:02d}.xml", FIXTURE.read_bytes())
            exchange.wait_files("insurer", "out", 20, "Receipt_*")
            wait_for(work_vacuumed, timeout=15, what="the hub to vacuum its work table")
        finally:
            hub.stop()  # before its database is dropped
