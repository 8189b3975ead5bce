"""The local Context API without HTTP: its body validation and its thread store."""

from __future__ import annotations

import os
import sqlite3

import pytest

from otel_context.local_api import ThreadStore
from otel_context.local_api.validation import ValidationError, parse_conversation_body


def test_tool_and_event_steps_need_no_role():
    conv = parse_conversation_body(
        {"conversation": {"messages": [{"type": "tool", "name": "search"}, {"type": "event", "message": "retry"}]}}
    )
    assert [m["type"] for m in conv["messages"]] == ["tool", "event"]
    with pytest.raises(ValidationError, match=r"^body: missing 'conversation'$"):
        parse_conversation_body({"thread": {}})


def test_store_rate_on_unknown_thread_is_false():
    store = ThreadStore()
    assert store.rate("missing", [{"rating": 1}]) is False
    store.post_thread({"id": "x", "messages": [{"role": "user", "message": "hi"}]})
    with pytest.raises(ValidationError, match="has only 1 message"):
        store.rate("x", [{}, {"rating": 1}])


def test_custom_events_are_valid_messages():
    event = {"type": "event", "name": "Checkout", "metadata": {"basket": "3"}, "event_timestamp": "2026-01-01T12:00Z"}
    [parsed] = parse_conversation_body({"conversation": {"messages": [event]}})["messages"]
    assert parsed == {**event, "event_timestamp": "2026-01-01T12:00:00.000Z"}
    with pytest.raises(ValidationError, match=r"^conversation.messages\[0\].metadata.basket: metadata values must"):
        parse_conversation_body({"conversation": {"messages": [{**event, "metadata": {"basket": 3}}]}})


def said(thread: dict) -> list[str]:
    return [m["message"] for m in thread["messages"]]


def test_an_append_writes_only_the_new_rows():
    """A 10,000-message thread is not rewritten by an append: the thread's counters, the new message, the POST."""
    store = ThreadStore()
    store.post_thread({"id": "long", "messages": [{"role": "user", "message": str(i)} for i in range(10_000)]})
    before = store._db.total_changes
    store.post_thread({"id": "long", "messages": [{"role": "assistant", "message": "last"}]})
    assert store._db.total_changes - before == 3
    thread = store.get("long")
    assert len(thread["messages"]) == 10_001 and said(thread)[-2:] == ["9999", "last"]
    assert [(p["number"], p["first_position"], p["messages"]) for p in thread["posts"]] == [
        (1, 0, 10_000),
        (2, 10_000, 1),
    ]


def test_a_failed_rating_changes_nothing():
    store = ThreadStore()
    store.post_thread({"id": "x", "messages": [{"role": "user", "message": "a"}]})
    store.post_thread({"id": "x", "messages": [{"role": "assistant", "message": "b"}]})
    with pytest.raises(ValidationError):
        store.rate("x", [{"rating": 1}, {}, {}])
    assert store.rate("x", [{}, {"rating": -1}]) is True
    assert [m.get("rating") for m in store.get("x")["messages"]] == [None, -1]


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def history(*texts: str) -> dict:
    return {"messages": [{"role": ("user", "assistant")[i % 2], "message": t} for i, t in enumerate(texts)]}


def test_upsert_matches_within_six_hours_only():
    clock = Clock()
    store = ThreadStore(clock=clock)
    first = store.upsert_conversation(history("a", "b"))
    clock.now += 6 * 3600 - 1
    assert store.upsert_conversation(history("a", "b", "c")) == first  # 6 h after the last log, not the first
    clock.now += 6 * 3600 + 1
    late = store.upsert_conversation(history("a", "b", "c", "d"))
    assert late != first
    assert (said(store.get(first)), said(store.get(late))) == (["a", "b", "c"], ["a", "b", "c", "d"])


def test_upsert_prefers_the_longest_shared_history_then_the_latest():
    clock = Clock()
    store = ThreadStore(clock=clock)
    short = store.upsert_conversation(history("a", "b"))
    clock.now += 1
    store.post_thread({"id": "thread", **history("a", "b", "c")})  # thread-endpoint threads are never matched
    assert store.upsert_conversation(history("a", "b", "x"), tenant_id="t") != short  # another tenant
    clock.now += 1
    longer = store.upsert_conversation({**history("a", "b", "c"), "metadata": {"k": "v"}})
    clock.now += 1
    other = store.upsert_conversation({**history("a", "b", "c", "e"), "metadata": {"k": "v"}})
    assert other == longer  # longer's stored history is a prefix of the request
    assert said(store.get(longer)) == ["a", "b", "c", "e"]
    # no metadata: only `short` qualifies; a history that leaves the stored one after 2 messages amends it too
    assert store.upsert_conversation(history("a", "b", "y")) == short
    assert said(store.get(short)) == ["a", "b", "y"]
    assert said(store.get("thread")) == ["a", "b", "c"]


def test_legacy_conversation_ignores_an_id():
    store = ThreadStore()
    conv = {"id": "mine", **history("a")}
    assert store.add_conversation(conv) != "mine" and store.add_conversation(conv) != store.add_conversation(conv)
    assert store.get("mine") is None and store.count() == 3


def test_listing_returns_each_thread_with_its_messages():
    store = ThreadStore()
    for i in range(600):  # more threads than one `IN (...)` chunk
        store.post_thread({"id": f"t-{i}", **history(f"q{i}")})
        store.post_thread({"id": f"t-{i}", **history(f"r{i}")})
    threads, total = store.list(per_page=1000)
    assert total == 600 and len(threads) == 600
    assert all(said(t) == [f"q{t['id'][2:]}", f"r{t['id'][2:]}"] for t in threads)
    assert store.message_count() == 1200


def test_a_database_of_the_replacing_store_is_upgraded(tmp_path):
    path = tmp_path / "threads.db"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE threads (id TEXT PRIMARY KEY, tenant_id TEXT, metadata TEXT NOT NULL, messages TEXT NOT NULL,
            feedback TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL, writes INTEGER NOT NULL DEFAULT 1);
        CREATE INDEX threads_created_at ON threads (created_at);
        INSERT INTO threads VALUES ('old', 'tenant', '{"user_id": "u-1"}',
            '[{"role": "user", "message": "hi"}, {"role": "assistant", "message": "yo", "rating": 1}]',
            NULL, 1.0, 2.0, 3);
        """
    )
    old.close()
    os.chmod(path, 0o600)

    store = ThreadStore(str(path))
    thread = store.get("old")
    assert (said(thread), thread["messages"][1]["rating"], thread["metadata"]) == (["hi", "yo"], 1, {"user_id": "u-1"})
    assert (store.write_count("old"), thread["tenant_id"]) == (3, "tenant")
    store.post_thread({"id": "old", "metadata": {"user_id": "u-1"}, **history("again")})
    assert said(store.get("old")) == ["hi", "yo", "again"] and store.write_count("old") == 4
    assert store.list(user_id="u-1")[1] == 1
    store.close()
    assert said(ThreadStore(str(path)).get("old")) == ["hi", "yo", "again"]  # upgraded once, opened again as is
