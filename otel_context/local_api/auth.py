"""Bearer-token checks of the local API, shared by its `/api` routes (server.py) and its web view (view_access.py)."""

from __future__ import annotations

import hmac


class BearerAuth:
    """Checks `Authorization: Bearer <token>`; with no token configured everyone is let in."""

    def __init__(self, token: str | None) -> None:
        self.token = token or None

    def problem(self, header: str | None) -> str | None:
        """Why the header is refused, in words that never repeat the token; None when accepted."""
        if self.token is None:
            return None
        if not header:
            return "missing 'Authorization: Bearer <token>' header"
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            return "Authorization header must use the Bearer scheme"
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return "invalid bearer token"
        return None
