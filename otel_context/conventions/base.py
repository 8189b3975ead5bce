"""The interface every convention reader implements, the small value types they return, and what
several readers read alike (model placeholders, GenAI token usage, the model operation, user properties).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..model import Message, SpanEvent
from ..text import as_int, as_text
from .keys import (
    ENDUSER_ID,
    GEN_AI_CONVERSATION_ID,
    GEN_AI_OPERATION_NAME,
    GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
    GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
    GEN_AI_USAGE_COMPLETION_TOKENS,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_MODALITY_INPUT_TOKENS,
    GEN_AI_USAGE_MODALITY_OUTPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    GEN_AI_USAGE_PROMPT_TOKENS,
    GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
    GEN_AI_USAGE_REASONING_TOKENS,
    GEN_AI_USAGE_TOTAL_TOKENS,
    LLM_REQUEST_TYPE,
    LLM_USAGE_CACHE_CREATION_INPUT_TOKENS,
    LLM_USAGE_CACHE_READ_INPUT_TOKENS,
    LLM_USAGE_TOTAL_TOKENS,
    SESSION_ID,
    USER_ID,
)

# Model names that name no model.
PLACEHOLDER_MODELS = frozenset({"", "unknown", "none", "null"})
# Cache and reasoning counts: the newest GenAI conventions first (`cache_write` since semantic-conventions-genai
# renamed `cache_creation`), then semconv 1.38+, then the keys OpenLLMetry wrote before it.
CACHE_READ_KEYS = (GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS, LLM_USAGE_CACHE_READ_INPUT_TOKENS)
CACHE_WRITE_KEYS = (
    GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS,
    GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
    LLM_USAGE_CACHE_CREATION_INPUT_TOKENS,
)
REASONING_KEYS = (GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, GEN_AI_USAGE_REASONING_TOKENS)
# Every key `genai_usage` reads.
USAGE_KEYS = frozenset(
    {
        GEN_AI_USAGE_INPUT_TOKENS,
        GEN_AI_USAGE_PROMPT_TOKENS,
        GEN_AI_USAGE_OUTPUT_TOKENS,
        GEN_AI_USAGE_COMPLETION_TOKENS,
        LLM_USAGE_TOTAL_TOKENS,
        GEN_AI_USAGE_TOTAL_TOKENS,
        *CACHE_READ_KEYS,
        *CACHE_WRITE_KEYS,
        *REASONING_KEYS,
        *GEN_AI_USAGE_MODALITY_INPUT_TOKENS,
        *GEN_AI_USAGE_MODALITY_OUTPUT_TOKENS,
    }
)
# User properties under keys of their own, for readers of GenAI spans (association properties win).
USER_PROPERTY_KEYS = (
    (USER_ID, "user_id"),
    (ENDUSER_ID, "user_id"),
    (SESSION_ID, "session_id"),
    (GEN_AI_CONVERSATION_ID, "conversation_id"),
)
# LangChain's own run metadata (ls_provider, lc_versions, langgraph_node, checkpoint_ns, ...), which the
# instrumentations copy beside the user's: noise.
LANGCHAIN_INTERNAL_METADATA = re.compile(r"^(ls_|lc_|langgraph_|checkpoint_)")


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

    is_llm: bool  # a model call of any kind
    is_chain: bool  # a chain, root or not

    def __init__(self, value: str) -> None:
        # Plain attributes, not properties: assembly and conversion ask them several times per span.
        self.is_llm = value in ("llm_standalone", "llm_in_chain", "llm")
        self.is_chain = value in ("chain_root", "chain")


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
    # Whether the convention's model spans are provider calls (OpenAI, Anthropic, ... instrumentations),
    # which may duplicate a LangChain model span they run inside: assembly matches them by time.
    describes_provider_calls: bool
    # Whether the convention is a LangChain instrumentation's own (OpenLLMetry, OpenInference): when a
    # GenAI-semconv span describes the same LangChain run as one of its spans (the official
    # `opentelemetry-instrumentation-genai-langchain` beside OpenLLMetry's), assembly keeps this one.
    records_langchain_runs: bool

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

    def run_name(self, attributes: Mapping[str, Any]) -> str | None:
        """The name of the run a chain span records (workflow or entity name), None when it records none."""

    def workflow_name(self, attributes: Mapping[str, Any]) -> str | None:
        """The name of a workflow of agents the span runs, which outranks the name of a run it wraps."""

    def operation(self, attributes: Mapping[str, Any]) -> str:
        """A model call's operation (`chat`, `text_completion`, ...), as thread metadata names it."""

    def tool_step(self, attributes: Mapping[str, Any]) -> ToolStep:
        """A tool span's name, input and output."""

    def tags(self, attributes: Mapping[str, Any]) -> list[str]:
        """Tags the user gave the run."""

    def properties(self, attributes: Mapping[str, Any]) -> dict[str, str]:
        """User-supplied properties: user_id, session_id and the like."""


def _first_int(attributes: Mapping[str, Any], keys: tuple[str, ...]) -> int:
    for key in keys:
        if key in attributes:
            return as_int(attributes[key])
    return 0


def genai_usage(attributes: Mapping[str, Any]) -> Usage:
    """Token usage from `gen_ai.usage.*` (and the spellings OpenLLMetry used before the conventions had them)."""
    if USAGE_KEYS.isdisjoint(attributes):  # most spans (chains, tasks, tools) carry no usage: one pass, in C
        return Usage()
    get = attributes.get
    prompt = as_int(get(GEN_AI_USAGE_INPUT_TOKENS, get(GEN_AI_USAGE_PROMPT_TOKENS)))
    completion = as_int(get(GEN_AI_USAGE_OUTPUT_TOKENS, get(GEN_AI_USAGE_COMPLETION_TOKENS)))
    if not prompt:  # only the per-modality counts (semantic-conventions-genai): their sum
        prompt = sum(as_int(get(key)) for key in GEN_AI_USAGE_MODALITY_INPUT_TOKENS)
    if not completion:
        completion = sum(as_int(get(key)) for key in GEN_AI_USAGE_MODALITY_OUTPUT_TOKENS)
    total = as_int(get(LLM_USAGE_TOTAL_TOKENS, get(GEN_AI_USAGE_TOTAL_TOKENS))) or prompt + completion
    return Usage(
        prompt,
        completion,
        total,
        cache_read_tokens=_first_int(attributes, CACHE_READ_KEYS),
        cache_write_tokens=_first_int(attributes, CACHE_WRITE_KEYS),
        reasoning_tokens=_first_int(attributes, REASONING_KEYS),
    )


def genai_operation(attributes: Mapping[str, Any]) -> str:
    """`gen_ai.operation.name`; OpenLLMetry up to 0.54 wrote none or `llm_request` there, and the kind in
    `llm.request.type`."""
    operation = attributes.get(GEN_AI_OPERATION_NAME)
    if operation in (None, "llm_request"):
        operation = attributes.get(LLM_REQUEST_TYPE) or "chat"
    return as_text(operation)


def association_properties(attributes: Mapping[str, Any], prefix: str) -> dict[str, str]:
    """OpenLLMetry association properties (LangChain run metadata, less LangChain's own), then `user.id`,
    `enduser.id`, `session.id` and `gen_ai.conversation.id` where those did not name the property."""
    found: dict[str, str] = {}
    for key, value in attributes.items():
        if key.startswith(prefix):
            name = key[len(prefix) :]
            if name and not LANGCHAIN_INTERNAL_METADATA.match(name):
                found[name] = as_text(value)
    for key, name in USER_PROPERTY_KEYS:
        value = attributes.get(key)
        if value is not None and name not in found:
            found[name] = as_text(value)
    return found
