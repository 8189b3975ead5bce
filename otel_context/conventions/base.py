"""The interface every convention reader implements, and the small value types they return."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..model import Message, SpanEvent


class SpanClass(enum.Enum):
    """What a GenAI span is, for assembly.

    Some conventions say whether a span is a root (OpenLLMetry marks the topmost LangChain chain
    `workflow`, and a chat span inside a chain carries the workflow name). Others only say "a chain"
    or "a model call": `CHAIN` and `LLM` are roots unless their parent turns out to be a GenAI span.
    Either way the outermost GenAI span wins: a `CHAIN_ROOT` or `LLM_STANDALONE` under another GenAI
    span (LangGraph's `workflow` under its `invoke_agent` span) is a step of it.
    """

    CHAIN_ROOT = "chain_root"  # the topmost chain of its instrumentation: the root unless under a GenAI span
    LLM_STANDALONE = "llm_standalone"  # a model call not inside a chain: its own thread
    LLM_IN_CHAIN = "llm_in_chain"
    CHAIN = "chain"  # a chain: the root if its parent is not a GenAI span
    LLM = "llm"  # a model call: standalone if its parent is not a GenAI span
    TOOL = "tool"  # a tool run: a step, or a root of its own in a bare agent loop
    STEP = "step"  # tasks, agents, retrievers, nested chains

    @property
    def is_llm(self) -> bool:
        return self in (SpanClass.LLM_STANDALONE, SpanClass.LLM_IN_CHAIN, SpanClass.LLM)

    @property
    def is_chain(self) -> bool:
        return self in (SpanClass.CHAIN_ROOT, SpanClass.CHAIN)


@dataclass(slots=True)
class Usage:
    """Token counts of a span. Cache reads and writes are part of `input_tokens`, reasoning of
    `output_tokens` (as every provider reports them); they are kept apart because they are priced apart."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.total_tokens += other.total_tokens
        self.cache_read_tokens += other.cache_read_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.reasoning_tokens += other.reasoning_tokens

    def __bool__(self) -> bool:
        return bool(self.input_tokens or self.output_tokens or self.total_tokens)


@dataclass(slots=True)
class ToolStep:
    """One tool run, as Context's `type: tool` message shows it."""

    name: str
    input: Any = None
    output: str | None = None


class Convention(Protocol):
    """Reads one family of span attributes (OpenLLMetry, OpenInference, GenAI semconv, ...)."""

    name: str

    def classify(self, attributes: Mapping[str, Any]) -> SpanClass | None:
        """The span's class, or None when this convention does not describe the span."""

    def models(self, attributes: Mapping[str, Any]) -> list[str]:
        """Model names the span used (response model first), without placeholders like "unknown"."""

    def usage(self, attributes: Mapping[str, Any]) -> Usage:
        """Token usage the span reports."""

    def llm_messages(
        self, attributes: Mapping[str, Any], events: tuple[SpanEvent, ...] = ()
    ) -> tuple[list[Message], list[Message]]:
        """A model call's (system and input messages, output messages), in order, untimed."""

    def chain_io(self, attributes: Mapping[str, Any]) -> tuple[Any, Any]:
        """The chain's input and output as parsed values (None when not recorded)."""

    def tool_step(self, attributes: Mapping[str, Any]) -> ToolStep:
        """A tool span's name, input and output."""

    def tags(self, attributes: Mapping[str, Any]) -> list[str]:
        """Tags the user gave the run."""

    def properties(self, attributes: Mapping[str, Any]) -> dict[str, str]:
        """User-supplied properties: user_id, session_id and the like."""
