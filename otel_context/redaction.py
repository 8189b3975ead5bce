"""Redaction applied to every thread before anything leaves the process.

Built-in patterns (`OTEL_EXPORTER_CONTEXT_REDACT=email,phone,card,api_key` or `all`) replace matches
with `[REDACTED:<kind>]`; a Python hook (`ContextSpanExporter(redact=callable)`) receives each text
and returns the text to send. Message texts, tool inputs and observations, and metadata values are
redacted; ids and timings are not.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .model import ConversationThread

PATTERNS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
    # API keys before phones and cards: long digit runs inside keys must not be half-redacted
    "api_key": re.compile(
        r"\b(?:sk|pk|rk|api|key|token)[-_](?:[A-Za-z0-9]+[-_])*[A-Za-z0-9]{16,}\b"
        r"|\bAKIA[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{30,}\b|\bxox[abpr]-[A-Za-z0-9-]{10,}\b"
        r"|\bBearer\s+[A-Za-z0-9._~+/-]{16,}=*"
    ),
    "card": re.compile(r"\b(?:\d[ -]?){12,18}\d\b"),
    "phone": re.compile(r"(?<![\w.])\+?\d{1,3}?[ .-]?\(?\d{2,4}\)?[ .-]?\d{3,4}[ .-]?\d{3,4}(?![\w.])"),
}
NEVER_REDACTED = frozenset({"trace_id", "span_id", "started_at", "latency_ms", "source", "input_tokens",
                            "output_tokens", "total_tokens", "turns", "cache_read_tokens",
                            "cache_write_tokens", "reasoning_tokens", "cost_usd", "cost_source"})  # fmt: skip


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


class Redactor:
    """Applies the chosen built-in patterns, then the hook, to every text of a thread."""

    def __init__(self, kinds: list[str] | None = None, hook: Callable[[str], str] | None = None) -> None:
        unknown = sorted(set(kinds or ()) - set(PATTERNS) - {"all"})
        if unknown:
            raise ValueError(f"unknown redaction pattern(s) {', '.join(unknown)}; choose from {', '.join(PATTERNS)}")
        self.kinds = list(PATTERNS) if kinds and "all" in kinds else list(kinds or ())
        self.hook = hook

    def __bool__(self) -> bool:
        return bool(self.kinds or self.hook)

    def text(self, text: str) -> str:
        for kind in self.kinds:
            pattern = PATTERNS[kind]
            if kind == "card":
                text = pattern.sub(lambda m: _card(m.group(0)), text)
            else:
                text = pattern.sub(f"[REDACTED:{kind}]", text)
        if self.hook is not None:
            text = self.hook(text)
        return text

    def value(self, value: Any) -> Any:
        """Strings anywhere inside a JSON-like value (tool inputs)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def thread(self, thread: ConversationThread) -> ConversationThread:
        for message in thread.messages:
            message.text = self.text(message.text)
            if message.observation is not None:
                message.observation = self.text(message.observation)
            if message.input is not None:
                message.input = self.value(message.input)
        thread.metadata = {k: v if k in NEVER_REDACTED else self.text(v) for k, v in thread.metadata.items()}
        return thread


def _card(candidate: str) -> str:
    digits = re.sub(r"\D", "", candidate)
    return "[REDACTED:card]" if 13 <= len(digits) <= 19 and _luhn(digits) else candidate
