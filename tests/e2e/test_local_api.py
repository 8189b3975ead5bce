"""The local Context API, driven by the real `context-python` client over real HTTP.

A thread written with `client.log.conversation_thread` comes back through `client.conversation` and
`client.conversations`; a second POST with the same id appends, as Context's documentation says, so a resend
shows up as duplicates; bad bodies get a 400 that says what is wrong; faults make the client see exactly what
it would see from a bad day at Context (500, 429 with Retry-After, connection resets).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from getcontext import ContextAPI
from getcontext.generated.models import Conversation, Message, Thread, ThreadMessage
from getcontext.token import Credential

from otel_context.local_api import FaultPlan, LocalContextAPI, ThreadStore

from ..support.paths import REPO
from ..support.threads import TOKEN

THREAD_PATH = "/api/v1/log/conversation/thread"
CONNECTION_ERRORS = (ServiceRequestError, ServiceResponseError)
NO_TLS = {"enforce_https": False}  # loopback only: azure-core refuses a bearer token over http otherwise


def chat(thread_id: str | None = "t-1", question: str = "When does my order ship?", **metadata: str) -> dict:
    """A thread body as an app would send it: system prompt, question, answer, a tool step."""
    at = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
    messages = [
        Message(role="system", message="You are a support agent.", event_timestamp=at),
        Message(role="user", message=question, event_timestamp=at, metadata={"tokens": "7"}),
        Message(type="tool", name="orders.lookup", input={"order": 42}, observation="ships Monday"),
        Message(role="assistant", message="It ships on Monday.", event_timestamp=at + dt.timedelta(seconds=2)),
    ]
    return {"conversation": Thread(id=thread_id, messages=messages, metadata={"model": "gpt-4o", **metadata})}


def write(client: ContextAPI, body: dict, **kwargs: Any) -> str:
    return client.log.conversation_thread(body=body, **NO_TLS, **kwargs).data.id


def turn(thread_id: str | None, question: str, answer: str, **metadata: str) -> dict:
    """One session turn as an append: only that turn's question and answer, the session's metadata."""
    at = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
    messages = [
        Message(role="user", message=question, event_timestamp=at, metadata={"turn": question}),
        Message(role="assistant", message=answer, event_timestamp=at + dt.timedelta(seconds=1)),
    ]
    return {"conversation": Thread(id=thread_id, messages=messages, metadata={"session_id": "s-1", **metadata})}


def upsert(client: ContextAPI, *texts: str, **metadata: str) -> str:
    """A deprecated upsert of the whole history so far (user and assistant taking turns); answers the id."""
    roles = ("user", "assistant")
    history = [Message(role=roles[i % 2], message=text) for i, text in enumerate(texts)]
    answer = client.log.conversation_upsert(
        body={"conversation": Conversation(messages=history, metadata={"user_id": "u-1", **metadata})},
        cls=lambda pipeline_response, *_: pipeline_response.http_response.json(),  # the SDK returns None
        **NO_TLS,
    )
    return answer["data"]["id"]


def said(thread) -> list[tuple[str | None, str | None]]:
    return [(m.role, m.message) for m in thread.messages]


def raw(api: LocalContextAPI, method: str, path: str, body: Any = None, token: str | None = TOKEN) -> tuple:
    """A request without the SDK, for bodies it would never send; returns (status, headers, JSON or None)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(api.url + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, headers, payload = response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        status, headers, payload = err.code, err.headers, err.read()
    return status, headers, json.loads(payload) if payload else None


# --- writing and reading back -------------------------------------------------------------------------------


def test_thread_written_is_read_back_with_the_client(client, local_api):
    assert write(client, chat("t-1")) == "t-1"

    thread = client.conversation("t-1", **NO_TLS)
    assert thread.metadata == {"model": "gpt-4o"}
    assert [(m.type, m.role, m.message) for m in thread.messages] == [
        ("message", "system", "You are a support agent."),
        ("message", "user", "When does my order ship?"),
        ("tool", None, None),
        ("message", "assistant", "It ships on Monday."),
    ]
    assert thread.messages[1].metadata == {"tokens": "7"}
    assert thread.messages[3].event_timestamp == dt.datetime(2026, 1, 1, 12, 0, 2, tzinfo=dt.timezone.utc)
    # tool fields are not in MessageResponse: the SDK keeps them as additional properties
    assert thread.messages[2].additional_properties["observation"] == "ships Monday"

    listing = client.conversations(**NO_TLS)
    assert [c.id for c in listing.conversations] == ["t-1"]
    assert listing.conversations[0].messages[3].message == "It ships on Monday."
    assert listing.pagination.total_records == 1


def test_thread_without_id_gets_one(client, local_api):
    thread_id = write(client, chat(None))
    assert len(thread_id) == 36
    assert client.conversation(thread_id, **NO_TLS).messages[0].role == "system"
    other = write(client, chat(None))
    assert other != thread_id and local_api.store.count() == 2  # each id-less POST is a thread of its own

    assert write(client, turn(thread_id, "And the invoice?", "Attached.", model="gpt-4o")) == thread_id
    assert [m.message for m in client.conversation(thread_id, **NO_TLS).messages][3:] == [
        "It ships on Monday.",
        "And the invoice?",
        "Attached.",
    ]


# --- appends: Context's "Thread Conversation" semantics --------------------------------------------------------


def test_posts_with_one_id_append_in_order(client, local_api):
    assert write(client, turn("s-1", "Hi", "Hello!")) == "s-1"
    assert write(client, turn("s-1", "Where is my order?", "On its way.")) == "s-1"
    write(client, turn("s-1", "Thanks", "You're welcome."))

    thread = client.conversation("s-1", **NO_TLS)
    assert said(thread) == [
        ("user", "Hi"),
        ("assistant", "Hello!"),
        ("user", "Where is my order?"),
        ("assistant", "On its way."),
        ("user", "Thanks"),
        ("assistant", "You're welcome."),
    ]
    assert [m.metadata for m in thread.messages[::2]] == [
        {"turn": "Hi"},
        {"turn": "Where is my order?"},
        {"turn": "Thanks"},
    ]
    assert thread.metadata == {"session_id": "s-1"}
    assert (local_api.store.count(), local_api.store.write_count("s-1")) == (1, 3)
    [listed] = client.conversations(**NO_TLS).conversations
    assert said(listed) == said(thread)
    assert local_api.stats()["threads_metadata_changed"] == 0


def test_a_resend_stores_the_messages_twice(client, local_api):
    """Nothing is de-duplicated: a writer that sends a thread twice must see it twice."""
    write(client, chat("t-1"))
    write(client, chat("t-1"))

    thread = client.conversation("t-1", **NO_TLS)
    assert len(thread.messages) == 8
    assert [(m.type, m.role, m.message) for m in thread.messages[4:]] == [
        (m.type, m.role, m.message) for m in thread.messages[:4]
    ]
    assert local_api.store.write_count("t-1") == 2
    assert local_api.stats()["messages"] == 8


def test_message_metadata_and_custom_events_are_read_back(client, local_api):
    at = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
    write(client, turn("s-1", "Buy the socks", "Done."))
    checkout = Message(type="event", name="Checkout", metadata={"basket": "3 items"}, event_timestamp=at)
    write(client, {"conversation": Thread(id="s-1", messages=[checkout], metadata={"session_id": "s-1"})})

    event = client.conversation("s-1", **NO_TLS).messages[2]
    assert (event.type, event.role, event.metadata) == ("event", None, {"basket": "3 items"})
    assert event.additional_properties["name"] == "Checkout"  # not in MessageResponse: an additional property
    assert event.event_timestamp == at
    assert client.conversation("s-1", **NO_TLS).messages[0].metadata == {"turn": "Buy the socks"}


def test_changed_thread_metadata_is_counted_and_the_first_kept(client, local_api):
    """Context asks for the same thread metadata on every POST of a thread; a change is recorded, not applied."""
    write(client, turn("s-1", "Hi", "Hello!", trace_id="a"))
    write(client, turn("s-1", "Again", "Hello again!", trace_id="b"))
    write(client, turn("s-1", "Bye", "Bye!", trace_id="a"))
    write(client, turn("s-2", "Hi", "Hello!"))
    write(client, turn("s-2", "Hi", "Hello!"))

    assert client.conversation("s-1", **NO_TLS).metadata == {"session_id": "s-1", "trace_id": "a"}
    stats = raw(local_api, "GET", "/_admin/stats")[2]
    assert (stats["threads_metadata_changed"], stats["posts_metadata_changed"]) == (1, 1)
    assert local_api.store.metadata_changes() == {"s-1": 1}
    posts = local_api.store.get("s-1")["posts"]
    assert [(p["number"], p["first_position"], p["messages"], p["metadata_changed"]) for p in posts] == [
        (1, 0, 2, False),
        (2, 2, 2, True),
        (3, 4, 2, False),
    ]
    assert posts[1]["metadata"] == {"session_id": "s-1", "trace_id": "b"}


def test_ratings_land_on_the_appended_messages(client, local_api):
    write(client, chat("t-1"))  # messages 0-3
    write(client, turn("t-1", "Thanks", "Anytime."))  # messages 4-5
    updates = [ThreadMessage() for _ in range(5)] + [ThreadMessage(rating=1)]
    client.log.update_conversation_thread("t-1", body=updates, **NO_TLS)
    client.log.update_conversation_thread("t-1", body=[ThreadMessage(), ThreadMessage(rating=-1)], **NO_TLS)

    thread = client.conversation("t-1", **NO_TLS)
    assert [m.rating for m in thread.messages] == [None, -1, None, None, None, 1]
    assert thread.messages[5].message == "Anytime."
    assert thread.messages[4].metadata == {"turn": "Thanks"}  # the update merged into the message, nothing lost
    status, _, answer = raw(local_api, "PATCH", THREAD_PATH + "/t-1", [{}] * 7)
    assert (status, answer["error"]) == (400, "body[6]: thread t-1 has only 6 message(s), got 7 updates")


def test_listing_pages_and_filters(client, local_api):
    for i in range(5):
        write(client, chat(f"t-{i}", user_id="u-1" if i % 2 else "u-2", session_id=f"s-{i}"))

    page = client.conversations(page=2, per_page=2, **NO_TLS)
    assert [c.id for c in page.conversations] == ["t-2", "t-1"]  # newest first
    assert page.pagination.as_dict() == {
        "total_records": 5,
        "per_page": 2,
        "current_page": 2,
        "previous_page": 1,
        "next_page": 3,
        "page_count": 3,
    }
    assert raw(local_api, "GET", "/api/v1/conversations?user_id=u-1")[2]["pagination"]["total_records"] == 2
    assert [c["id"] for c in raw(local_api, "GET", "/api/v1/conversations?session_id=s-3")[2]["conversations"]] == [
        "t-3"
    ]
    future = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).isoformat()
    assert client.conversations(start_time=future, **NO_TLS).pagination.total_records == 0
    assert client.conversations(end_time=future, **NO_TLS).pagination.total_records == 5


def test_unknown_conversation_is_404(client, local_api):
    with pytest.raises(ResourceNotFoundError):
        client.conversation("missing", **NO_TLS)


def test_patch_rates_messages_by_position(client, local_api):
    write(client, chat("t-1"))
    client.log.update_conversation_thread("t-1", body=[ThreadMessage(), ThreadMessage(rating=-1)], **NO_TLS)

    ratings = [m.rating for m in client.conversation("t-1", **NO_TLS).messages]
    assert ratings == [None, -1, None, None]
    with pytest.raises(ResourceNotFoundError):
        client.log.update_conversation_thread("missing", body=[ThreadMessage(rating=1)], **NO_TLS)
    status, _, answer = raw(local_api, "PATCH", THREAD_PATH + "/t-1", [{"rating": 5}])
    assert (status, answer["error"]) == (400, "body[0].rating: must be one of -1, 0, 1, got 5")


def test_legacy_conversation_endpoints(client, local_api):
    legacy = Conversation(messages=[Message(role="user", message="hello")], metadata={"source": "langchain"})
    client.log.conversation_upsert(body={"conversation": legacy}, tenant_id="tenant-a", **NO_TLS)
    client.log.conversation(body={"conversation": legacy}, **NO_TLS)
    client.log.conversation(body={"conversation": legacy}, **NO_TLS)  # log/conversation: always a new one

    threads = client.conversations(**NO_TLS).conversations
    assert len(threads) == 3
    assert {t.messages[0].message for t in threads} == {"hello"}
    assert sorted(str(t.additional_properties["tenant_id"]) for t in threads) == ["None", "None", "tenant-a"]
    assert set(local_api.store.write_counts().values()) == {1}


def test_upsert_amends_the_conversation_whose_history_it_continues(client, local_api):
    """The deprecated upsert: the whole history each time, matched on at least 2 leading messages."""
    first = upsert(client, "Hi", "Hello!")
    assert upsert(client, "Hi", "Hello!", "Where is my order?", "On its way.") == first
    assert upsert(client, "Hi", "Hello!", "Where is my order?", "On its way.") == first  # nothing new to add
    assert said(client.conversation(first, **NO_TLS)) == [
        ("user", "Hi"),
        ("assistant", "Hello!"),
        ("user", "Where is my order?"),
        ("assistant", "On its way."),
    ]
    assert local_api.store.write_count(first) == 3

    assert upsert(client, "Hi", "Hello!", user_id="u-2") != first  # other metadata: another conversation
    assert upsert(client, "Hi", "Bonjour!") != first  # only 1 message in common: not a match
    assert upsert(client, "Hola") != first  # a single message never matches
    assert local_api.store.count() == 4

    events = {"messages": [{"role": "user", "message": "x"}, {"type": "event", "name": "Checkout"}]}
    status, _, answer = raw(local_api, "POST", "/api/v1/log/conversation/upsert", {"conversation": events})
    assert (status, answer["error"]) == (400, "conversation.messages[1].type: custom events are not accepted by upsert")


# --- auth and bad bodies -------------------------------------------------------------------------------------


def test_wrong_token_is_401_and_never_echoed(local_api):
    intruder = ContextAPI(credential=Credential("wrong-token"), endpoint=local_api.url, retry_total=0)
    with pytest.raises(ClientAuthenticationError):
        write(intruder, chat())
    status, headers, answer = raw(local_api, "GET", "/api/v1/conversations", token="wrong-token")
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
    assert "wrong-token" not in answer["error"] and TOKEN not in answer["error"]
    assert raw(local_api, "GET", "/_admin/stats", token=None)[0] == 401
    assert raw(local_api, "GET", "/healthz", token=None)[2] == {"status": "ok", "threads": 0}


def test_malformed_json_is_400(local_api):
    status, _, answer = raw(local_api, "POST", THREAD_PATH, b'{"conversation": {')
    assert status == 400
    assert answer["error"].startswith("body: malformed JSON: ")
    assert raw(local_api, "POST", THREAD_PATH, b'{"conversation": NaN}')[2] == {
        "error": "body: malformed JSON: NaN is not a JSON value"
    }
    assert local_api.store.count() == 0


@pytest.mark.parametrize(
    ("conversation", "error"),
    [
        (
            {"messages": [{"role": "user", "message": "hi"}], "metadata": {"tokens": 12}},
            "conversation.metadata.tokens: metadata values must be strings, got number 12",
        ),
        (
            {"messages": [{"role": "user", "message": "hi", "metadata": {"ok": "1", "latency": None}}]},
            "conversation.messages[0].metadata.latency: metadata values must be strings, got null None",
        ),
        (
            {"messages": [{"role": "user"}, {"role": "user"}, {"role": "bot", "message": "x"}]},
            "conversation.messages[2].role: must be one of system, assistant, user, got 'bot'",
        ),
        ({"messages": []}, "conversation.messages: must not be empty"),
        ({"metadata": {}}, "conversation.messages: must be a list of messages, got null"),
        (
            {"messages": [{"role": "user", "event_timestamp": "yesterday"}]},
            "conversation.messages[0].event_timestamp: not an ISO 8601 timestamp: 'yesterday'",
        ),
        (
            {"messages": [{"role": "user", "rating": 2}]},
            "conversation.messages[0].rating: must be one of -1, 0, 1, got 2",
        ),
        (
            {"messages": [{"type": "chat", "role": "user"}]},
            "conversation.messages[0].type: must be one of message, tool, event, got 'chat'",
        ),
        (
            {"messages": [{"message": "who said this?"}]},
            "conversation.messages[0].role: required for a message of type 'message' (one of system, assistant, user)",
        ),
    ],
)
def test_wrong_shapes_are_400_naming_the_culprit(local_api, conversation, error):
    status, _, answer = raw(local_api, "POST", THREAD_PATH, {"conversation": conversation})
    assert (status, answer) == (400, {"error": error})


def test_unknown_path_and_oversized_body(local_api):
    status, _, answer = raw(local_api, "GET", "/api/v1/nowhere")
    assert (status, answer) == (404, {"error": "not found: GET /api/v1/nowhere"})
    status, _, answer = raw(local_api, "POST", THREAD_PATH, b" " * (16 * 1024 * 1024 + 1))
    assert status == 413 and answer["error"].startswith("body too large")


# --- faults --------------------------------------------------------------------------------------------------


def test_latency_delays_api_answers_only(client, local_api):
    local_api.set_faults(latency_s=0.3)
    started = time.monotonic()
    write(client, chat())
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    raw(local_api, "GET", "/healthz")
    assert time.monotonic() - started < 0.2


def test_500_until_the_window_ends(client, local_api):
    local_api.set_faults(status=500, duration_s=0.4)
    with pytest.raises(HttpResponseError) as failure:
        write(client, chat())
    assert failure.value.status_code == 500
    assert client.conversations(**NO_TLS).pagination.total_records == 0  # reads still answer
    time.sleep(0.45)
    assert write(client, chat()) == "t-1"
    assert local_api.store.write_count("t-1") == 1


def test_429_carries_retry_after(client, local_api):
    local_api.set_faults(status=429, retry_after=2)
    with pytest.raises(HttpResponseError) as failure:
        write(client, chat())
    assert failure.value.status_code == 429
    assert failure.value.response.headers["Retry-After"] == "2"
    local_api.clear_faults()
    write(client, chat())


@pytest.mark.parametrize("fault", ["reset_s", "down_s"])
def test_connection_reset_reaches_the_client_as_a_connection_error(client, local_api, fault):
    write(client, chat("before"))  # a pooled keep-alive connection exists; it must be reset too
    local_api.set_faults(**{fault: 0.3})
    with pytest.raises(CONNECTION_ERRORS):
        write(client, chat("during"))
    assert raw(local_api, "GET", "/healthz")[0] == 200  # health is never faulted
    time.sleep(0.35)
    assert write(client, chat("after")) == "after"
    assert sorted(local_api.store.write_counts()) == ["after", "before"]
    assert local_api.stats()["responses"]["reset"] == 1


@pytest.fixture
def faulty_api():
    """A local API started with fault injection, so `/_admin/faults` exists."""
    with LocalContextAPI(token=TOKEN, fault_injection=True) as api:
        yield api


def test_admin_controls_faults_over_http(faulty_api):
    local_api = faulty_api
    client = ContextAPI(credential=Credential(TOKEN), endpoint=local_api.url, retry_total=0)
    status, _, plan = raw(local_api, "POST", "/_admin/faults", {"status": 503, "duration_s": 30, "retry_after": 1.5})
    assert status == 200
    assert plan["status"] == 503 and 29 < plan["status_remaining_s"] <= 30 and plan["retry_after"] == 1.5
    with pytest.raises(HttpResponseError) as failure:
        write(client, chat())
    assert (failure.value.status_code, failure.value.response.headers["Retry-After"]) == (503, "1.5")

    status, _, answer = raw(local_api, "POST", "/_admin/faults", {"status": 200})
    assert (status, answer["error"]) == (400, "status: must be an HTTP error status between 400 and 599, got 200")
    assert raw(local_api, "POST", "/_admin/faults", {"explode": 1})[0] == 400
    assert raw(local_api, "POST", "/_admin/faults", {})[2]["status"] is None
    assert raw(local_api, "GET", "/_admin/faults")[2] == FaultPlan().describe()
    write(client, chat())


def test_stats_count_requests_answers_and_writes(client, local_api):
    write(client, chat("t-1"))
    write(client, chat("t-1"))
    client.conversation("t-1", **NO_TLS)
    local_api.set_faults(status=500)
    with pytest.raises(HttpResponseError):
        write(client, chat("t-2"))

    status, _, stats = raw(local_api, "GET", "/_admin/stats")
    assert status == 200
    assert stats == {
        "requests": {"POST /api/v1/log/conversation/thread": 3, "GET /api/v1/conversations/{id}": 1},
        "responses": {"201": 2, "200": 1, "500": 1},
        "writes": {"t-1": 2},
        "threads": 1,
        "messages": 8,
        "threads_metadata_changed": 0,
        "posts_metadata_changed": 0,
    }


# --- persistence and the command line ------------------------------------------------------------------------


def test_threads_survive_a_restart(tmp_path: Path):
    db = str(tmp_path / "threads.db")
    with LocalContextAPI(db_path=db, token=TOKEN) as api:
        write(ContextAPI(credential=Credential(TOKEN), endpoint=api.url, retry_total=0), chat("kept"))
    with LocalContextAPI(db_path=db, token=TOKEN) as api:
        again = ContextAPI(credential=Credential(TOKEN), endpoint=api.url, retry_total=0)
        assert again.conversation("kept", **NO_TLS).messages[3].message == "It ships on Monday."
        write(again, turn("kept", "Thanks", "Anytime.", model="gpt-4o"))
        assert api.store.write_count("kept") == 2
        assert [m.message for m in again.conversation("kept", **NO_TLS).messages][3:] == [
            "It ships on Monday.",
            "Thanks",
            "Anytime.",
        ]


@pytest.mark.timeout(30)
def test_cli_serves_until_sigterm(tmp_path: Path):
    db = tmp_path / "cli.db"
    command = [sys.executable, "-m", "otel_context.local_api", "--port", "0", "--db", str(db), "--token", TOKEN]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True) as server:
        try:
            line = server.stdout.readline()
            assert line.startswith("Local Context API listening on http://127.0.0.1:")
            url = line.rsplit(" ", 1)[1].strip()
            write(ContextAPI(credential=Credential(TOKEN), endpoint=url, retry_total=0), chat("via-cli"))
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=10) == 0
        finally:
            if server.poll() is None:
                server.kill()
    assert ThreadStore(str(db)).write_count("via-cli") == 1


def test_a_huge_page_number_is_a_400_not_a_500(local_api):
    status, _, body = raw(local_api, "GET", "/api/v1/conversations?page=99999999999999999999")
    assert status == 400
    assert "page" in str(body)
