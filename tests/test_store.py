"""The store's write transactions hold inserts and state changes back and write them together: what the
transaction does next must still see them, and a transaction that fails writes none of them."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from hub.store import Store


@pytest.fixture
def store(store_url: str) -> Store:
    store = Store(store_url)
    store.create_schema()
    return store


def _received(store: Store) -> str:
    with store.begin() as conn:
        return store.add_message(conn, direction="in", partner="insurer", state="received", size=3, raw=b"<x/>")


def test_held_state_changes_are_written_before_the_updates_and_reads_that_follow_them(store: Store) -> None:
    message = _received(store)
    with store.begin() as conn:
        store.set_state(conn, message, "accepted", "taken", message_id="MSG-1")
        assert store.get_message(conn, message).state == "accepted"
        # Not the transaction's first statement (on PostgreSQL that one writes what is held to send its lock).
        store.set_state(conn, message, "parked", "stuck", error_code="RETRIES_EXHAUSTED")
        assert store.advance(conn, message, "parked", "received", "replayed"), "the update saw the state change"
    with store.read() as conn:
        row = store.get_message(conn, message)
        history = [event.event for event in store.history(conn, message)]
    assert (row.state, row.message_id, row.error_code) == ("received", "MSG-1", "RETRIES_EXHAUSTED")
    assert history == ["received", "accepted", "parked", "received"]


def test_one_message_changed_again_and_again_in_a_transaction_ends_in_its_last_state(store: Store) -> None:
    """Held changes are grouped by the columns they set; a message's later change must still land last."""
    message = _received(store)
    with store.begin() as conn:
        store.set_state(conn, message, "accepted", message_id="MSG-3")
        store.set_state(conn, message, "parked", error_code="RETRIES_EXHAUSTED")
        store.set_state(conn, message, "rejected", message_id="MSG-3")
    with store.read() as conn:
        row = store.get_message(conn, message)
    assert (row.state, row.error_code) == ("rejected", "RETRIES_EXHAUSTED")


def test_a_failed_transaction_writes_none_of_its_held_state_changes(store: Store) -> None:
    message = _received(store)
    with pytest.raises(RuntimeError), store.begin() as conn:
        store.set_state(conn, message, "accepted", message_id="MSG-2")
        raise RuntimeError("the decision failed")
    with store.read() as conn:
        row = store.get_message(conn, message)
        assert [event.event for event in store.history(conn, message)] == ["received"]
    assert (row.state, row.message_id) == ("received", None)


def test_a_store_made_by_an_earlier_version_loses_its_index_on_state_so_state_changes_stay_in_place(
    store: Store,
) -> None:
    """An index on the state made every state change write each index again (PostgreSQL then cannot update the
    row in place); create_schema drops the one earlier versions made and leaves room in new pages for updates."""
    with store.engine.begin() as conn:
        conn.execute(text("CREATE INDEX ix_messages_state ON messages (direction, state)"))
    store.create_schema()
    indexes = {index["name"] for index in inspect(store.engine).get_indexes("messages")}
    assert "ix_messages_state" not in indexes and "ix_messages_error" in indexes
    if not store.is_sqlite:
        with store.read() as conn:
            options = conn.execute(text("SELECT reloptions FROM pg_class WHERE oid = 'messages'::regclass")).scalar()
        assert options == ["fillfactor=70"]
