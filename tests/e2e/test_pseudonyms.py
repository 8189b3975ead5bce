"""Keyed pseudonyms keep users and sessions joined in Context while the raw values never leave."""

from __future__ import annotations

import hashlib
import hmac
import json

from ..support.threads import read_threads
from ..support.waiting import wait_for
from .test_conversations import chain

KEY = "a-secret-from-the-environment"
EMAIL = "jane.doe@example.com"


def pseudonym(value: str) -> str:
    return "pseu_" + hmac.new(KEY.encode(), value.encode(), hashlib.sha256).hexdigest()[:16]


def test_users_and_sessions_still_group_under_pseudonyms(make_pipeline, client):
    pipeline = make_pipeline(pseudonymize="user_id,session_id,email", pseudonym_key=KEY)
    config = {"metadata": {"session_id": "s-42", "user_id": EMAIL}}
    chain("Noted.").invoke({"question": f"My mail is {EMAIL}"}, config=config)
    chain("Sure.").invoke({"question": "Thanks"}, config=config)
    agent = {  # another instrumentation: a GenAI semconv agent span, with the same user
        "gen_ai.operation.name": "invoke_agent",
        "user.id": EMAIL,
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "Hi"}]}]),
        "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "Yo"}]}]),
    }
    with pipeline.app.tracer.start_as_current_span("invoke_agent helper", attributes=agent):
        pass
    pipeline.flush()
    session, other = sorted(read_threads(client), key=lambda t: len(t.messages), reverse=True)
    assert [m.message for m in session.messages] == [f"My mail is {pseudonym(EMAIL)}", "Noted.", "Thanks", "Sure."]
    assert session.metadata["session_id"] == pseudonym("s-42")
    assert session.metadata["user_id"] == other.metadata["user_id"] == pseudonym(EMAIL)  # joins across sources
    sent = json.dumps([[m.message for m in t.messages] + list(t.metadata.values()) for t in (session, other)])
    assert EMAIL not in sent and "s-42" not in sent


def test_feedback_naming_the_raw_session_finds_its_pseudonymized_thread(make_pipeline, client, local_api):
    pipeline = make_pipeline(pseudonymize="session_id", pseudonym_key=KEY)
    chain("first").invoke({"question": "one"}, config={"metadata": {"session_id": "s-7"}})
    pipeline.flush()
    feedback = {"context.feedback.session_id": "s-7", "context.feedback.rating": 1}
    with pipeline.app.tracer.start_as_current_span("user feedback", attributes=feedback):
        pass
    pipeline.flush()
    assert wait_for(lambda: local_api.stats()["requests"].get("PATCH /api/v1/log/conversation/thread/{id}", 0) == 1)
    (thread,) = read_threads(client)
    assert [m.rating for m in thread.messages] == [None, 1]
    assert thread.metadata["session_id"] == pseudonym("s-7")
