"""Message building shared by the readers: (role, parts) pairs -> Context messages, and flat indexed keys.

Every convention records a model call's messages its own way; each reader turns them into GenAI-style
parts (`text`, `tool_call`, `tool_call_response`) and hands them to a `MessageBuilder`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..model import Message
from ..text import as_text, blocks_text, compact_json, parse_json
from .keys import GEN_AI_COMPLETION, GEN_AI_PROMPT

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
# The flat message keys of OpenLLMetry before 0.55 and of Traceloop's provider instrumentations:
# `gen_ai.prompt.{i}.<field>` and `gen_ai.completion.{i}.<field>`, as (side key, index, field).
FLAT_MESSAGE_KEY = re.compile(rf"^({re.escape(GEN_AI_PROMPT)}|{re.escape(GEN_AI_COMPLETION)})\.(\d+)\.(.*)$")


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


def has_flat_messages(attributes: Mapping[str, Any]) -> bool:
    """Whether the span records its messages as flat `gen_ai.prompt.{i}.*` / `gen_ai.completion.{i}.*` keys."""
    return any(FLAT_MESSAGE_KEY.match(key) for key in attributes)


def read_flat_messages(attributes: Mapping[str, Any], builder: MessageBuilder) -> int:
    """Flat keys (`gen_ai.prompt.{i}.role/content/tool_calls.{j}.*`, `gen_ai.completion.{i}.*`) into the
    builder; returns the split between input and output messages."""
    split: int | None = None
    entries = group_indexed(attributes, FLAT_MESSAGE_KEY, input_side=GEN_AI_PROMPT)
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
