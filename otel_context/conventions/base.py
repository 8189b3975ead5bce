"""The interface every convention reader implements, and the small value types they return."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..model import Message


class SpanClass(enum.Enum):
    """What a GenAI span is, for assembly: a chain root, a model call, or a step inside a chain."""

    CHAIN_ROOT = "chain_root"
    LLM_STANDALONE = "llm_standalone"  # a model call not inside a chain: its own thread
    LLM_IN_CHAIN = "llm_in_chain"
    STEP = "step"  # tasks, tools, agents, nested chains


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.total_tokens += other.total_tokens

    def __bool__(self) -> bool:
        return bool(self.input_tokens or self.output_tokens or self.total_tokens)


class Convention(Protocol):
    """Reads one family of span attributes (OpenLLMetry, OpenInference, GenAI semconv, ...)."""

    name: str

    def classify(self, attributes: Mapping[str, Any]) -> SpanClass | None:
        """The span's class, or None when this convention does not describe the span."""

    def models(self, attributes: Mapping[str, Any]) -> list[str]:
        """Model names the span used (response model first), without placeholders like "unknown"."""

    def usage(self, attributes: Mapping[str, Any]) -> Usage:
        """Token usage the span reports."""

    def llm_messages(self, attributes: Mapping[str, Any]) -> tuple[list[Message], list[Message]]:
        """A model call's (system and input messages, output messages), in order, untimed."""

    def chain_io(self, attributes: Mapping[str, Any]) -> tuple[Any, Any]:
        """The chain's input and output as parsed values (None when not recorded)."""

    def tags(self, attributes: Mapping[str, Any]) -> list[str]:
        """Tags the user gave the run."""

    def properties(self, attributes: Mapping[str, Any]) -> dict[str, str]:
        """User-supplied association properties: user_id, session_id and the like."""
