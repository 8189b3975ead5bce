"""Render a chain's input or output as a person would read it.

A lone string stays that string; LangChain messages (a LangGraph state's `messages` too) become the text
of the last human message (for an input) or AI message (for an output); a LangGraph `Command` that
resumes an interrupted run is its resume value; anything else becomes compact JSON, keys without a
value left out.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from typing import Any

from ..text import blocks_text, compact_json

_HUMAN = frozenset({"human", "user", "HumanMessage", "HumanMessageChunk"})
_AI = frozenset({"ai", "assistant", "AIMessage", "AIMessageChunk"})
_MESSAGE_TYPES = _HUMAN | _AI | {"system", "tool", "function", "chat", "SystemMessage", "ToolMessage"}
_EMPTY: tuple[Any, ...] = (None, "", [], {})
_COMMAND_KEYS = frozenset({"graph", "update", "resume", "goto"})
_INTERRUPT = re.compile(r"Interrupt\(value=(.*?), (?:id|resumable|ns|when)=", re.DOTALL)


def _message_fields(value: Any) -> tuple[str, Any] | None:
    """(type, content) of a LangChain message in any of its serialised shapes, else None.

    Besides message objects and `{"role", "content"}` dicts: the `("user", "text")` pairs LangGraph
    states are often given (a tuple arrives as a JSON list).
    """
    if isinstance(value, list) and len(value) == 2 and value[0] in _MESSAGE_TYPES and isinstance(value[1], str):
        return str(value[0]), value[1]
    if not isinstance(value, Mapping):
        return None
    if value.get("lc") == 1 and isinstance(value.get("kwargs"), Mapping):
        ids = value.get("id") or []
        kwargs = value["kwargs"]
        kind = kwargs.get("type") or (ids[-1] if ids else "")
        if "content" in kwargs and kind in _MESSAGE_TYPES:
            return str(kind), kwargs.get("content")
        return None
    kind = value.get("type", value.get("role"))
    if kind in _MESSAGE_TYPES and "content" in value:
        return str(kind), value.get("content")
    return None


def _message_list(value: Any) -> list[tuple[str, Any]] | None:
    """The messages of a list of messages, a ChatPromptValue or a `{"messages": [...]}` state."""
    if isinstance(value, Mapping):
        if value.get("lc") == 1 and isinstance(value.get("kwargs"), Mapping):
            value = value["kwargs"].get("messages")
        elif isinstance(value.get("messages"), list):
            value = value["messages"]
        else:
            return None
    if not isinstance(value, list) or not value:
        return None
    fields = [_message_fields(item) for item in value]
    if any(f is None for f in fields):
        return None
    return fields  # type: ignore[return-value]


def _resumed(value: Any) -> Any:
    """What a LangGraph `Command` (`{"graph", "update", "resume", "goto"}`) brings: the resume value or update."""
    if not (isinstance(value, Mapping) and "resume" in value and set(value) <= _COMMAND_KEYS):
        return value
    return value["resume"] if value["resume"] is not None else value.get("update")


def render(value: Any, *, side: str) -> str | None:
    """Readable text for a chain input (`side="input"`) or output (`side="output"`); None if absent."""
    value = _resumed(value)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    wanted = _HUMAN if side == "input" else _AI
    single = _message_fields(value)
    if single is not None:
        return blocks_text(single[1])
    messages = _message_list(value)
    if messages:
        preferred = [content for kind, content in messages if kind in wanted]
        return blocks_text(preferred[-1] if preferred else messages[-1][1])
    if isinstance(value, Mapping) and "generations" not in value:
        value = {k: v for k, v in value.items() if v not in _EMPTY}  # a graph state's unset keys say nothing
    if isinstance(value, Mapping) and len(value) == 1:
        (only,) = value.values()
        if isinstance(only, str):
            return only
        if _message_fields(only) is not None or _message_list(only):
            return render(only, side=side)
    if isinstance(value, Mapping) and isinstance(value.get("generations"), list):
        texts = [
            g.get("text")
            for row in value["generations"]
            for g in (row if isinstance(row, list) else [row])
            if isinstance(g, Mapping) and isinstance(g.get("text"), str)
        ]
        if texts:
            return texts[-1]
    return compact_json(value)


def interrupt_text(message: str) -> str:
    """The value a LangGraph `interrupt()` asks with, from its `GraphInterrupt` message (the repr of a tuple
    of `Interrupt(value=..., id=...)`): a string as it is, other values as compact JSON, else the message."""
    match = _INTERRUPT.search(message)
    if match is None:
        return message
    try:
        value = ast.literal_eval(match.group(1))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return match.group(1)
    return value if isinstance(value, str) else compact_json(value)
