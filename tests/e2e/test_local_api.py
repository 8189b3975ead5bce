"""The local Context API, driven by the real `context-python` client over real HTTP.

A thread written with `client.log.conversation_thread` comes back through `client.conversation` and
`client.conversations`; bad bodies get a 400 that says what is wrong; faults make the client see exactly what
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


def test_same_id_twice_is_one_updated_thread(client, local_api):
    write(client, chat("t-1", "first question"))
    write(client, chat("t-1", "second question", user_id="u-1"))

    assert local_api.store.count() == 1
    assert local_api.store.write_count("t-1") == 2
    thread = client.conversation("t-1", **NO_TLS)
    assert thread.messages[1].message == "second question"
    assert thread.metadata == {"model": "gpt-4o", "user_id": "u-1"}


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

    threads = client.conversations(**NO_TLS).conversations
    assert len(threads) == 2
    assert {t.messages[0].message for t in threads} == {"hello"}
    assert {t.additional_properties["tenant_id"] for t in threads} == {"tenant-a", None}


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
    }


# --- persistence and the command line ------------------------------------------------------------------------


def test_threads_survive_a_restart(tmp_path: Path):
    db = str(tmp_path / "threads.db")
    with LocalContextAPI(db_path=db, token=TOKEN) as api:
        write(ContextAPI(credential=Credential(TOKEN), endpoint=api.url, retry_total=0), chat("kept"))
    with LocalContextAPI(db_path=db, token=TOKEN) as api:
        again = ContextAPI(credential=Credential(TOKEN), endpoint=api.url, retry_total=0)
        assert again.conversation("kept", **NO_TLS).messages[3].message == "It ships on Monday."
        write(again, chat("kept"))
        assert api.store.write_count("kept") == 2


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
