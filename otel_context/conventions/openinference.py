"""Arize OpenInference (`openinference-instrumentation-langchain`): `openinference.span.kind` and friends.

OpenInference marks every LangChain run with a kind (CHAIN, LLM, TOOL, ...) but never says which chain
is the top one: the root is simply the CHAIN span whose parent is not a GenAI span, which assembly
decides. Chain input and output are `input.value` / `output.value`, JSON only when the mime type says
so; a run whose input is a one-key dict with a string value is recorded as that bare string. Model
messages are flat keys: `llm.input_messages.{i}.message.role/content/...`. LangChain config metadata
lands in the `metadata` JSON string, and only `session_id` (or `conversation_id`, `thread_id`) is also
copied to `session.id`; `user.id` and `tag.tags` come only from OpenInference's `using_attributes`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..model import Message, SpanEvent
from ..text import as_int, as_text, parse_json
from .base import LANGCHAIN_INTERNAL_METADATA, PLACEHOLDER_MODELS, SpanClass, ToolStep, Usage
from .keys import LS_MODEL_NAME, OPENINFERENCE_SPAN_KIND, SESSION_ID, USER_ID
from .messages import MessageBuilder, group_indexed

# OpenInference's keys, named as `openinference-semantic-conventions` names them.
INPUT_VALUE = "input.value"
INPUT_MIME_TYPE = "input.mime_type"
OUTPUT_VALUE = "output.value"
OUTPUT_MIME_TYPE = "output.mime_type"
LLM_MODEL_NAME = "llm.model_name"
EMBEDDING_MODEL_NAME = "embedding.model_name"
LLM_PROMPTS = "llm.prompts"
LLM_TOKEN_COUNT_PROMPT = "llm.token_count.prompt"
LLM_TOKEN_COUNT_COMPLETION = "llm.token_count.completion"
LLM_TOKEN_COUNT_TOTAL = "llm.token_count.total"
LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_READ = "llm.token_count.prompt_details.cache_read"
LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_WRITE = "llm.token_count.prompt_details.cache_write"
LLM_TOKEN_COUNT_COMPLETION_DETAILS_REASONING = "llm.token_count.completion_details.reasoning"
TOOL_NAME = "tool.name"
TAG_TAGS = "tag.tags"
METADATA = "metadata"
JSON_MIME = "application/json"
CHAIN_KINDS = frozenset({"CHAIN", "AGENT"})
_MESSAGE_KEY = re.compile(r"^llm\.(input|output)_messages\.(\d+)\.message\.(.+)$")
_CONTENT_KEY = re.compile(r"^contents\.(\d+)\.message_content\.(.+)$")
_TOOL_CALL_KEY = re.compile(r"^tool_calls\.(\d+)\.tool_call\.(.+)$")
_PROMPT_KEY = re.compile(r"^llm\.prompts\.(\d+)\.prompt\.text$")


def _langchain_messages(value: Any) -> Any:
    """Rewrite `message_to_dict` dumps (`{"type": "ai", "data": {...}}`) as `{"type", "content"}` messages.

    OpenInference serialises a LangChain message that is a run's whole input or output that way (a chain
    without an output parser returns an AIMessage); `render` reads the `{"type", "content"}` shape.
    """
    if isinstance(value, list):
        return [_langchain_messages(item) for item in value]
    if not isinstance(value, Mapping):
        return value
    data = value.get("data")
    if set(value) == {"type", "data"} and isinstance(data, Mapping) and "content" in data:
        return {"type": value["type"], "content": data["content"]}
    return {key: _langchain_messages(item) for key, item in value.items()}


def _io_value(attributes: Mapping[str, Any], value_key: str, mime_key: str) -> Any:
    """`input.value` / `output.value`, parsed when its mime type is JSON, else the text as recorded."""
    value = attributes.get(value_key)
    if value is None:
        return None
    if attributes.get(mime_key) == JSON_MIME:
        return _langchain_messages(parse_json(value))
    return value


def _message_fields(attributes: Mapping[str, Any]) -> dict[tuple[int, int], dict[str, Any]]:
    """`llm.{input,output}_messages.{i}.message.*` grouped by (side, index); side 0 is input."""
    return group_indexed(attributes, _MESSAGE_KEY, input_side="input")


def _message_parts(fields: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One OpenInference message as GenAI parts: text, tool calls, a tool result."""
    texts: list[str] = []
    if fields.get("content") not in (None, ""):
        texts.append(as_text(fields["content"]))
    contents: dict[int, dict[str, Any]] = {}
    calls: dict[int, dict[str, Any]] = {}
    for key, value in fields.items():
        if match := _CONTENT_KEY.match(key):
            contents.setdefault(int(match.group(1)), {})[match.group(2)] = value
        elif match := _TOOL_CALL_KEY.match(key):
            calls.setdefault(int(match.group(1)), {})[match.group(2)] = value
    for _, content in sorted(contents.items()):
        if content.get("type", "text") == "text" and content.get("text") not in (None, ""):
            texts.append(as_text(content["text"]))
    if fields.get("tool_call_id") is not None:
        return [{"type": "tool_call_response", "id": fields["tool_call_id"], "response": "\n".join(texts)}]
    parts: list[dict[str, Any]] = [{"type": "text", "content": text} for text in texts]
    for _, call in sorted(calls.items()):
        parts.append(
            {
                "type": "tool_call",
                "id": call.get("id"),
                "name": call.get("function.name"),
                "arguments": call.get("function.arguments"),
            }
        )
    if fields.get("function_call_name"):  # OpenAI's legacy function calling
        parts.append(
            {
                "type": "tool_call",
                "name": fields["function_call_name"],
                "arguments": fields.get("function_call_arguments_json"),
            }
        )
    return parts


def _prompts(attributes: Mapping[str, Any]) -> list[str]:
    """Text-completion prompts: `llm.prompts` (a list) or `llm.prompts.{i}.prompt.text`."""
    value = attributes.get(LLM_PROMPTS)
    if isinstance(value, list | tuple):
        return [as_text(v) for v in value if v not in (None, "")]
    indexed = sorted((int(m.group(1)), v) for k, v in attributes.items() if (m := _PROMPT_KEY.match(k)))
    return [as_text(v) for _, v in indexed if v not in (None, "")]


_BUFFER_PREFIX = re.compile(r"^(System|Human|AI|Tool|Function): ", re.MULTILINE)
_BUFFER_ROLES = {"System": "system", "Human": "user", "AI": "assistant", "Tool": "tool", "Function": "tool"}


def _buffer_messages(prompt: str) -> list[tuple[str, str]]:
    """LangChain's `get_buffer_string` back into (role, text) pairs; other text is one user message."""
    starts = list(_BUFFER_PREFIX.finditer(prompt))
    if not starts or starts[0].start() != 0:
        return [("user", prompt)]
    ends = [m.start() for m in starts[1:]] + [len(prompt)]
    pairs = zip(starts, ends, strict=True)
    return [(_BUFFER_ROLES[m.group(1)], prompt[m.end() : end].rstrip("\n")) for m, end in pairs]


def _generations_text(value: Any) -> str | None:
    """The last generation's text of an LLM run's output (`{"generations": [[{"text": ...}]]}`)."""
    if not isinstance(value, Mapping) or not isinstance(value.get("generations"), list):
        return None
    texts = [
        g["text"]
        for row in value["generations"]
        for g in (row if isinstance(row, list) else [row])
        if isinstance(g, Mapping) and isinstance(g.get("text"), str) and g["text"]
    ]
    return texts[-1] if texts else None


def _metadata(attributes: Mapping[str, Any]) -> Mapping[str, Any]:
    parsed = parse_json(attributes.get(METADATA))
    return parsed if isinstance(parsed, Mapping) else {}


class OpenInference:
    """The Arize OpenInference LangChain instrumentation."""

    name = "openinference"
    describes_provider_calls = False
    records_langchain_runs = True

    def classify(self, attributes: Mapping[str, Any]) -> SpanClass | None:
        kind = attributes.get(OPENINFERENCE_SPAN_KIND)
        if not isinstance(kind, str):
            return None
        kind = kind.upper()
        if kind in CHAIN_KINDS:
            return SpanClass.CHAIN
        if kind == "LLM":
            return SpanClass.LLM
        if kind == "TOOL":
            return SpanClass.TOOL
        return SpanClass.STEP  # RETRIEVER, EMBEDDING, RERANKER, GUARDRAIL, EVALUATOR, PROMPT, UNKNOWN

    def models(self, attributes: Mapping[str, Any]) -> list[str]:
        candidates = (
            attributes.get(LLM_MODEL_NAME),
            attributes.get(EMBEDDING_MODEL_NAME),
            _metadata(attributes).get(LS_MODEL_NAME),
        )
        for value in candidates:
            if isinstance(value, str) and value.strip().lower() not in PLACEHOLDER_MODELS:
                return [value.strip()]
        return []

    def usage(self, attributes: Mapping[str, Any]) -> Usage:
        prompt = as_int(attributes.get(LLM_TOKEN_COUNT_PROMPT))
        completion = as_int(attributes.get(LLM_TOKEN_COUNT_COMPLETION))
        total = as_int(attributes.get(LLM_TOKEN_COUNT_TOTAL)) or prompt + completion
        return Usage(
            prompt,
            completion,
            total,
            cache_read_tokens=as_int(attributes.get(LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_READ)),
            cache_write_tokens=as_int(attributes.get(LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_WRITE)),
            reasoning_tokens=as_int(attributes.get(LLM_TOKEN_COUNT_COMPLETION_DETAILS_REASONING)),
        )

    def llm_messages(
        self, attributes: Mapping[str, Any], events: tuple[SpanEvent, ...] = ()
    ) -> tuple[list[Message], list[Message]]:
        builder = MessageBuilder()
        split: int | None = None
        grouped = sorted(_message_fields(attributes).items())
        if not any(side == 0 for (side, _), _ in grouped):
            # No input messages (the oldest releases never wrote them): the prompts instead, which for a
            # chat model are LangChain's buffer string ("System: …\nHuman: …\nAI: …").
            chat = bool(grouped)
            for prompt in _prompts(attributes):
                for role, text in _buffer_messages(prompt) if chat else [("user", prompt)]:
                    builder.add(role, text)
        for (side, _), fields in grouped:
            if side == 1 and split is None:
                split = len(builder.messages)
            role = fields.get("role") or ("user" if side == 0 else "assistant")
            builder.add(as_text(role), _message_parts(fields), force_assistant=side == 1)
        if split is None:  # no output messages: a text-completion model, or a chat reply not recorded
            split = len(builder.messages)
            reply = _generations_text(_io_value(attributes, OUTPUT_VALUE, OUTPUT_MIME_TYPE))
            if reply:
                builder.add("assistant", reply)
        return builder.messages[:split], builder.messages[split:]

    def chain_io(self, attributes: Mapping[str, Any]) -> tuple[Any, Any]:
        inputs = _io_value(attributes, INPUT_VALUE, INPUT_MIME_TYPE)
        return inputs, _io_value(attributes, OUTPUT_VALUE, OUTPUT_MIME_TYPE)

    def run_name(self, attributes: Mapping[str, Any]) -> str | None:
        """None: OpenInference names a run only by its span name."""
        return None

    def workflow_name(self, attributes: Mapping[str, Any]) -> str | None:
        return None

    def operation(self, attributes: Mapping[str, Any]) -> str:
        """`chat`: OpenInference does not record which operation a model call was."""
        return "chat"

    def tool_step(self, attributes: Mapping[str, Any]) -> ToolStep:
        raw_in, raw_out = self.chain_io(attributes)
        if isinstance(raw_in, Mapping) and set(raw_in) == {"input"}:
            raw_in = raw_in["input"]  # a tool's string input, as LangChain wraps it
        if isinstance(raw_out, Mapping) and "content" in raw_out and raw_out.get("type") == "tool":
            raw_out = raw_out["content"]  # a ToolMessage: the tool was called with a ToolCall
        output = None if raw_out is None else as_text(raw_out)
        return ToolStep(name=as_text(attributes.get(TOOL_NAME)) or "tool", input=parse_json(raw_in), output=output)

    def tags(self, attributes: Mapping[str, Any]) -> list[str]:
        """`tag.tags`, set with `using_attributes(tags=...)` (LangChain's own run tags are not recorded)."""
        tags = parse_json(attributes.get(TAG_TAGS))
        if isinstance(tags, str):
            tags = [tags]
        if not isinstance(tags, list | tuple):
            return []
        return [t for t in tags if isinstance(t, str) and t]

    def properties(self, attributes: Mapping[str, Any]) -> dict[str, str]:
        """`user.id`, `session.id`, and the string values of the `metadata` JSON (LangChain config metadata)."""
        found: dict[str, str] = {}
        for key, value in _metadata(attributes).items():
            if isinstance(value, str) and isinstance(key, str) and key and not LANGCHAIN_INTERNAL_METADATA.match(key):
                found[key] = value
        for key, name in ((USER_ID, "user_id"), (SESSION_ID, "session_id")):
            value = attributes.get(key)
            if value not in (None, ""):
                found[name] = as_text(value)
        return found
