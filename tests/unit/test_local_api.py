"""The local Context API without HTTP: its body validation and its thread store."""

from __future__ import annotations

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
    store.upsert_thread({"id": "x", "messages": [{"role": "user", "message": "hi"}]})
    with pytest.raises(ValidationError, match="has only 1 message"):
        store.rate("x", [{}, {"rating": 1}])
