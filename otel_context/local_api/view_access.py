"""Who may open the local API's web view (`/` and `/threads/{id}`), and how its pages are sent.

With no token configured, the view is open, as the API itself is (keep the server on loopback).

With a token (`--token`), the view is no open door:

- A browser opens `/?token=TOKEN` once. A right token (compared in constant time) gets a 303 to the same page
  without the token, so it leaves the address bar and history, and a session cookie `otel_context_view_<port>`
  with `HttpOnly; SameSite=Strict; Path=/`. The cookie holds HMAC-SHA256(token, a fixed label), never the token:
  it opens this read-only view but is no bearer for `/api`, and it stops working when the token changes.
  Cookies ignore ports, hence the port in its name: two local APIs on one host keep separate cookies.
- Scripts may send `Authorization: Bearer TOKEN` instead, as for `/api`.
- Anything else, a wrong `?token=` included, gets a 401 page saying how to get in, with no cookie set and no
  token echoed.

The cookie is not `Secure` (plain http on loopback). Every view answer also carries a strict
Content-Security-Policy (no scripts at all), `Referrer-Policy: no-referrer` and `Cache-Control: no-store`.
"""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

from . import view
from .auth import BearerAuth

COOKIE_PREFIX = "otel_context_view_"
TOKEN_PARAM = "token"
_COOKIE_LABEL = b"otel-context local API web view v1"


def cookie_value(token: str) -> str:
    """What the cookie holds: derived from the token, useless as one."""
    return hmac.new(token.encode(), _COOKIE_LABEL, hashlib.sha256).hexdigest()


def cookie_name(request: web.Request) -> str:
    """Named after the port the server listens on (its socket's, not the client's Host header)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
    port = sockname[1] if isinstance(sockname, tuple) and len(sockname) >= 2 else 0
    return f"{COOKIE_PREFIX}{port}"


def html_response(body: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A view page with the view's security headers."""
    return web.Response(
        text=body, status=status, content_type="text/html", charset="utf-8", headers={**view.HEADERS, **(headers or {})}
    )


def check(request: web.Request, auth: BearerAuth) -> web.Response | None:
    """None when the request may see the view; else the answer to send instead (303 setting the cookie, or 401)."""
    token = auth.token
    if token is None:
        return None
    if TOKEN_PARAM in request.query:
        if not hmac.compare_digest(request.query[TOKEN_PARAM].encode(), token.encode()):
            return denied("invalid token in ?token=")
        response = web.Response(status=303, headers={**view.HEADERS, "Location": _without_token(request)})
        response.set_cookie(cookie_name(request), cookie_value(token), path="/", httponly=True, samesite="Strict")
        return response
    header = request.headers.get("Authorization")
    if header:
        problem = auth.problem(header)
        return None if problem is None else denied(problem)
    cookie = request.cookies.get(cookie_name(request))
    if cookie is None:
        return denied("This view needs the API token.")
    if not hmac.compare_digest(cookie.encode(), cookie_value(token).encode()):
        return denied("The view cookie is not valid for this server (was it restarted with another token?).")
    return None


def denied(reason: str) -> web.Response:
    return html_response(view.unauthorized_page(reason), status=401, headers={"WWW-Authenticate": "Bearer"})


def _without_token(request: web.Request) -> str:
    """The same page without `?token=`, as a path on this server (never `//host`, which would leave it)."""
    kept = [(k, v) for k, v in request.query.items() if k != TOKEN_PARAM]
    location = str(request.rel_url.with_query(kept))
    return location if location.startswith("/") and not location.startswith("//") else "/"
