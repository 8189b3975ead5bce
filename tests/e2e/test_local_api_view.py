"""The local API's web view: plain HTTP checks of its HTML, then the demo's threads in headless Chromium.

The browser is Debian's `chromium`, driven by Playwright for Python (never `playwright install`). Without
`/usr/bin/chromium` the browser tests skip, except in CI (`CI` or `OTEL_CONTEXT_BROWSER_TESTS=required` set),
where they fail instead: there, `.ci/run` installs it.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from typing import Any

import pytest

from otel_context.demo import run_app
from otel_context.local_api import LocalContextAPI
from otel_context.local_api.view import CONTENT_SECURITY_POLICY, shorten
from otel_context.local_api.view_access import COOKIE_PREFIX, cookie_value

from ..support.threads import TOKEN

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
XSS = "<script>alert(1)</script>"


# --- helpers --------------------------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx comes back as an HTTPError, so its headers can be checked


_OPENER = urllib.request.build_opener(_NoRedirect)


def fetch(api: LocalContextAPI, path: str, headers: dict[str, str] | None = None) -> tuple[int, Message, str]:
    """GET without following redirects; returns (status, headers, body text)."""
    request = urllib.request.Request(api.url + path, headers=headers or {})
    try:
        with _OPENER.open(request, timeout=10) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read().decode()


def listed_ids(page: str) -> list[str]:
    return re.findall(r'class="thread-link" href="[^"]*">([^<]*)</a>', page)


def bubbles(page: str) -> list[tuple[str, str]]:
    """(data-type, data-role) of each message bubble, in page order."""
    return re.findall(r'<article class="msg [^"]*" data-type="([^"]*)" data-role="([^"]*)"', page)


def thread(thread_id: str, question: str = "When does my order ship?", **metadata: str) -> dict[str, Any]:
    at = "2026-01-01T12:00:00.000Z"
    return {
        "id": thread_id,
        "metadata": {"workflow": "support", **metadata},
        "messages": [
            {"type": "message", "role": "system", "message": "You are a support agent.", "event_timestamp": at},
            {"type": "message", "role": "user", "message": question, "event_timestamp": at},
            {"type": "tool", "name": "orders.lookup", "input": {"order": 42}, "observation": "ships Monday"},
            {"type": "event", "message": "retried once"},
            {"type": "message", "role": "assistant", "message": "It ships on Monday.", "metadata": {"tokens": "9"}},
        ],
    }


@pytest.fixture
def open_api() -> Iterator[LocalContextAPI]:
    """A local API with no token: its view is open too."""
    with LocalContextAPI() as api:
        yield api


# --- the thread list --------------------------------------------------------------------------------------------


def test_list_shows_threads_newest_first(open_api):
    long_question = "Where is my parcel? " * 10
    open_api.store.post_thread(thread("t-old", user_id="u-1", session_id="s-1"))
    open_api.store.post_thread({"id": "t-op", "metadata": {"operation": "chat"}, "messages": [{"role": "user"}]})
    open_api.store.post_thread(thread("t-new", long_question))

    status, headers, page = fetch(open_api, "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert listed_ids(page) == ["t-new", "t-op", "t-old"]
    assert "3 threads · page 1 of 1" in page
    row = page[page.rindex("<tr", 0, page.index('href="/threads/t-old"')) :].split("</tr>")[0]
    assert re.findall(r"<td[^>]*>(.*?)</td>", row)[2:] == [
        '<a href="/?user_id=u-1">u-1</a>',
        '<a href="/?session_id=s-1">s-1</a>',
        "support",
        "5",
        "When does my order ship?",
    ]
    assert shorten(long_question) in page and len(shorten(long_question)) == 80
    assert shorten(long_question).endswith("…")
    assert ">chat</td>" in page  # the operation, when there is no workflow


def test_filters_use_the_store_and_fill_the_form(open_api):
    for i in range(4):
        open_api.store.post_thread(thread(f"t-{i}", user_id=f"u-{i % 2}", session_id=f"s-{i}"))

    assert listed_ids(fetch(open_api, "/?user_id=u-1")[2]) == ["t-3", "t-1"]
    assert listed_ids(fetch(open_api, "/?session_id=s-2")[2]) == ["t-2"]
    assert listed_ids(fetch(open_api, "/?user_id=u-1&session_id=s-2")[2]) == []
    assert listed_ids(fetch(open_api, "/?user_id=&session_id=")[2]) == ["t-3", "t-2", "t-1", "t-0"]
    page = fetch(open_api, "/?user_id=u-1&session_id=s-3")[2]
    assert 'name="user_id" value="u-1"' in page and 'name="session_id" value="s-3"' in page
    assert "1 thread matching user_id = u-1, session_id = s-3" in page
    assert "No threads here yet." in fetch(open_api, "/?user_id=nobody")[2]


def test_pagination_links_keep_the_filters(open_api):
    for i in range(5):
        open_api.store.post_thread(thread(f"t-{i}", user_id="u-1"))

    first = fetch(open_api, "/?user_id=u-1&per_page=2")[2]
    assert listed_ids(first) == ["t-4", "t-3"]
    assert 'rel="prev"' not in first
    assert '<a rel="next" href="/?user_id=u-1&amp;page=2&amp;per_page=2">older →</a>' in first
    assert 'type="hidden" name="per_page" value="2"' in first

    second = fetch(open_api, "/?user_id=u-1&per_page=2&page=2")[2]
    assert listed_ids(second) == ["t-2", "t-1"]
    assert 'href="/?user_id=u-1&amp;per_page=2">← newer</a>' in second
    assert 'href="/?user_id=u-1&amp;page=3&amp;per_page=2">older →</a>' in second

    last = fetch(open_api, "/?user_id=u-1&per_page=2&page=3")[2]
    assert listed_ids(last) == ["t-0"] and 'rel="next"' not in last
    assert "5 threads matching user_id = u-1 · page 3 of 3" in last

    assert listed_ids(fetch(open_api, "/?page=abc&per_page=-1")[2]) == ["t-4", "t-3", "t-2", "t-1", "t-0"]
    beyond = fetch(open_api, "/?page=99999999999999999999")
    assert beyond[0] == 200 and "No threads here yet." in beyond[2]


# --- one thread ----------------------------------------------------------------------------------------------------


def test_thread_page_shows_the_conversation(open_api):
    open_api.store.post_thread(thread("t-1", user_id="u-1"))
    open_api.store.rate("t-1", [{}, {"rating": 1}, {}, {}, {"rating": -1}])

    status, _, page = fetch(open_api, "/threads/t-1")
    assert status == 200
    assert bubbles(page) == [
        ("message", "system"),
        ("message", "user"),
        ("tool", ""),
        ("event", ""),
        ("message", "assistant"),
    ]
    tool = page[page.index('data-type="tool"') :].split("</article>")[0]
    assert 'tool · <span class="name">orders.lookup</span>' in tool
    assert "<dt>input</dt><dd><pre>{\n  &quot;order&quot;: 42\n}</pre></dd>" in tool
    assert "<dt>observation</dt><dd><pre>ships Monday</pre></dd>" in tool
    assert 'class="msg msg-event"' in page and "retried once" in page
    articles = page.split("</article>")
    assert page.count("👍") == 1 and "👍" in articles[1] and 'data-role="user"' in articles[1]
    assert page.count("👎") == 1 and "👎" in articles[4] and 'data-role="assistant"' in articles[4]
    assert '<time datetime="2026-01-01T12:00:00.000Z">2026-01-01 12:00:00.000 UTC</time>' in page
    assert "tokens=9" in page
    assert "<tr><th>user_id</th><td>u-1</td></tr>" in page and "<tr><th>workflow</th><td>support</td></tr>" in page


def test_a_thread_whose_metadata_changed_between_posts_is_marked(open_api):
    open_api.store.post_thread(thread("t-same", session_id="s-1"))
    open_api.store.post_thread(thread("t-same", "And then?", session_id="s-1"))
    open_api.store.post_thread(thread("t-changed", session_id="s-2"))
    open_api.store.post_thread(thread("t-changed", "And then?", session_id="s-2", trace_id=XSS))

    listing = fetch(open_api, "/")[2]
    rows = {thread_id: row for thread_id, row in re.findall(r'href="/threads/([^"]*)">[^<]*</a>(.*?)</tr>', listing)}
    assert "metadata changed between POSTs" in rows["t-changed"]
    assert "metadata changed between POSTs" not in rows["t-same"]

    page = fetch(open_api, "/threads/t-changed")[2]
    assert 'id="metadata-changed"' in page and "1 of 2 POSTs carried metadata other than the first" in page
    assert "<tr><th>trace_id</th>" not in page  # the thread keeps the first POST's metadata
    posts = page[page.index('<table class="posts">') :].split("</table>")[0]
    assert re.findall(r'<tr class="([^"]*)"><td class="num">(\d+)</td>', posts) == [
        ("post", "1"),
        ("post changed", "2"),
    ]
    assert "#6–#10" in posts and "changed: trace_id: (absent) → &lt;script&gt;alert(1)&lt;/script&gt;" in posts
    assert "<script" not in page.lower()
    same = fetch(open_api, "/threads/t-same")[2]
    assert 'id="metadata-changed"' not in same and "as the first POST" in same
    assert len(bubbles(same)) == 10  # both POSTs' messages, in order


def test_unknown_thread_is_a_404_page(open_api):
    status, headers, page = fetch(open_api, "/threads/missing%3Cb%3E")
    assert status == 404 and headers["Content-Type"].startswith("text/html")
    assert "No thread with id" in page and "missing&lt;b&gt;" in page and "<b>" not in page


def test_thread_content_is_escaped(open_api):
    evil_id = '"><img src=x onerror=alert(1)>'
    open_api.store.post_thread(
        {
            "id": evil_id,
            "metadata": {"user_id": XSS, "<b>key</b>": "</td><script>alert(2)</script>"},
            "messages": [
                {"role": "user", "message": XSS},
                {"type": "tool", "name": XSS, "input": {"q": XSS}, "observation": XSS},
            ],
        }
    )
    listing = fetch(open_api, "/")[2]
    detail = fetch(open_api, "/threads/%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E")[2]
    for page in (listing, detail):
        assert "<script>alert" not in page and "<img" not in page and "<b>key" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "<script" not in page.lower()
    assert 'href="/threads/%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E"' in listing
    assert "&lt;/td&gt;&lt;script&gt;alert(2)&lt;/script&gt;" in detail


def test_view_pages_carry_strict_headers(open_api):
    open_api.store.post_thread(thread("t-1"))
    for path in ("/", "/threads/t-1", "/threads/none"):
        headers = fetch(open_api, path)[1]
        assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert "script-src" not in CONTENT_SECURITY_POLICY and "default-src 'none'" in CONTENT_SECURITY_POLICY
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Cache-Control"] == "no-store" and headers["Referrer-Policy"] == "no-referrer"


# --- the token ---------------------------------------------------------------------------------------------------


def test_view_with_a_token_is_no_open_door(local_api):
    local_api.store.post_thread(thread("t-1"))
    cookie_name = f"{COOKIE_PREFIX}{local_api.port}"

    for path in ("/", "/threads/t-1", "/threads/missing"):
        status, headers, page = fetch(local_api, path)
        assert (status, headers["Set-Cookie"]) == (401, None)
        assert "Token required" in page and "t-1" not in page and "When does" not in page

    status, headers, page = fetch(local_api, "/?token=wrong-token")
    assert (status, headers["Set-Cookie"]) == (401, None)
    assert "wrong-token" not in page and TOKEN not in page

    status, headers, _ = fetch(local_api, f"/?user_id=u-1&token={TOKEN}&page=2")
    assert status == 303
    assert headers["Location"] == "/?user_id=u-1&page=2"  # the token leaves the address bar
    cookie = headers["Set-Cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite", "path"} <= attributes and "SameSite=Strict" in cookie
    assert cookie.startswith(f"{cookie_name}={cookie_value(TOKEN)};") and TOKEN not in cookie
    assert fetch(local_api, f"/threads/t-1?token={TOKEN}")[1]["Location"] == "/threads/t-1"

    with_cookie = {"Cookie": f"{cookie_name}={cookie_value(TOKEN)}"}
    assert listed_ids(fetch(local_api, "/", with_cookie)[2]) == ["t-1"]
    assert fetch(local_api, "/threads/t-1", with_cookie)[0] == 200
    assert fetch(local_api, "/threads/missing", with_cookie)[0] == 404
    assert fetch(local_api, "/", {"Cookie": f"{cookie_name}={cookie_value('other')}"})[0] == 401
    assert fetch(local_api, "/", {"Cookie": f"{COOKIE_PREFIX}1={cookie_value(TOKEN)}"})[0] == 401  # other port's

    assert fetch(local_api, "/threads/t-1", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert fetch(local_api, "/", {"Authorization": "Bearer wrong-token"})[0] == 401
    assert fetch(local_api, "/", {"Authorization": "Bearer wrong-token", **with_cookie})[0] == 401

    # the cookie opens the view only: it is no bearer for the API, nor a cookie the API takes
    status, _, body = fetch(local_api, "/api/v1/conversations", {"Authorization": f"Bearer {cookie_value(TOKEN)}"})
    assert status == 401 and json.loads(body)["error"] == "invalid bearer token"
    assert fetch(local_api, "/api/v1/conversations", with_cookie)[0] == 401


def test_view_without_a_token_ignores_one(open_api):
    status, headers, _ = fetch(open_api, "/?token=anything")
    assert (status, headers["Set-Cookie"]) == (200, None)


# --- in Chromium ----------------------------------------------------------------------------------------------------


def _browser_problem() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright not installed: pip install playwright (the browser itself comes from Debian)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    problem = _browser_problem()
    if problem is not None:
        if os.environ.get("CI") or os.environ.get("OTEL_CONTEXT_BROWSER_TESTS") == "required":
            pytest.fail(f"browser tests must run in CI, but {problem}")
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    context.set_default_timeout(15_000)
    tab = context.new_page()
    dialogs: list[str] = []
    tab.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    tab.dialogs = dialogs
    yield tab
    context.close()


def conversation(tab: Any) -> list[tuple[str, str, str]]:
    """(type, role, text) of each bubble on a thread page, as the browser renders them."""
    return [
        (b.get_attribute("data-type"), b.get_attribute("data-role"), b.locator(".text").inner_text())
        for b in tab.locator("article.msg").all()
    ]


@pytest.mark.timeout(120)
def test_demo_threads_in_chromium(app, local_api, page):
    run_app()
    app.flush()
    assert local_api.store.count() == 3
    started = dt.datetime.now(dt.timezone.utc)

    page.goto(local_api.url + "/")
    assert "Token required" in page.locator("h1").inner_text()
    page.goto(f"{local_api.url}/?token={TOKEN}")
    assert page.url == local_api.url + "/"  # redirected: the token is not left in the address bar
    [cookie] = page.context.cookies()
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["value"]) == (True, "Strict", cookie_value(TOKEN))

    rows = page.locator("table.threads tbody tr")
    assert rows.count() == 3
    snippets = page.locator("td.snippet").all_inner_texts()  # in arrival order, which delivery does not fix
    assert sorted(snippets) == ["I love programming.", "When does my order ship?", "colorful socks"]
    created = page.locator("table.threads tbody tr td:first-child").first.inner_text()
    assert abs(dt.datetime.strptime(created, "%Y-%m-%d %H:%M:%S.%f UTC").replace(tzinfo=dt.timezone.utc) - started) < (
        dt.timedelta(minutes=1)
    )
    # the inline stylesheet is allowed by the CSP hash: the header really is dark
    assert page.locator("header").evaluate("h => getComputedStyle(h).backgroundColor") == "rgb(36, 41, 47)"

    page.fill("input[name=user_id]", "u-123")
    page.click("button[type=submit]")
    page.wait_for_url("**/?user_id=u-123*")
    assert rows.count() == 1
    assert page.locator("td.snippet").inner_text() == "When does my order ship?"
    assert page.locator("#summary").inner_text().startswith("1 thread matching user_id = u-123")

    page.locator("a.thread-link").click()
    page.wait_for_url("**/threads/*")
    assert conversation(page) == [
        ("message", "user", "When does my order ship?"),
        ("message", "assistant", "Your order ships tomorrow."),
    ]
    metadata = dict(
        zip(
            page.locator("table.metadata th").all_inner_texts(),
            page.locator("table.metadata td").all_inner_texts(),
            strict=True,
        )
    )
    assert (metadata["user_id"], metadata["session_id"]) == ("u-123", "s-42")
    assert "workflow" not in metadata  # a session thread: the run's own facts are on its messages

    page.click("text=← all threads")
    page.locator("tr", has_text="I love programming.").locator("a.thread-link").click()
    assert conversation(page) == [
        ("message", "system", "You are a helpful assistant that translates English to French."),
        ("message", "user", "I love programming."),
        ("message", "assistant", "J'adore la programmation."),
    ]
    assert page.locator("article.msg-user").evaluate("b => getComputedStyle(b).alignSelf") == "flex-end"
    assert page.dialogs == []


@pytest.mark.timeout(60)
def test_script_in_a_message_is_text_in_chromium(open_api, page):
    open_api.store.post_thread({"id": "xss", "messages": [{"role": "user", "message": XSS}]})

    page.goto(open_api.url + "/")
    assert page.locator("td.snippet").inner_text() == XSS
    page.goto(open_api.url + "/threads/xss")
    assert conversation(page) == [("message", "user", XSS)]
    assert page.locator("script").count() == 0
    assert page.dialogs == []
