"""Requests a hostile web page could make a developer's browser send to the local API, refused.

Without a token (the default) the API trusts whoever can reach it, which on loopback means the
developer, but also any page their browser opens:

- A page may POST to `http://127.0.0.1:8787/...` without a CORS preflight only with a "simple" content
  type (`text/plain`, form encodings). Writes therefore require `Content-Type: application/json`, which
  a cross-site page cannot send without a preflight this server never grants.
- DNS rebinding points a hostile name at 127.0.0.1, making the page same-origin with the API; its
  requests then carry `Host: hostile.example`. Only a `Host` naming the address the connection arrived
  on (or `localhost` on loopback, or a name given with `--allow-host`) is served.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

JSON = "application/json"
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Refusal = Callable[[int, str], web.StreamResponse]


def host_allowed(request: web.Request, extra_names: frozenset[str]) -> bool:
    """The `Host` header names this server: its local address, loopback's names, or an allowed name."""
    name = _host_name(request.headers.get("Host", ""))
    if not name:
        return False
    if name in extra_names:
        return True
    sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
    local = ipaddress.ip_address(sockname[0].split("%")[0]) if isinstance(sockname, tuple) else None
    if local is not None and local.is_loopback and (name == "localhost" or name.endswith(".localhost")):
        return True
    try:
        given = ipaddress.ip_address(name)
    except ValueError:
        return False
    if local is None:
        return given.is_loopback
    return given == local or (given.is_loopback and local.is_loopback)


def _host_name(header: str) -> str:
    """The name in a `Host` header, without port or IPv6 brackets; "" when it cannot be one."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        return header[1:end] if end > 0 else ""
    name = header.rsplit(":", 1)[0] if header.count(":") == 1 else header
    return "" if any(c in name for c in " /\\@?#") else name


def forgery_guard(refuse: Refusal, allowed_hosts: Iterable[str] = ()) -> Callable[..., Awaitable[web.StreamResponse]]:
    """A middleware refusing foreign `Host` headers (421) and non-JSON writes (415)."""
    extra = frozenset(name.strip().lower() for name in allowed_hosts if name.strip())

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not host_allowed(request, extra):
            return refuse(421, "this server answers only to its own address (Host header refused)")
        if request.method in WRITE_METHODS and request.content_type != JSON:
            return refuse(415, f"writes must be {JSON}, got {request.content_type!r}")
        return await handler(request)

    return guard
