"""Redaction applied to every thread before anything leaves the process.

Built-in patterns (`OTEL_EXPORTER_CONTEXT_REDACT=email,phone,card,api_key` or `all`) replace matches
with `[REDACTED:<kind>]`; a Python hook (`ContextSpanExporter(redact=callable)`) receives each text
and returns the text to send. Message texts, tool inputs and observations, and metadata values are
redacted; ids and timings are not.

Pseudonyms (`OTEL_EXPORTER_CONTEXT_PSEUDONYMIZE=user_id,session_id,email` with a secret in
`OTEL_EXPORTER_CONTEXT_PSEUDONYM_KEY`) replace chosen metadata values, and matches of the built-in
patterns named, with `pseu_<HMAC-SHA256 of the value, 16 hex digits>`: the same value always gives
the same pseudonym, so sessions and users still group in Context while the raw value never leaves.
It works on threads, after every convention was read, so it applies to spans of any instrumentation.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Any

from ..model import ConversationThread

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


class Pseudonyms:
    """Keyed, stable pseudonyms for chosen metadata keys and built-in patterns.

    Without a key (`key=None`) the chosen values cannot be pseudonymized and are redacted instead:
    a missing secret must never let the raw value out.
    """

    def __init__(self, targets: tuple[str, ...], key: bytes | None) -> None:
        self.keys = frozenset(t for t in targets if t not in PATTERNS)
        self.patterns = [(kind, PATTERNS[kind]) for kind in PATTERNS if kind in targets]  # api_key first
        self._key = key

    def __bool__(self) -> bool:
        return bool(self.keys or self.patterns)

    def of(self, value: str, kind: str) -> str:
        if self._key is None:
            return f"[REDACTED:{kind}]"
        return "pseu_" + hmac.new(self._key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:16]

    def text(self, text: str) -> str:
        for kind, pattern in self.patterns:
            text = pattern.sub(lambda m, kind=kind: self.of(m.group(0), kind), text)
        return text

    def metadata(self, key: str, value: str) -> str:
        """A metadata value: whole when its key is chosen, else the chosen patterns inside it."""
        return self.of(value, key) if key in self.keys else self.text(value)


class Redactor:
    """Applies pseudonyms, the chosen built-in patterns, then the hook, to every text of a thread."""

    def __init__(
        self,
        kinds: list[str] | None = None,
        hook: Callable[[str], str] | None = None,
        pseudonyms: Pseudonyms | None = None,
    ) -> None:
        unknown = sorted(set(kinds or ()) - set(PATTERNS) - {"all"})
        if unknown:
            raise ValueError(f"unknown redaction pattern(s) {', '.join(unknown)}; choose from {', '.join(PATTERNS)}")
        self.kinds = list(PATTERNS) if kinds and "all" in kinds else list(kinds or ())
        self.hook = hook
        self.pseudonyms = pseudonyms if pseudonyms else None

    def __bool__(self) -> bool:
        return bool(self.kinds or self.hook or self.pseudonyms)

    def text(self, text: str) -> str:
        if self.pseudonyms is not None:
            text = self.pseudonyms.text(text)
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
        thread.metadata = {k: v if k in NEVER_REDACTED else self.metadata(k, v) for k, v in thread.metadata.items()}
        return thread

    def metadata(self, key: str, value: str) -> str:
        """A metadata value as it leaves (also how feedback naming a session finds its pseudonymized thread)."""
        if self.pseudonyms is not None and key in self.pseudonyms.keys:
            value = self.pseudonyms.of(value, key)
        return self.text(value)


def _card(candidate: str) -> str:
    digits = re.sub(r"\D", "", candidate)
    return "[REDACTED:card]" if 13 <= len(digits) <= 19 and _luhn(digits) else candidate
