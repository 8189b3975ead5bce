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
from ..text import as_int, as_text, blocks_text, compact_json, parse_json
from .base import SpanClass, ToolStep, Usage

ASSOCIATION_PREFIX = "traceloop.association.properties."
LLM_OPERATIONS = frozenset({"chat", "text_completion", "completion", "generate_content", "llm"})
STEP_KINDS = frozenset({"task", "agent", "tool"})
PLACEHOLDER_MODELS = frozenset({"", "unknown", "none", "null"})
# LangChain's own run metadata, copied into association properties by the instrumentation: noise.
_INTERNAL_PROPERTY = re.compile(r"^(ls_|lc_|langgraph_|checkpoint_)")
# Cache and reasoning counts: GenAI semconv 1.38+ first, then the keys OpenLLMetry wrote before it.
CACHE_READ_KEYS = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens")
CACHE_WRITE_KEYS = ("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens")
REASONING_KEYS = ("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens")
_FLAT_INDEX = re.compile(r"^gen_ai\.(prompt|completion)\.(\d+)\.(.+)$")

ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "ai": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "unknown": "assistant",
    "system": "system",
    "developer": "system",
    "tool": "tool",
    "function": "tool",
}


def group_indexed(
    attributes: Mapping[str, Any], pattern: re.Pattern[str], input_side: str
) -> dict[tuple[int, int], dict[str, Any]]:
    """Flat message keys grouped by (side, index): side 0 is input (`input_side`), 1 output.

    `pattern` matches a key as (side word, index, field), e.g. `gen_ai.prompt.0.content`.
    """
    found: dict[tuple[int, int], dict[str, Any]] = {}
    for key, value in attributes.items():
        match = pattern.match(key)
        if match:
            side = 0 if match.group(1) == input_side else 1
            found.setdefault((side, int(match.group(2))), {})[match.group(3)] = value
    return found


class MessageBuilder:
    """Turns (role, parts) pairs into Context messages, pairing tool calls with their results."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._calls: dict[str, Message] = {}

    def add(self, role: str, parts: Any, *, force_assistant: bool = False) -> None:
        role = ROLE_ALIASES.get(str(role).lower(), "user")
        if force_assistant and role != "tool":
            role = "assistant"
        if isinstance(parts, str) or not isinstance(parts, list):
            parts = [{"type": "text", "content": parts}] if parts not in (None, "") else []
        text_parts: list[Any] = []
        for part in parts:
            kind = part.get("type", "text") if isinstance(part, Mapping) else "text"
            if kind == "tool_call":
                self._tool_call(part)
            elif kind == "tool_call_response":
                self._tool_result(part.get("id"), part.get("response"))
            else:
                text_parts.append(part)
        text = blocks_text(text_parts)
        if role == "tool":
            if text:
                self._tool_result(None, text)
        elif text:
            self.messages.append(Message(role=role, text=text))

    def _tool_call(self, part: Mapping[str, Any]) -> None:
        name = as_text(part.get("name")) or "tool"
        arguments = parse_json(part.get("arguments"))
        message = Message(
            role="assistant",
            type="tool",
            name=name,
            input=arguments,
            text=f"{name}({compact_json(arguments) if arguments is not None else ''})",
        )
        self.messages.append(message)
        if part.get("id"):
            self._calls[str(part["id"])] = message

    def _tool_result(self, call_id: Any, response: Any) -> None:
        observation = as_text(response)
        call = self._calls.pop(str(call_id), None) if call_id is not None else None
        if call is not None:
            call.observation = observation
            return
        self.messages.append(Message(role="assistant", type="tool", text=observation, observation=observation))


def _first_int(attributes: Mapping[str, Any], keys: tuple[str, ...]) -> int:
    for key in keys:
        if key in attributes:
            return as_int(attributes[key])
    return 0


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

    def __init__(self, association_prefix: str = ASSOCIATION_PREFIX) -> None:
        self.association_prefix = association_prefix

    def classify(self, attributes: Mapping[str, Any]) -> SpanClass | None:
        kind = attributes.get("traceloop.span.kind")
        if kind == "workflow":
            return SpanClass.CHAIN_ROOT
        if kind == "tool":
            return SpanClass.TOOL
        if kind in STEP_KINDS:
            return SpanClass.STEP
        operation = attributes.get("gen_ai.operation.name")
        if operation not in LLM_OPERATIONS:  # 0.54 writes `llm_request` there; `llm.request.type` says which
            operation = attributes.get("llm.request.type") or operation
        if "traceloop.workflow.name" not in attributes and kind is None:
            # Up to 0.47 a model call outside any chain has no workflow name at all (inside a chain it
            # has one), only LangChain as its system.
            if operation in LLM_OPERATIONS and str(attributes.get("gen_ai.system", "")).lower() == "langchain":
                return SpanClass.LLM_STANDALONE
            return None
        if operation in LLM_OPERATIONS:
            in_chain = bool(attributes.get("traceloop.workflow.name"))
            return SpanClass.LLM_IN_CHAIN if in_chain else SpanClass.LLM_STANDALONE
        return SpanClass.STEP if kind is not None else None

    def models(self, attributes: Mapping[str, Any]) -> list[str]:
        names = []
        # LangChain's own `ls_model_name` run metadata names the model when the provider call does not.
        keys = ("gen_ai.response.model", "gen_ai.request.model", self.association_prefix + "ls_model_name")
        for key in keys:
            value = attributes.get(key)
            if isinstance(value, str) and value.lower() not in PLACEHOLDER_MODELS and value not in names:
                names.append(value)
        return names[:1]

    def usage(self, attributes: Mapping[str, Any]) -> Usage:
        get = attributes.get
        prompt = as_int(get("gen_ai.usage.input_tokens", get("gen_ai.usage.prompt_tokens")))
        completion = as_int(get("gen_ai.usage.output_tokens", get("gen_ai.usage.completion_tokens")))
        total = as_int(get("llm.usage.total_tokens", get("gen_ai.usage.total_tokens"))) or prompt + completion
        return Usage(
            prompt,
            completion,
            total,
            cache_read_tokens=_first_int(attributes, CACHE_READ_KEYS),
            cache_write_tokens=_first_int(attributes, CACHE_WRITE_KEYS),
            reasoning_tokens=_first_int(attributes, REASONING_KEYS),
        )

    def llm_messages(
        self, attributes: Mapping[str, Any], events: tuple[SpanEvent, ...] = ()
    ) -> tuple[list[Message], list[Message]]:
        builder = MessageBuilder()
        system = attributes.get("gen_ai.system_instructions")
        if system is not None:
            text = blocks_text(parse_json(system))
            if text:
                builder.messages.append(Message(role="system", text=text))
        if "gen_ai.input.messages" in attributes or "gen_ai.output.messages" in attributes:
            for message in self._message_list(attributes.get("gen_ai.input.messages")):
                builder.add(message.get("role", "user"), message.get("parts", message.get("content")))
            split = len(builder.messages)
            for message in self._message_list(attributes.get("gen_ai.output.messages")):
                builder.add(
                    message.get("role", "assistant"),
                    message.get("parts", message.get("content")),
                    force_assistant=True,
                )
        else:
            split = self._read_flat(attributes, builder)
        return builder.messages[:split], builder.messages[split:]

    @staticmethod
    def _message_list(value: Any) -> Iterable[Mapping[str, Any]]:
        parsed = parse_json(value)
        if isinstance(parsed, Mapping):
            parsed = [parsed]
        if not isinstance(parsed, list):
            return [{"role": "user", "parts": parsed}] if isinstance(parsed, str) and parsed else []
        return [m for m in parsed if isinstance(m, Mapping)]

    @staticmethod
    def _read_flat(attributes: Mapping[str, Any], builder: MessageBuilder) -> int:
        """Pre-0.55 keys: `gen_ai.prompt.{i}.role/content`, `gen_ai.completion.{i}.*`; returns the split."""
        split: int | None = None
        entries = group_indexed(attributes, _FLAT_INDEX, input_side="prompt")
        for (side, _), fields in sorted(entries.items()):
            if side == 1 and split is None:
                split = len(builder.messages)
            parts: list[Any] = []
            content = fields.get("content")
            if content is not None:
                parsed = parse_json(content)
                parts.append({"type": "text", "content": blocks_text(parsed) if parsed is not content else content})
            for index in sorted({int(k.split(".")[1]) for k in fields if k.startswith("tool_calls.")}):
                prefix = f"tool_calls.{index}."
                parts.append(
                    {
                        "type": "tool_call",
                        "id": fields.get(prefix + "id"),
                        "name": fields.get(prefix + "name"),
                        "arguments": fields.get(prefix + "arguments"),
                    }
                )
            role = fields.get("role", "user" if side == 0 else "assistant")
            if role == "tool" and fields.get("tool_call_id") is not None:
                parts = [{"type": "tool_call_response", "id": fields["tool_call_id"], "response": content}]
            builder.add(role, parts, force_assistant=side == 1)
        return len(builder.messages) if split is None else split

    def chain_io(self, attributes: Mapping[str, Any]) -> tuple[Any, Any]:
        raw_in = parse_json(attributes.get("traceloop.entity.input"))
        raw_out = parse_json(attributes.get("traceloop.entity.output"))
        if isinstance(raw_in, Mapping) and "inputs" in raw_in:
            raw_in = raw_in["inputs"]
        if isinstance(raw_out, Mapping) and "outputs" in raw_out:
            raw_out = raw_out["outputs"]
        return raw_in, raw_out

    def tool_step(self, attributes: Mapping[str, Any]) -> ToolStep:
        """LangChain's tool run: `{"input_str", "inputs"}` in, `{"output"}` out."""
        raw_in = parse_json(attributes.get("traceloop.entity.input", attributes.get("gen_ai.tool.call.arguments")))
        raw_out = parse_json(attributes.get("traceloop.entity.output", attributes.get("gen_ai.tool.call.result")))
        if isinstance(raw_in, Mapping):
            raw_in = (
                raw_in.get("inputs") if raw_in.get("inputs") is not None else _literal(raw_in.get("input_str", raw_in))
            )
        if isinstance(raw_out, Mapping) and "output" in raw_out:
            raw_out = raw_out["output"]
        name = attributes.get("traceloop.entity.name") or attributes.get("gen_ai.tool.name") or "tool"
        return ToolStep(name=as_text(name), input=raw_in, output=_tool_output(raw_out))

    def tags(self, attributes: Mapping[str, Any]) -> list[str]:
        """LangChain run tags the user gave the root (`seq:step:*` and the like are LangChain's own)."""
        raw = parse_json(attributes.get("traceloop.entity.input"))
        tags = raw.get("tags") if isinstance(raw, Mapping) else None
        if not isinstance(tags, list):
            return []
        return [str(t) for t in tags if isinstance(t, str) and not re.match(r"^(seq:step|map:key|graph:step):", t)]

    def properties(self, attributes: Mapping[str, Any]) -> dict[str, str]:
        found: dict[str, str] = {}
        prefix = self.association_prefix
        for key, value in attributes.items():
            if key.startswith(prefix):
                name = key[len(prefix) :]
                if name and not _INTERNAL_PROPERTY.match(name):
                    found[name] = as_text(value)
        for key, name in (
            ("user.id", "user_id"),
            ("enduser.id", "user_id"),
            ("session.id", "session_id"),
            ("gen_ai.conversation.id", "conversation_id"),
        ):
            value = attributes.get(key)
            if value is not None and name not in found:
                found[name] = as_text(value)
        return found
