"""HTML pages of the local API's web view: what otel-context sent, as a thread list and as conversations.

Pure functions: stored threads (the dicts `ThreadStore` returns) in, a complete HTML document out. No
JavaScript and no external assets: one inline stylesheet, allowed by its hash in `CONTENT_SECURITY_POLICY`, so
even markup that slipped through could run nothing. Every value taken from a thread or a request goes through
`html.escape` (thread content is user data), and every link is built here with its parts URL-quoted.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

PER_PAGE = 20
MAX_PER_PAGE = 200
SNIPPET_CHARS = 80
ROLES = ("system", "user", "assistant")
RATINGS = {1: ("👍", "rated helpful"), -1: ("👎", "rated unhelpful")}

CSS = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:.7rem 1.5rem;display:flex;gap:1rem;align-items:baseline}
header a{color:#fff;text-decoration:none;font-weight:600}
header span{color:#afb8c1;font-size:.9rem}
main{max-width:72rem;margin:0 auto;padding:1rem 1.5rem 3rem}
a{color:#0969da}
h1{font-size:1.3rem;margin:.5rem 0 1rem;word-break:break-all}
h2{font-size:1.05rem;margin:1.5rem 0 .5rem}
form.filters{display:flex;flex-wrap:wrap;gap:.75rem;align-items:end;margin-bottom:1rem}
form.filters label{display:flex;flex-direction:column;font-size:.8rem;color:#57606a}
form.filters input{font:inherit;padding:.3rem .5rem;border:1px solid #d0d7de;border-radius:6px;min-width:14rem}
form.filters button{font:inherit;padding:.3rem .9rem;border:1px solid #1f883d;border-radius:6px;background:#1f883d;
color:#fff;cursor:pointer}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d0d7de;border-radius:6px}
th,td{text-align:left;padding:.45rem .6rem;border-bottom:1px solid #eaeef2;vertical-align:top}
th{background:#f6f8fa;font-size:.8rem;color:#57606a;font-weight:600}
td.id,td.mono,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.82rem}
td.num{text-align:right}
table.kv{width:auto;min-width:28rem}
table.kv th{width:12rem}
.muted{color:#6e7781}
.empty{padding:2rem;text-align:center;color:#6e7781;background:#fff;border:1px dashed #d0d7de;border-radius:6px}
nav.pages{display:flex;gap:1rem;align-items:center;margin-top:1rem}
.conversation{display:flex;flex-direction:column;gap:.7rem;max-width:50rem}
.msg{border-radius:12px;padding:.55rem .8rem;max-width:85%;border:1px solid transparent;background:#fff}
.msg .who{font-size:.72rem;font-weight:700;text-transform:uppercase;letter-spacing:.04em;color:#57606a}
.msg .who .name{text-transform:none;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.msg .text{white-space:pre-wrap;word-wrap:break-word;margin-top:.15rem}
.msg .foot{font-size:.72rem;color:#6e7781;margin-top:.3rem;display:flex;gap:.6rem;flex-wrap:wrap}
.msg-user{align-self:flex-end;background:#ddf4ff;border-color:#b6e3ff}
.msg-assistant{align-self:flex-start;background:#fff;border-color:#d0d7de}
.msg-system{align-self:center;background:#f6f8fa;border-color:#d0d7de;font-size:.88rem;color:#424a53;max-width:95%}
.msg-other{align-self:flex-start;background:#fff8c5;border-color:#eac54f}
.msg-tool{align-self:flex-start;background:#fbefff;border-color:#e8cfff;font-size:.88rem}
.msg-event{align-self:center;background:transparent;border:1px dashed #8c959f;font-style:italic;font-size:.85rem;
border-radius:999px;padding:.25rem .9rem}
.msg dl{margin:.3rem 0 0;display:grid;grid-template-columns:auto 1fr;gap:.15rem .6rem}
.msg dt{font-size:.75rem;color:#57606a;font-weight:600}
.msg dd{margin:0}
.msg pre{margin:0;white-space:pre-wrap;word-wrap:break-word;font-size:.8rem}
.rating{font-style:normal}
.warn{background:#fff8c5;border:1px solid #d4a72c;border-radius:6px;padding:.5rem .8rem;color:#633c01}
.badge{display:inline-block;margin-left:.4rem;padding:0 .4rem;border-radius:999px;font-size:.72rem;
background:#fff8c5;border:1px solid #d4a72c;color:#633c01;white-space:nowrap}
tr.changed td{background:#fff8c5}
"""

_CSS_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def e(value: Any) -> str:
    """Escaped text for element content and quoted attributes; None is empty."""
    return "" if value is None else html.escape(str(value), quote=True)


# --- pages ----------------------------------------------------------------------------------------------------


def threads_page(
    threads: list[dict[str, Any]],
    total: int,
    page: int = 1,
    per_page: int = PER_PAGE,
    user_id: str | None = None,
    session_id: str | None = None,
) -> str:
    """One page of the thread list (newest first, as the store gives them) with the filter form and page links."""
    filters = {"user_id": user_id, "session_id": session_id}
    count = max(1, math.ceil(total / per_page))
    shown = f"{total} thread{'' if total == 1 else 's'}"
    if user_id or session_id:
        shown += " matching " + ", ".join(f"{k} = {v}" for k, v in filters.items() if v)
    body = [
        "<h1>Threads</h1>",
        _filter_form(user_id, session_id, per_page),
        f'<p class="muted" id="summary">{e(shown)} · page {page} of {count}</p>',
        _threads_table(threads) if threads else '<div class="empty">No threads here yet.</div>',
        _pager(page, count, per_page, filters),
    ]
    return document("Threads", "\n".join(body))


def thread_page(thread: dict[str, Any]) -> str:
    """One thread as a conversation: a bubble per message, then its fields, metadata and POSTs as tables.

    A thread whose POSTs did not all carry the first POST's metadata (Context asks that they do) is marked.
    """
    messages = thread.get("messages") or []
    bubbles = "\n".join(message_bubble(m, i) for i, m in enumerate(messages, 1))
    posts = thread.get("posts") or []
    fields = {
        "id": thread.get("id"),
        "created": _when(thread.get("created_at")),
        "updated": _when(thread.get("updated_at")),
        "POSTs": thread.get("writes"),
        "messages": len(messages),
        "tenant_id": thread.get("tenant_id"),
        "feedback": thread.get("feedback"),
    }
    metadata = thread.get("metadata") or {}
    body = [
        '<p><a href="/">← all threads</a></p>',
        f'<h1>Thread <span class="mono">{e(thread.get("id"))}</span></h1>',
        _metadata_changed_note(thread),
        f'<section class="conversation" aria-label="conversation">{bubbles}</section>',
        "<h2>Thread</h2>",
        _kv_table({k: v for k, v in fields.items() if v is not None}, "thread-fields"),
        "<h2>Metadata</h2>",
        _kv_table(dict(sorted(metadata.items())), "metadata") if metadata else '<p class="muted">No metadata.</p>',
        *(("<h2>POSTs</h2>", _posts_table(posts, metadata)) if len(posts) > 1 else ()),
    ]
    return document(f"Thread {thread.get('id')}", "\n".join(body))


def not_found_page(thread_id: str) -> str:
    body = f'<h1>Not found</h1><p>No thread with id <span class="mono">{e(thread_id)}</span>.</p>'
    return document("Not found", body + '<p><a href="/">← all threads</a></p>')


def unauthorized_page(reason: str) -> str:
    """The 401 page: why, and how to get in, without ever showing a token."""
    body = (
        "<h1>Token required</h1>"
        f"<p>{e(reason)}</p>"
        "<p>This local API was started with <code>--token</code>. Open <code>/?token=YOUR_TOKEN</code> once in "
        "this browser (it then keeps an HttpOnly cookie), or send <code>Authorization: Bearer YOUR_TOKEN</code>.</p>"
    )
    return document("Token required", body)


def document(title: str, body: str) -> str:
    """The page frame: one inline stylesheet, no scripts, no external assets."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="referrer" content="no-referrer"><title>{e(title)} · otel-context local API</title>'
        f"<style>{CSS}</style></head>\n"
        '<body><header><a href="/">otel-context</a><span>threads in the local Context API</span></header>\n'
        f"<main>\n{body}\n</main></body></html>\n"
    )


# --- pieces ---------------------------------------------------------------------------------------------------


def message_bubble(message: Mapping[str, Any], position: int) -> str:
    """A message, tool step or event as a bubble; `data-type` and `data-role` say which."""
    kind = message.get("type") or "message"
    role = message.get("role")
    if kind in ("tool", "event"):
        css, label = kind, e(kind)
        if message.get("name"):
            label += f' · <span class="name">{e(message["name"])}</span>'
    else:
        css, label = (role if role in ROLES else "other"), e(role or "message")
    parts = [f'<div class="who">{label}</div>']
    if kind == "tool":
        steps = {k: message.get(k) for k in ("input", "thought", "observation", "message")}
        parts.append(_definitions({k: v for k, v in steps.items() if v not in (None, "")}))
    elif message.get("message") is not None:
        parts.append(f'<div class="text">{e(message["message"])}</div>')
    parts.append(_footer(message, position))
    return (
        f'<article class="msg msg-{css}" data-type="{e(kind)}" data-role="{e(role)}" data-position="{position}">'
        + "".join(parts)
        + "</article>"
    )


def first_user_message(thread: Mapping[str, Any]) -> str | None:
    for message in thread.get("messages") or []:
        if message.get("type") in (None, "message") and message.get("role") == "user" and message.get("message"):
            return str(message["message"])
    return None


def shorten(text: str, limit: int = SNIPPET_CHARS) -> str:
    """One line of at most `limit` characters, an ellipsis marking a cut."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def thread_href(thread_id: str) -> str:
    return "/threads/" + quote(thread_id, safe="")


def list_href(page: int = 1, per_page: int = PER_PAGE, **filters: str | None) -> str:
    params: dict[str, str | int] = {k: v for k, v in filters.items() if v}
    if page != 1:
        params["page"] = page
    if per_page != PER_PAGE:
        params["per_page"] = per_page
    return "/?" + urlencode(params) if params else "/"


def _threads_table(threads: Iterable[Mapping[str, Any]]) -> str:
    head = (
        "<tr><th>Created</th><th>Thread</th><th>User</th><th>Session</th><th>Workflow / operation</th>"
        '<th class="num">Messages</th><th>First user message</th></tr>'
    )
    rows = []
    for thread in threads:
        meta = thread.get("metadata") or {}
        flow = " / ".join(str(meta[k]) for k in ("workflow", "operation") if meta.get(k))
        first = first_user_message(thread)
        user, session = meta.get("user_id"), meta.get("session_id")
        mark = (
            '<span class="badge metadata-changed" title="a POST carried other thread metadata than the first">'
            "metadata changed between POSTs</span>"
            if thread.get("metadata_changes")
            else ""
        )
        rows.append(
            '<tr class="thread">'
            f'<td class="mono">{e(_when(thread.get("created_at")))}</td>'
            f'<td class="id"><a class="thread-link" href="{e(thread_href(thread["id"]))}">{e(thread["id"])}</a>'
            f"{mark}</td>"
            f"<td>{_filter_link('user_id', user)}</td>"
            f"<td>{_filter_link('session_id', session)}</td>"
            f"<td>{e(flow)}</td>"
            f'<td class="num">{len(thread.get("messages") or [])}</td>'
            f'<td class="snippet" title="{e(first)}">{e(shorten(first)) if first else ""}</td>'
            "</tr>"
        )
    return f'<table class="threads"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _filter_link(key: str, value: Any) -> str:
    if not value:
        return ""
    return f'<a href="{e(list_href(**{key: str(value)}))}">{e(value)}</a>'  # type: ignore[arg-type]


def _filter_form(user_id: str | None, session_id: str | None, per_page: int) -> str:
    keep = f'<input type="hidden" name="per_page" value="{per_page}">' if per_page != PER_PAGE else ""
    return (
        '<form class="filters" method="get" action="/">'
        f'<label>user_id<input name="user_id" value="{e(user_id)}" placeholder="any user"></label>'
        f'<label>session_id<input name="session_id" value="{e(session_id)}" placeholder="any session"></label>'
        f'{keep}<button type="submit">Filter</button> <a href="/">clear</a></form>'
    )


def _pager(page: int, count: int, per_page: int, filters: Mapping[str, str | None]) -> str:
    links = []
    if page > 1:
        links.append(f'<a rel="prev" href="{e(list_href(min(page - 1, count), per_page, **filters))}">← newer</a>')
    if page < count:
        links.append(f'<a rel="next" href="{e(list_href(page + 1, per_page, **filters))}">older →</a>')
    return f'<nav class="pages">{"".join(links)}</nav>' if links else ""


def _metadata_changed_note(thread: Mapping[str, Any]) -> str:
    """The mark of a thread some POST of which changed the thread metadata; empty when none did."""
    changed = thread.get("metadata_changes") or 0
    if not changed:
        return ""
    posts = thread.get("writes") or 0
    return (
        '<p class="warn" id="metadata-changed" role="note">⚠ Thread metadata changed between POSTs: '
        f"{e(changed)} of {e(posts)} POSTs carried metadata other than the first POST's. Context asks for the "
        "same metadata on every POST of a thread; this thread keeps the first POST's (see POSTs below).</p>"
    )


def _posts_table(posts: Iterable[Mapping[str, Any]], first: Mapping[str, Any]) -> str:
    """Each POST: when, which messages (numbered as the bubbles), and how its thread metadata differed."""
    head = "<tr><th>POST</th><th>Received</th><th>Messages</th><th>Thread metadata</th></tr>"
    rows = []
    for post in posts:
        start, count = post.get("first_position", 0) + 1, post.get("messages", 0)
        span = "none" if count == 0 else f"#{start}" if count == 1 else f"#{start}–#{start + count - 1}"
        if post.get("metadata_changed"):
            css, what = "post changed", "changed: " + _metadata_diff(first, post.get("metadata") or {})
        else:
            css, what = "post", "as the first POST"
        rows.append(
            f'<tr class="{css}"><td class="num">{e(post.get("number"))}</td>'
            f'<td class="mono">{e(_when(post.get("received_at")))}</td>'
            f"<td>{e(span)}</td><td>{e(what)}</td></tr>"
        )
    return f'<table class="posts"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _metadata_diff(first: Mapping[str, Any], other: Mapping[str, Any]) -> str:
    """`key: first -> other` for each key that differs, absent values shown as such."""
    parts = []
    for key in sorted(set(first) | set(other)):
        before, after = first.get(key), other.get(key)
        if before != after:
            parts.append(
                f"{key}: {'(absent)' if before is None else before} → {'(absent)' if after is None else after}"
            )
    return "; ".join(parts)


def _kv_table(rows: Mapping[str, Any], css: str) -> str:
    body = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows.items())
    return f'<table class="kv {e(css)}">{body}</table>'


def _definitions(items: Mapping[str, Any]) -> str:
    body = "".join(f"<dt>{e(k)}</dt><dd><pre>{e(_as_text(v))}</pre></dd>" for k, v in items.items())
    return f"<dl>{body}</dl>"


def _footer(message: Mapping[str, Any], position: int) -> str:
    """Position, timestamp, rating and the message's own metadata, in small print."""
    parts = [f"<span>#{position}</span>"]
    stamp = message.get("event_timestamp")
    if stamp:
        parts.append(f'<time datetime="{e(stamp)}">{e(_when(stamp))}</time>')
    rating = message.get("rating")
    if isinstance(rating, int) and rating in RATINGS:
        mark, words = RATINGS[rating]
        parts.append(f'<span class="rating" title="{words}" aria-label="{words}">{mark}</span>')
    meta = message.get("metadata") or {}
    if meta:
        parts.append('<span class="mono">' + e(", ".join(f"{k}={v}" for k, v in sorted(meta.items()))) + "</span>")
    return '<div class="foot">' + "".join(parts) + "</div>"


def _as_text(value: Any) -> str:
    """Tool input and observation as shown: strings as they are, anything else as indented JSON."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        return repr(value)


def _when(stamp: Any) -> str:
    """`2026-01-01T12:00:00.000Z` as `2026-01-01 12:00:00.000 UTC`; anything unparsable as it came."""
    if not isinstance(stamp, str):
        return "" if stamp is None else str(stamp)
    try:
        moment = datetime.fromisoformat(stamp[:-1] + "+00:00" if stamp.endswith("Z") else stamp)
    except ValueError:
        return stamp
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d} UTC"
