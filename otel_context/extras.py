"""Optional dependencies by role, and the one line that names the extra a command lacks.

The core install is what an app needs to export in process (`OTEL_TRACES_EXPORTER=context`). The servers
are extras: `[sidecar]` (`otel-context serve`: aiohttp, grpcio, protobuf) and `[local]` (the local
Context-compatible API: aiohttp). A command that needs one checks for it before importing anything from it,
so a missing extra is one line naming the `pip install` to run, never an ImportError traceback.
"""

from __future__ import annotations

import importlib.util

# extra -> the modules its code imports (the distributions in pyproject.toml's optional-dependencies)
MODULES: dict[str, tuple[str, ...]] = {
    "sidecar": ("aiohttp", "grpc", "google.protobuf", "opentelemetry.proto"),
    "local": ("aiohttp",),
}


class MissingExtra(ImportError):
    """An extra that is not installed; the message is the whole story: who needs it and how to install it."""

    def __init__(self, user: str, extra: str, module: str) -> None:
        super().__init__(
            f"{user} needs the '{extra}' extra ({module} is not installed): pip install 'otel-context[{extra}]'",
            name=module,
        )
        self.extra = extra


def require(extra: str, user: str) -> None:
    """Raise `MissingExtra` unless every module of `extra` can be imported; `user` is the command or API."""
    for module in MODULES[extra]:
        if not _importable(module):
            raise MissingExtra(user, extra, module)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # its parent package is missing, or sys.modules holds None for it
        return False
