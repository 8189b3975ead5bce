"""A local Context-compatible API: the real `context-python` client writes threads to it and reads them back.

The server needs the `local` extra (aiohttp). Nothing is imported here until asked for, so the main command
line can mount `local-api` (and show its help) without it, and a missing extra is one line naming it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..extras import require

# public name -> the module defining it
_PUBLIC = {
    "FaultPlan": "faults",
    "LocalContextAPI": "server",
    "ThreadStore": "store",
    "ValidationError": "validation",
    "create_app": "server",
    "run": "server",
}
__all__ = ["FaultPlan", "LocalContextAPI", "ThreadStore", "ValidationError", "create_app", "run"]

if TYPE_CHECKING:
    from .faults import FaultPlan
    from .server import LocalContextAPI, create_app, run
    from .store import ThreadStore
    from .validation import ValidationError


def __getattr__(name: str) -> Any:
    """The public names, imported on first use (PEP 562); the server's only with the `local` extra."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if module == "server":
        require("local", "otel_context.local_api")
    return getattr(importlib.import_module(f".{module}", __name__), name)
