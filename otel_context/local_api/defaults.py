"""Where the local API listens unless told otherwise.

Apart from the server so that the command line can show them in its help without importing the server
(aiohttp, the `local` extra): `otel-context --help` works on the core install.
"""

from __future__ import annotations

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
