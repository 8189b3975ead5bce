"""`otel-context local-api` under abuse (issue 11): forged browser writes, DNS rebinding, token leaks, odd ids."""

from __future__ import annotations

import http.client
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from azure.core.exceptions import ClientAuthenticationError
from getcontext import ContextAPI
from getcontext.token import Credential

from otel_context.local_api import LocalContextAPI

from ..support.paths import REPO
from ..support.threads import TOKEN
from .test_local_api import NO_TLS, chat, write

THREAD_PATH = "/api/v1/log/conversation/thread"


@pytest.fixture
def open_api():
    """The default: no token, on loopback."""
    with LocalContextAPI() as api:
        yield api


def request(
    api: LocalContextAPI, method: str, path: str, body: bytes | None = None, **headers: str
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(api.host, api.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={k.replace("_", "-"): v for k, v in headers.items()})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


THREAD_BODY = json.dumps({"conversation": {"id": "planted", "messages": [{"role": "user", "message": "hi"}]}})


# --- 7. cross-site writes -----------------------------------------------------------------------------------


def test_a_simple_cross_site_post_is_refused(open_api):
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        status, _ = request(open_api, "POST", THREAD_PATH, THREAD_BODY.encode(), Content_Type=content_type)
        assert status == 415
    assert open_api.store.count() == 0
    status, _ = request(open_api, "POST", THREAD_PATH, THREAD_BODY.encode(), Content_Type="application/json")
    assert status == 201 and open_api.store.count() == 1


def test_a_foreign_host_header_is_refused(open_api):
    """DNS rebinding: a hostile name resolving to 127.0.0.1 makes the page same-origin, not the Host."""
    json_type = {"Content_Type": "application/json"}
    hosts = ("evil.example", f"evil.example:{open_api.port}", "127.0.0.1.evil.example", "[::1", "a b", "127.0.0.1@x")
    for host in hosts:
        assert request(open_api, "GET", "/", Host=host)[0] == 421
        assert request(open_api, "GET", "/api/v1/conversations", Host=host)[0] == 421
        assert request(open_api, "POST", THREAD_PATH, THREAD_BODY.encode(), Host=host, **json_type)[0] == 421
    assert open_api.store.count() == 0
    for host in (f"127.0.0.1:{open_api.port}", f"localhost:{open_api.port}", "localhost", "LOCALHOST"):
        assert request(open_api, "GET", "/api/v1/conversations", Host=host)[0] == 200


def test_fault_injection_exists_only_when_asked_for(open_api):
    body = b'{"status": 500}'
    assert request(open_api, "POST", "/_admin/faults", body, Content_Type="application/json")[0] == 404
    assert request(open_api, "GET", "/_admin/faults")[0] == 404
    with LocalContextAPI(fault_injection=True) as faulty:
        assert request(faulty, "POST", "/_admin/faults", body, Content_Type="application/json")[0] == 200
        assert request(faulty, "POST", "/_admin/faults", b"{}", Content_Type="text/plain")[0] == 415


# --- 8. tokens kept out of argv and logs --------------------------------------------------------------------


def local_api_process(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.Popen, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "CONTEXT_"))}
    environment.update(PYTHONPATH=str(REPO), **env)
    command = [sys.executable, "-m", "otel_context.local_api", "--port", "0", *args]
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    line = process.stdout.readline()
    assert "listening on" in line, process.stderr.read() if process.poll() is not None else line
    return process, line.rsplit(" ", 1)[-1].strip()


@pytest.mark.parametrize("source", ["variable", "file"])
def test_token_from_a_variable_or_a_file_never_in_argv(tmp_path, source):
    secret = "local-secret-77"
    if source == "variable":
        process, url = local_api_process(tmp_path, OTEL_CONTEXT_LOCAL_API_TOKEN=secret)
    else:
        (tmp_path / "token").write_text(secret + "\n")
        process, url = local_api_process(tmp_path, "--token-file", str(tmp_path / "token"))
    try:
        assert secret.encode() not in Path(f"/proc/{process.pid}/cmdline").read_bytes()
        client = ContextAPI(credential=Credential(secret), endpoint=url, retry_total=0)
        assert write(client, chat("t-1")) == "t-1"
        wrong = ContextAPI(credential=Credential("wrong"), endpoint=url, retry_total=0)
        with pytest.raises(ClientAuthenticationError):
            wrong.conversation("t-1", **NO_TLS)
    finally:
        process.terminate()
        process.communicate(timeout=20)


def test_view_token_never_reaches_the_access_log(caplog):
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    with LocalContextAPI(token=TOKEN) as api:
        assert request(api, "GET", f"/?token={TOKEN}")[0] == 303
        assert request(api, "GET", "/?token=wrong-guess")[0] == 401
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert '"GET /"' in logged  # the request is logged, its query string is not
    assert TOKEN not in logged and "wrong-guess" not in logged


# --- 9. thread ids with any characters ----------------------------------------------------------------------


@pytest.mark.parametrize("thread_id", ["team/a/b", "with space?and#hash", "50%2F50", "../etc/passwd", "ü/ö"])
def test_thread_ids_with_any_characters_are_read_back(thread_id):
    with LocalContextAPI(token=TOKEN) as api:
        client = ContextAPI(credential=Credential(TOKEN), endpoint=api.url, retry_total=0)
        assert write(client, chat(thread_id)) == thread_id
        assert client.conversation(thread_id, **NO_TLS).id == thread_id
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        for slash in ("", "/"):  # "/" encoded as %2F, or left as it is by a hand-written URL
            status, page = request(api, "GET", "/threads/" + quote(thread_id, safe=slash), **bearer)
            assert status == 200 and b"When does my order ship?" in page
            if ".." not in thread_id:  # a client would resolve the dots away before sending
                status, body = request(api, "GET", "/api/v1/conversations/" + quote(thread_id, safe=slash), **bearer)
                assert status == 200 and json.loads(body)["id"] == thread_id
