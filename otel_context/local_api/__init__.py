"""A local Context-compatible API: the real `context-python` client writes threads to it and reads them back."""

from __future__ import annotations

from .faults import FaultPlan
from .server import LocalContextAPI, create_app, run
from .store import ThreadStore
from .validation import ValidationError

__all__ = ["FaultPlan", "LocalContextAPI", "ThreadStore", "ValidationError", "create_app", "run"]
