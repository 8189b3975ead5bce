"""OpenLLMetry (`opentelemetry-instrumentation-langchain`): `traceloop.*` and `gen_ai.*` attributes.

Reads both the current GenAI message attributes (0.55 and later: `gen_ai.input.messages`,
`gen_ai.output.messages`, `gen_ai.system_instructions`) and the older flat keys
(`gen_ai.prompt.{i}.*`, `gen_ai.completion.{i}.*`, `llm.request.type`) that users still run.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..model import Message, SpanEvent
from ..text import as_text, blocks_text, parse_json
from .base import (
    PLACEHOLDER_MODELS,
    SpanClass,
    ToolStep,
    Usage,
    association_properties,
    genai_operation,
    genai_usage,
)
from .keys import (
    ASSOCIATION_PREFIX,
    GEN_AI_INPUT_MESSAGES,
    GEN_AI_OPERATION_NAME,
    GEN_AI_OUTPUT_MESSAGES,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_SYSTEM,
    GEN_AI_SYSTEM_INSTRUCTIONS,
    GEN_AI_TOOL_CALL_ARGUMENTS,
    GEN_AI_TOOL_CALL_RESULT,
    GEN_AI_TOOL_NAME,
    GEN_AI_WORKFLOW_NAME,
    LLM_REQUEST_TYPE,
    LS_MODEL_NAME,
    TRACELOOP_ENTITY_INPUT,
    TRACELOOP_ENTITY_NAME,
    TRACELOOP_ENTITY_OUTPUT,
    TRACELOOP_SPAN_KIND,
    TRACELOOP_WORKFLOW_NAME,
)
from .messages import MessageBuilder, read_flat_messages

LLM_OPERATIONS = frozenset({"chat", "text_completion", "completion", "generate_content", "llm"})
STEP_KINDS = frozenset({"task", "agent", "tool"})


def _tool_output(value: Any) -> str | None:
    """A tool's observation: a ToolMessage's content, else the value as text."""
    if value is None:
        return None
    if isinstance(value, Mapping) and isinstance(value.get("kwargs"), Mapping) and "content" in value["kwargs"]:
        return as_text(value["kwargs"]["content"])
    return as_text(value)


def _literal(value: Any) -> Any:
    """A tool's `input_str`, which is `str(arguments)` (LangGraph's tool node): the arguments again if it reads back."""
    if not (isinstance(value, str) and value[:1] in "{[" and len(value) <= 65_536):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return value


class OpenLLMetry:
    """The Traceloop / OpenLLMetry LangChain instrumentation."""

    name = "openllmetry"
    describes_provider_calls = False
    records_langchain_runs = True

    def __init__(self, association_prefix: str = ASSOCIATION_PREFIX) -> None:
        self.association_prefix = association_prefix
        self._model_keys = (GEN_AI_RESPONSE_MODEL, GEN_AI_REQUEST_MODEL, association_prefix + LS_MODEL_NAME)

    def classify(self, attributes: Mapping[str, Any]) -> SpanClass | None:
        kind = attributes.get(TRACELOOP_SPAN_KIND)
        if kind == "workflow":
            return SpanClass.CHAIN_ROOT
        if kind == "tool":
            return SpanClass.TOOL
        if kind in STEP_KINDS:
            return SpanClass.STEP
        operation = attributes.get(GEN_AI_OPERATION_NAME)
        if operation not in LLM_OPERATIONS:  # 0.54 writes `llm_request` there; `llm.request.type` says which
            operation = attributes.get(LLM_REQUEST_TYPE) or operation
        if TRACELOOP_WORKFLOW_NAME not in attributes and kind is None:
            # Up to 0.47 a model call outside any chain has no workflow name at all (inside a chain it
            # has one), only LangChain as its system.
            if operation in LLM_OPERATIONS and str(attributes.get(GEN_AI_SYSTEM, "")).lower() == "langchain":
                return SpanClass.LLM_STANDALONE
            return None
        if operation in LLM_OPERATIONS:
            in_chain = bool(attributes.get(TRACELOOP_WORKFLOW_NAME))
            return SpanClass.LLM_IN_CHAIN if in_chain else SpanClass.LLM_STANDALONE
        return SpanClass.STEP if kind is not None else None

    def models(self, attributes: Mapping[str, Any]) -> list[str]:
        """The model that answered, else the one asked for, else LangChain's name for it (the first named)."""
        for key in self._model_keys:
            value = attributes.get(key)
            if isinstance(value, str) and value.lower() not in PLACEHOLDER_MODELS:
                return [value]
        return []

    def usage(self, attributes: Mapping[str, Any]) -> Usage:
        return genai_usage(attributes)

    def llm_messages(
        self, attributes: Mapping[str, Any], events: tuple[SpanEvent, ...] = ()
    ) -> tuple[list[Message], list[Message]]:
        builder = MessageBuilder()
        system = attributes.get(GEN_AI_SYSTEM_INSTRUCTIONS)
        if system is not None:
            text = blocks_text(parse_json(system))
            if text:
                builder.messages.append(Message(role="system", text=text))
        if GEN_AI_INPUT_MESSAGES in attributes or GEN_AI_OUTPUT_MESSAGES in attributes:
            for message in self._message_list(attributes.get(GEN_AI_INPUT_MESSAGES)):
                builder.add(message.get("role", "user"), message.get("parts", message.get("content")))
            split = len(builder.messages)
            for message in self._message_list(attributes.get(GEN_AI_OUTPUT_MESSAGES)):
                builder.add(
                    message.get("role", "assistant"),
                    message.get("parts", message.get("content")),
                    force_assistant=True,
                )
        else:
            split = read_flat_messages(attributes, builder)
        return builder.messages[:split], builder.messages[split:]

    @staticmethod
    def _message_list(value: Any) -> Iterable[Mapping[str, Any]]:
        parsed = parse_json(value)
        if isinstance(parsed, Mapping):
            parsed = [parsed]
        if not isinstance(parsed, list):
            return [{"role": "user", "parts": parsed}] if isinstance(parsed, str) and parsed else []
        return [m for m in parsed if isinstance(m, Mapping)]

    def chain_io(self, attributes: Mapping[str, Any]) -> tuple[Any, Any]:
        raw_in = parse_json(attributes.get(TRACELOOP_ENTITY_INPUT))
        raw_out = parse_json(attributes.get(TRACELOOP_ENTITY_OUTPUT))
        if isinstance(raw_in, Mapping) and "inputs" in raw_in:
            raw_in = raw_in["inputs"]
        if isinstance(raw_out, Mapping) and "outputs" in raw_out:
            raw_out = raw_out["outputs"]
        return raw_in, raw_out

    def run_name(self, attributes: Mapping[str, Any]) -> str | None:
        """The LangChain run's name (`traceloop.entity.name`), else the workflow's."""
        name = (
            attributes.get(TRACELOOP_ENTITY_NAME)
            or attributes.get(TRACELOOP_WORKFLOW_NAME)
            or attributes.get(GEN_AI_WORKFLOW_NAME)
        )
        return as_text(name) if name else None

    def workflow_name(self, attributes: Mapping[str, Any]) -> str | None:
        name = attributes.get(GEN_AI_WORKFLOW_NAME)
        return as_text(name) if name else None

    def operation(self, attributes: Mapping[str, Any]) -> str:
        return genai_operation(attributes)

    def tool_step(self, attributes: Mapping[str, Any]) -> ToolStep:
        """LangChain's tool run: `{"input_str", "inputs"}` in, `{"output"}` out."""
        raw_in = parse_json(attributes.get(TRACELOOP_ENTITY_INPUT, attributes.get(GEN_AI_TOOL_CALL_ARGUMENTS)))
        raw_out = parse_json(attributes.get(TRACELOOP_ENTITY_OUTPUT, attributes.get(GEN_AI_TOOL_CALL_RESULT)))
        if isinstance(raw_in, Mapping):
            raw_in = (
                raw_in.get("inputs") if raw_in.get("inputs") is not None else _literal(raw_in.get("input_str", raw_in))
            )
        if isinstance(raw_out, Mapping) and "output" in raw_out:
            raw_out = raw_out["output"]
        name = attributes.get(TRACELOOP_ENTITY_NAME) or attributes.get(GEN_AI_TOOL_NAME) or "tool"
        return ToolStep(name=as_text(name), input=raw_in, output=_tool_output(raw_out))

    def tags(self, attributes: Mapping[str, Any]) -> list[str]:
        """LangChain run tags the user gave the root (`seq:step:*` and the like are LangChain's own)."""
        raw = parse_json(attributes.get(TRACELOOP_ENTITY_INPUT))
        tags = raw.get("tags") if isinstance(raw, Mapping) else None
        if not isinstance(tags, list):
            return []
        return [str(t) for t in tags if isinstance(t, str) and not re.match(r"^(seq:step|map:key|graph:step):", t)]

    def properties(self, attributes: Mapping[str, Any]) -> dict[str, str]:
        return association_properties(attributes, self.association_prefix)
