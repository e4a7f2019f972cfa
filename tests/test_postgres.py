"""The same hub on PostgreSQL: the end-to-end stories of the SQLite suite replayed on a fresh PostgreSQL database.
Several hub processes sharing one store (one killed -9 mid-batch) and concurrent copies of one message run on
every backend in tests/test_contract.py, as do the duplicate stories."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.config import DEFAULT_CONFIG, HubConfig, load_config
from tests import test_bad_input, test_families, test_underwriting_flow
from tests.conftest import fresh_postgres_database, hub_environ


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
