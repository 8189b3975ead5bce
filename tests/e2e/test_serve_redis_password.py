"""The password of the Redis session store stays out of `GET /stats`, `otel-context stats` and the
sidecar's log (issue 21: `/stats` showed `"session_db": "redis://:s3cret@..."`), whichever form of
URL carries it, while the sidecar does use it: its sessions land in the password-protected Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from ..support.paths import REPO
from ..support.redis import RedisServer
from ..support.sidecar import SERVE_TOKEN, clean_env, serve
from ..support.threads import read_threads
from ..support.waiting import wait_for

PASSWORD = "r3dis-pa55word"


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis", password=PASSWORD)
    yield server
    server.stop()


def a_session_turn() -> None:
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | FakeListChatModel(responses=["Tomorrow."])
    (chain | StrOutputParser()).invoke({"q": "When does it ship?"}, config={"metadata": {"session_id": "s-1"}})


def get(url: str) -> str:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {SERVE_TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.read().decode()


@pytest.mark.parametrize(
    ("form", "shown"),
    [
        ("redis://default:{password}@127.0.0.1:{port}/0", "redis://default:***@127.0.0.1:{port}/0"),
        ("redis://127.0.0.1:{port}/0?password={password}", "redis://127.0.0.1:{port}/0?password=***"),
    ],
    ids=["user-info", "query"],
)
def test_the_redis_password_is_in_neither_stats_nor_the_log(
    local_api, client, capture, tmp_path, redis_server, form, shown
):
    url = form.format(password=PASSWORD, port=redis_server.port)
    sidecar, port = serve(local_api, tmp_path / "state", OTEL_EXPORTER_CONTEXT_SESSION_DB=url)
    try:
        body = encode_spans(capture(a_session_turn)).SerializeToString()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/traces",
            data=body,
            headers={"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {SERVE_TOKEN}"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
        assert wait_for(lambda: len(read_threads(client)) == 1, timeout=30)
        assert redis_server.client().keys("otel-context:*"), "the session did not go to Redis: the test proves nothing"

        stats = get(f"http://127.0.0.1:{port}/stats")
        assert json.loads(stats)["delivery"]["session_db"] == shown.format(port=redis_server.port)
        command = [sys.executable, "-m", "otel_context.cli", "stats", "--url", f"http://127.0.0.1:{port}"]
        printed = subprocess.run(
            [*command, "--token", SERVE_TOKEN], cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=60
        )
        assert printed.returncode == 0, printed.stderr
        assert shown.format(port=redis_server.port) in printed.stdout
    finally:
        log = sidecar.stop()
    for text in (stats, printed.stdout + printed.stderr, log):
        assert PASSWORD not in text
