"""A local stand-in for the Context API: same paths, bearer auth and JSON, threads kept in SQLite.

The real `context-python` client can write threads here and read them back, so the whole delivery path is
exercised over real HTTP without a Context account. A thread POST with a known id appends, as Context's does
(the rules and their sources: `store.py`), so a resent upload shows up as duplicate messages. Fault injection
(latency, error statuses, connection resets, answers lost after the write) lets delivery tests prove retries,
backoff and that nothing is stored twice against a server that misbehaves on cue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import signal
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, NoReturn

from aiohttp import web

from .. import serving
from ..serving import bind_socket
from . import view, view_access
from .auth import BearerAuth
from .defaults import DEFAULT_HOST, DEFAULT_PORT
from .faults import FaultPlan, FaultSpecError
from .forgery import WRITE_METHODS, forgery_guard
from .store import ThreadStore
from .validation import (
    ValidationError,
    canonical_timestamp,
    parse_conversation_body,
    parse_thread_updates,
)

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_PER_PAGE = 1000
MAX_PAGE_BYTES = 4 * 1024 * 1024  # a listing's answer stops adding threads here (it always has one)
RESUME_PAGE = 500_000_000  # `page` RESUME_PAGE + n: the listing from its n-th thread (after a page cut short)
API_PREFIX = "/api/"
ADMIN_PREFIX = "/_admin/"
SHUTDOWN_TIMEOUT_S = 1.0
HEADER_TIMEOUT_S = 10.0  # also the idle keep-alive timeout
BODY_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 1000  # lowered to the open-files limit minus a headroom

_logger = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ConnectionDropped(Exception):
    """Raised after a fault aborted the TCP connection: there is nobody left to answer."""


class ServerStats:
    """Counters of `/api` traffic for `/_admin/stats`; updated on the loop, read from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._responses: Counter[str] = Counter()

    def received(self, key: str) -> None:
        with self._lock:
            self._requests[key] += 1

    def answered(self, outcome: str) -> None:
        with self._lock:
            self._responses[outcome] += 1

    def describe(self, store: ThreadStore) -> dict[str, Any]:
        with self._lock:
            requests, responses = dict(self._requests), dict(self._responses)
        return {"requests": requests, "responses": responses, **store.summary()}


STORE = web.AppKey("store", ThreadStore)
FAULTS = web.AppKey("faults", FaultPlan)
AUTH = web.AppKey("auth", BearerAuth)
STATS = web.AppKey("stats", ServerStats)


def create_app(
    store: ThreadStore,
    token: str | None = None,
    faults: FaultPlan | None = None,
    *,
    fault_injection: bool = False,
    allowed_hosts: tuple[str, ...] = (),
) -> web.Application:
    """The aiohttp application; `faults` is shared, so changing it in place changes the running server.

    `POST /_admin/faults` exists only with `fault_injection`: without a token, any page a browser opens
    could otherwise break the server for the developer.
    """
    app = web.Application(
        middlewares=[answer_errors, forgery_guard(json_error, allowed_hosts), inject_faults, require_token],
        client_max_size=MAX_BODY_BYTES,
    )
    app[STORE] = store
    app[FAULTS] = faults if faults is not None else FaultPlan()
    app[AUTH] = BearerAuth(token)
    app[STATS] = ServerStats()
    app.router.add_post("/api/v1/log/conversation/thread", post_thread)
    app.router.add_patch("/api/v1/log/conversation/thread/{id:.+}", patch_thread)  # ids may hold "/"
    app.router.add_post("/api/v1/log/conversation/upsert", post_upsert)
    app.router.add_post("/api/v1/log/conversation", post_conversation)
    app.router.add_get("/api/v1/conversations", get_conversations)
    app.router.add_get("/api/v1/conversations/{id:.+}", get_conversation)
    app.router.add_get("/healthz", healthz)
    if fault_injection:
        app.router.add_get("/_admin/faults", get_faults)
        app.router.add_post("/_admin/faults", post_faults)
    app.router.add_get("/_admin/stats", get_stats)
    app.router.add_get("/", view_threads)
    app.router.add_get("/threads/{id:.+}", view_thread)
    return app


# --- middlewares: outermost first ---------------------------------------------------------------------------


@web.middleware
async def answer_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as JSON `{"error": ...}`, and the `/api` request and answer counted."""
    counted = request.path.startswith(API_PREFIX)
    stats = request.app[STATS]
    if counted:
        stats.received(f"{request.method} {_route(request)}")
    try:
        response = await handler(request)
    except ConnectionDropped:
        if counted:
            stats.answered("reset")
        return web.Response()  # the transport is gone; aiohttp's write fails quietly
    except web.HTTPException as exc:
        response = _http_error(request, exc)
    except (ValidationError, FaultSpecError) as exc:
        response = json_error(400, str(exc))
    except Exception as exc:
        _logger.exception("local Context API failed on %s %s", request.method, request.path)
        response = json_error(500, f"internal error: {type(exc).__name__}: {exc}")
    if counted:
        stats.answered(str(response.status))
    return response


@web.middleware
async def inject_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Apply the fault plan to `/api` requests only; health and admin always answer."""
    if not request.path.startswith(API_PREFIX):
        return await handler(request)
    plan = request.app[FAULTS].snapshot()
    if plan.resets(time.monotonic()):
        drop_connection(request)
    if plan.latency_s > 0:
        await asyncio.sleep(plan.latency_s)
    status = plan.failure_status(time.monotonic())
    if status is not None and request.method in WRITE_METHODS:
        retry_after = plan.retry_after_header(status)
        headers = {"Retry-After": retry_after} if retry_after else None
        return json_error(status, f"injected fault: HTTP {status}", headers=headers)
    if plan.loses_ack(time.monotonic()) and request.method in WRITE_METHODS:
        await handler(request)  # the write is stored...
        drop_connection(request)  # ...and its answer lost, so the client retries a write that worked
    if request.method not in WRITE_METHODS:
        return await handler(request)
    answer = await handler(request)
    if plan.stored_latency_s > 0:  # stored, answered too late for a client's timeout
        await asyncio.sleep(plan.stored_latency_s)
    stored_status = plan.status_after_store(time.monotonic())
    if stored_status is not None:  # stored, then a gateway's error: the client cannot tell it worked
        return json_error(stored_status, f"injected fault after the write was stored: HTTP {stored_status}")
    return answer


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith((API_PREFIX, ADMIN_PREFIX)):
        problem = request.app[AUTH].problem(request.headers.get("Authorization"))
        if problem is not None:
            return json_error(401, problem, headers={"WWW-Authenticate": "Bearer"})
    return await handler(request)


def drop_connection(request: web.Request) -> NoReturn:
    """Reset the TCP connection (RST, no answer), as a crashed or restarting server would."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # linger 0: close sends RST instead of FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    raise ConnectionDropped


# --- API handlers --------------------------------------------------------------------------------------------


async def post_thread(request: web.Request) -> web.Response:
    """Append the messages to the thread with the body's id (created if new), or start one; answers the id."""
    conv = parse_conversation_body(await read_json(request))
    thread_id = request.app[STORE].post_thread(conv, request.query.get("tenant_id"))
    return web.json_response({"status": "success", "data": {"id": thread_id}}, status=201)


async def post_conversation(request: web.Request) -> web.Response:
    """The legacy `log/conversation`: each request is a new conversation."""
    conv = parse_conversation_body(await read_json(request))
    thread_id = request.app[STORE].add_conversation(conv, request.query.get("tenant_id"))
    return web.json_response({"status": "success", "data": {"id": thread_id}}, status=201)


async def post_upsert(request: web.Request) -> web.Response:
    """The deprecated `upsert` (the old LangChain handler's): the whole history, matched to an earlier one."""
    conv = parse_conversation_body(await read_json(request))
    for i, message in enumerate(conv["messages"]):
        if message.get("type") == "event":
            raise ValidationError(f"conversation.messages[{i}].type: custom events are not accepted by upsert")
    thread_id = request.app[STORE].upsert_conversation(conv, request.query.get("tenant_id"))
    return web.json_response({"status": "success", "data": {"id": thread_id}}, status=201)


async def patch_thread(request: web.Request) -> web.Response:
    thread_id = request.match_info["id"]
    updates = parse_thread_updates(await read_json(request))
    if not request.app[STORE].rate(thread_id, updates):
        return json_error(404, f"no thread with id {thread_id!r}")
    return web.Response(status=200)


async def get_conversation(request: web.Request) -> web.Response:
    thread_id = request.match_info["id"]
    thread = request.app[STORE].get(thread_id)
    if thread is None:
        return json_error(404, f"no conversation with id {thread_id!r}")
    return web.json_response(conversation_response(thread))


async def get_conversations(request: web.Request) -> web.Response:
    """A page of threads, newest first; without `start_time` every thread (the real API: the last 6 days).

    A page holds `per_page` threads, fewer when they would pass `MAX_PAGE_BYTES` (always one): its
    `next_page` then resumes at the first thread left out (a page number from `RESUME_PAGE`), so a
    client following `next_page` sees every thread once, however large.
    """
    query = request.query
    page = _positive_int(query, "page", 1)
    per_page = min(_positive_int(query, "per_page", 20), MAX_PER_PAGE)
    filters = {
        "start_time": _time_param(query, "start_time"),
        "end_time": _time_param(query, "end_time"),
        "user_id": query.get("user_id"),
        "session_id": query.get("session_id"),
        "tenant_id": query.get("tenant_id"),
    }
    start = page - RESUME_PAGE if page > RESUME_PAGE else (page - 1) * per_page
    threads, total = _page_of_threads(request.app[STORE], filters, start, per_page)
    paging = pagination(total, page, per_page)
    end = start + len(threads)
    if page > RESUME_PAGE or (len(threads) < per_page and end < total):  # cut short by bytes, or after such a page
        paging.update(previous_page=None, next_page=RESUME_PAGE + end if end < total else None)
    body = f'{{"conversations": [{", ".join(threads)}], "pagination": {json.dumps(paging)}}}'
    return web.Response(text=body, content_type="application/json")


def _page_of_threads(store: ThreadStore, filters: dict[str, Any], start: int, per_page: int) -> tuple[list[str], int]:
    """Up to `per_page` threads from the `start`-th, as JSON, and the total; the threads stop before
    their JSON passes `MAX_PAGE_BYTES`. They are read one, then as many as the bytes left would hold at
    the size of the largest so far, so a page of large threads is never all in memory at once."""
    threads: list[str] = []
    size = largest = total = 0
    while len(threads) < per_page:
        offset = start + len(threads)
        wanted = max(1, (MAX_PAGE_BYTES - size) // largest) if largest else 1
        chunk = _aligned(offset, min(wanted, per_page - len(threads)))
        items, total = store.list(page=offset // chunk + 1, per_page=chunk, **filters)
        for item in items:
            text = json.dumps(conversation_response(item))
            if threads and size + len(text) > MAX_PAGE_BYTES:
                return threads, total
            threads.append(text)
            size, largest = size + len(text) + 2, max(largest, len(text))
        if len(items) < chunk:
            break
    return threads, total


def _aligned(offset: int, most: int) -> int:
    """The largest power of two up to `most` dividing `offset`: the store's pages start at multiples of their size."""
    size = 1
    while size * 2 <= most and offset % (size * 2) == 0:
        size *= 2
    return size


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "threads": request.app[STORE].count()})


# --- admin handlers ------------------------------------------------------------------------------------------


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[FAULTS].describe())


async def post_faults(request: web.Request) -> web.Response:
    """Replace the fault plan: durations are seconds from now, `{}` clears every fault."""
    spec = await read_json(request)
    if not isinstance(spec, dict):
        raise ValidationError('body: must be a JSON object of faults, e.g. {"status": 500, "duration_s": 10}')
    request.app[FAULTS].assign(FaultPlan.from_spec(spec))
    return web.json_response(request.app[FAULTS].describe())


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATS].describe(request.app[STORE]))


# --- web view handlers (HTML; rendering in view.py, access rules in view_access.py) -------------------------


async def view_threads(request: web.Request) -> web.Response:
    """`GET /`: a page of threads, newest first, filtered by `user_id` / `session_id`."""
    denied = view_access.check(request, request.app[AUTH])
    if denied is not None:
        return denied
    query = request.query
    user_id = query.get("user_id", "").strip() or None
    session_id = query.get("session_id", "").strip() or None
    page = _view_int(query.get("page"), 1)
    per_page = min(_view_int(query.get("per_page"), view.PER_PAGE), view.MAX_PER_PAGE)
    items, total = request.app[STORE].list(page=page, per_page=per_page, user_id=user_id, session_id=session_id)
    return view_access.html_response(view.threads_page(items, total, page, per_page, user_id, session_id))


async def view_thread(request: web.Request) -> web.Response:
    """`GET /threads/{id}`: one thread as a conversation, or a 404 page."""
    denied = view_access.check(request, request.app[AUTH])
    if denied is not None:
        return denied
    thread_id = request.match_info["id"]
    thread = request.app[STORE].get(thread_id)
    if thread is None:
        return view_access.html_response(view.not_found_page(thread_id), status=404)
    return view_access.html_response(view.thread_page(thread))


def _view_int(raw: str | None, default: int) -> int:
    """A page number from a hand-edited URL: anything but a positive integer means the default; capped for SQLite."""
    try:
        value = int(raw or "")
    except ValueError:
        return default
    return min(value, 10**9) if value >= 1 else default


# --- rendering and parsing -----------------------------------------------------------------------------------


def conversation_response(thread: dict[str, Any]) -> dict[str, Any]:
    """A stored thread as `ConversationResponse`: analysis fields Context computes are left neutral."""
    return {
        "id": thread["id"],
        "metadata": thread["metadata"],
        "sentiment_trend": "flat",
        "topics": [],
        "suggested_topics": [],
        "messages": [message_response(m) for m in thread["messages"]],
        "feedback": thread["feedback"],
        "tenant_id": thread["tenant_id"],
        "created_at": thread["created_at"],
        "updated_at": thread["updated_at"],
    }


def message_response(message: dict[str, Any]) -> dict[str, Any]:
    """`MessageResponse`: the stored message (tool fields included) with the model's defaults filled in."""
    return {"type": "message", "rating": None, "topics": [], "suggested_topics": [], **message}


def pagination(total: int, page: int, per_page: int) -> dict[str, int | None]:
    page_count = math.ceil(total / per_page)
    return {
        "total_records": total,
        "per_page": per_page,
        "current_page": page,
        "previous_page": page - 1 if page > 1 else None,
        "next_page": page + 1 if page < page_count else None,
        "page_count": page_count,
    }


async def read_json(request: web.Request) -> Any:
    """The body as JSON; a 413 past `client_max_size`, a 400 saying where the JSON breaks."""
    try:
        raw = await asyncio.wait_for(request.read(), BODY_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise web.HTTPRequestTimeout(headers={"Connection": "close"}) from None
    if not raw.strip():
        raise ValidationError("body: empty, expected JSON")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise ValidationError(f"body: malformed JSON, not UTF-8: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise ValidationError(f"body: malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def _reject_constant(name: str) -> NoReturn:
    """NaN and Infinity are not JSON; stored, they would make every later read unparseable."""
    raise ValidationError(f"body: malformed JSON: {name} is not a JSON value")


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    if exc.status == 404:
        message = f"not found: {request.method} {request.path}"
    elif exc.status == 405:
        message = f"method {request.method} not allowed on {request.path}"
    elif exc.status == 413:
        message = f"body too large: {exc.text}"
    else:
        message = exc.reason
    headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
    return json_error(exc.status, message, headers=headers)


def _route(request: web.Request) -> str:
    """The route template (`/api/v1/conversations/{id}`), so stats do not grow a key per thread id."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


MAX_QUERY_INT = 1_000_000_000


def _positive_int(query: Any, name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"{name}: must be a positive integer, got {raw!r}") from None
    if not 1 <= value <= MAX_QUERY_INT:  # SQLite integers are 64-bit: a larger page would be a 500
        raise ValidationError(f"{name}: must be an integer from 1 to {MAX_QUERY_INT}, got {raw!r}")
    return value


def _time_param(query: Any, name: str) -> datetime | None:
    raw = query.get(name)
    if not raw:
        return None
    if "T" in raw:  # an unencoded "+01:00" in a hand-written URL arrives as " 01:00"
        raw = raw.replace(" ", "+")
    return datetime.fromisoformat(canonical_timestamp(raw, name).replace("Z", "+00:00"))


# --- running it ----------------------------------------------------------------------------------------------


def base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def start_site(app: web.Application, sock: socket.socket) -> web.AppRunner:
    """Serve `app` on `sock` with the header timeout, the connection cap and an access log without queries."""
    quiet = serving.ThrottledLog(_logger)
    serving.quiet_accept_errors(asyncio.get_running_loop(), quiet)
    serving.quiet_protocol_errors(quiet)
    runner = serving.runner(app, HEADER_TIMEOUT_S, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    await serving.CappedSockSite(runner, sock, serving.connection_cap(MAX_CONNECTIONS)).start()
    return runner


class LocalContextAPI:
    """The server in a background thread with its own event loop, for tests and demos.

    Use: `with LocalContextAPI(token="t") as api:` then point a `ContextAPI(..., endpoint=api.url)` at it
    and pass `enforce_https=False` per call (plain http on loopback).
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = 0,
        db_path: str = ":memory:",
        token: str | None = None,
        faults: FaultPlan | None = None,
        *,
        fault_injection: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.token = token
        self.faults = faults if faults is not None else FaultPlan()
        self.store = ThreadStore(db_path)
        self._app = create_app(self.store, token, self.faults, fault_injection=fault_injection)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return base_url(self.host, self.port)

    def start(self, timeout_s: float = 10.0) -> LocalContextAPI:
        """Return once the server accepts connections (port 0: a free port, then in `.port`)."""
        sock = bind_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, args=(sock,), name="local-context-api", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"local Context API did not start within {timeout_s} s")
        if self._error is not None:
            raise RuntimeError(f"local Context API failed to start: {self._error}") from self._error
        return self

    def _serve(self, sock: socket.socket) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            runner = loop.run_until_complete(start_site(self._app, sock))
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            sock.close()
            loop.close()
            return
        self._loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()

    def set_faults(self, **spec: Any) -> None:
        """Same keys as `POST /_admin/faults`: latency_s, status, duration_s, retry_after, reset_s, down_s."""
        self.faults.assign(FaultPlan.from_spec(spec))

    def clear_faults(self) -> None:
        self.faults.clear()

    def stats(self) -> dict[str, Any]:
        return self._app[STATS].describe(self.store)

    def stop(self) -> None:
        """Stop serving and close the database; in-flight requests get `SHUTDOWN_TIMEOUT_S` to finish."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
        self._loop = self._thread = None
        self.store.close()

    def __enter__(self) -> LocalContextAPI:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def run(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    db: str = ":memory:",
    token: str | None = None,
    faults: FaultPlan | None = None,
    *,
    fault_injection: bool = False,
    allowed_hosts: tuple[str, ...] = (),
) -> None:
    """Serve in the foreground until SIGTERM or SIGINT; prints one "listening on" line a parent can wait for."""
    app_options = {"fault_injection": fault_injection, "allowed_hosts": allowed_hosts}
    asyncio.run(_serve_until_signalled(host, port, db, token, faults, app_options))


async def _serve_until_signalled(
    host: str, port: int, db: str, token: str | None, faults: FaultPlan | None, app_options: dict[str, Any]
) -> None:
    store = ThreadStore(db)
    sock = bind_socket(host, port)
    bound_port = sock.getsockname()[1]
    runner = await start_site(create_app(store, token, faults, **app_options), sock)
    stop = asyncio.Event()
    _on_signals(stop.set)
    print(f"Local Context API listening on {base_url(host, bound_port)}", flush=True)
    print(f"The stored threads, in a browser: {base_url(host, bound_port)}/", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        store.close()


def _on_signals(callback: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C still ends asyncio.run
            loop.add_signal_handler(sig, callback)
