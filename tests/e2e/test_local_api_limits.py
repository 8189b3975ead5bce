"""The local API stores only thread ids it can serve back, and answers a listing of huge threads in pages
bounded by bytes (issue 21: ids with CR/LF or over 8 KB were stored, 201, then unreadable, 404 and 400;
`per_page=1000` over 22 threads of 10k messages answered 340 MB at once)."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import quote

import pytest
from getcontext import ContextAPI
from getcontext.token import Credential

from otel_context.local_api import LocalContextAPI
from otel_context.local_api.server import MAX_PAGE_BYTES
from otel_context.local_api.validation import MAX_ID_BYTES

from ..support.threads import TOKEN

THREAD_PATH = "/api/v1/log/conversation/thread"
NO_TLS = {"enforce_https": False}


@pytest.fixture
def api():
    with LocalContextAPI(token=TOKEN) as running:
        yield running


@pytest.fixture
def client(api):
    context = ContextAPI(credential=Credential(TOKEN), endpoint=api.url, retry_total=0)
    yield context
    context.close()


class Connection:
    """One keep-alive connection with the bearer token: thousands of requests in a second or two."""

    def __init__(self, api: LocalContextAPI) -> None:
        self.http = http.client.HTTPConnection(api.host, api.port, timeout=30)

    def send(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        data = json.dumps(body).encode() if body is not None else None
        self.http.request(method, path, body=data, headers=headers)
        answer = self.http.getresponse()
        return answer.status, answer.read()

    def post_thread(self, thread_id: str, text: str = "hi") -> tuple[int, bytes]:
        conversation = {"id": thread_id, "messages": [{"role": "user", "message": text}]}
        return self.send("POST", THREAD_PATH, {"conversation": conversation})

    def read_back(self, thread_id: str) -> bool:
        status, body = self.send("GET", "/api/v1/conversations/" + quote(thread_id, safe=""))
        return status == 200 and json.loads(body)["id"] == thread_id


# --- thread ids ------------------------------------------------------------------------------------------------


def test_every_id_a_post_accepts_reads_back_and_only_control_characters_are_refused(api):
    """Each of the first 1,024 code points (and a few beyond) in an id: stored and served, or refused."""
    connection = Connection(api)
    refused = []
    for code in [*range(0x400), 0x2028, 0xFEFF, 0x1F642]:
        thread_id = f"id {chr(code)} {code}"
        status, body = connection.post_thread(thread_id)
        if status == 201:
            assert connection.read_back(thread_id), repr(thread_id)
        else:
            assert status == 400 and json.loads(body)["error"].startswith("conversation.id: "), body
            refused.append(code)
    assert refused == [*range(0x20), *range(0x7F, 0xA0)]  # C0, DEL and C1: Unicode's control characters


@pytest.mark.parametrize(
    "thread_id",
    ["a\r\nb", "a\nb", "line\r", "tab\there", "nul\x00", "x" * (MAX_ID_BYTES + 1), "é" * 513, ".", "..", "\ud800"],
    ids=["crlf", "lf", "cr", "tab", "nul", "long", "long-utf8", "dot", "dots", "lone-surrogate"],
)
def test_an_id_that_could_not_be_read_back_is_refused_with_a_clear_error(api, thread_id):
    status, body = Connection(api).post_thread(thread_id)
    assert status == 400
    assert json.loads(body)["error"].startswith("conversation.id: ")
    assert api.store.count() == 0


@pytest.mark.parametrize(
    "thread_id",
    ["x" * MAX_ID_BYTES, "é" * (MAX_ID_BYTES // 2), "🙂" * (MAX_ID_BYTES // 4), " spaced ", "a/../b", "./a", "%2F?#"],
)
def test_ids_at_the_bound_and_with_url_delimiters_read_back_through_the_client(api, client, thread_id):
    assert Connection(api).post_thread(thread_id)[0] == 201
    assert client.conversation(thread_id, **NO_TLS).id == thread_id


# --- listings bounded by bytes ---------------------------------------------------------------------------------


def listing(connection: Connection, per_page: int) -> list[tuple[list[str], int]]:
    """Every page from page 1, following `next_page`: the ids on each and the answer's size in bytes."""
    pages, page = [], 1
    while page is not None:
        status, body = connection.send("GET", f"/api/v1/conversations?per_page={per_page}&page={page}")
        assert status == 200, body[:300]
        answer = json.loads(body)
        pages.append(([thread["id"] for thread in answer["conversations"]], len(body)))
        page = answer["pagination"]["next_page"]
        assert len(pages) < 100, "next_page never ends"
    return pages


@pytest.mark.parametrize("per_page", [1000, 4])
def test_a_listing_of_large_threads_comes_in_pages_bounded_by_bytes_each_thread_once(api, client, per_page):
    connection = Connection(api)
    megabyte = "m" * (1024 * 1024)
    sizes = {f"t-{n:02}": 1 if n % 3 else 0 for n in range(15)}  # 10 threads of 1 MiB, 5 small ones
    sizes["huge"] = 5  # over the bound alone: a page of its own
    for thread_id, mebibytes in sizes.items():
        assert connection.post_thread(thread_id, megabyte * mebibytes or "small")[0] == 201
    newest_first = list(reversed(sizes))

    pages = listing(connection, per_page)
    assert [thread_id for ids, _ in pages for thread_id in ids] == newest_first  # every thread, once, in order
    assert all(len(ids) <= per_page for ids, _ in pages)
    for ids, size in pages:
        assert size <= MAX_PAGE_BYTES + 1024 or ids == ["huge"], (ids, size)
    assert ["huge"] in [ids for ids, _ in pages]
    if per_page == 1000:
        assert len(pages) >= 4  # 15 MiB: the bound cut the one page the count allowed

    seen, page = [], 1  # the same walk through context-python: its models take the resuming page numbers
    while page is not None:
        answer = client.conversations(page=page, per_page=per_page, **NO_TLS)
        seen += [thread.id for thread in answer.conversations]
        page = answer.pagination.next_page
    assert seen == newest_first


def test_pages_of_small_threads_are_counted_as_before(api):
    connection = Connection(api)
    for n in range(7):
        assert connection.post_thread(f"t-{n}")[0] == 201
    status, body = connection.send("GET", "/api/v1/conversations?per_page=3&page=2")
    assert status == 200
    answer = json.loads(body)
    assert [thread["id"] for thread in answer["conversations"]] == ["t-3", "t-2", "t-1"]
    assert answer["pagination"] == {
        "total_records": 7,
        "per_page": 3,
        "current_page": 2,
        "previous_page": 1,
        "next_page": 3,
        "page_count": 3,
    }
