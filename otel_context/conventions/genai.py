"""The OpenTelemetry GenAI semantic conventions, as provider instrumentations write them: the one reader of
the GenAI conventions, up to the current `semantic-conventions-genai` (run spans `invoke_agent`,
`invoke_workflow`, `handle_conversation_turn`; usage in `base.genai_usage`; evaluations, as span events or
log records, in `conversion.evaluations`).

`opentelemetry-instrumentation-openai-v2`, Traceloop's `opentelemetry-instrumentation-openai` and
the like describe one model call per span (`gen_ai.operation.name` or `llm.request.type`) and say
nothing about LangChain. The messages have moved three times, and all three are still in use, so they
are read in this order:

1. span attributes: `gen_ai.system_instructions`, `gen_ai.input.messages`, `gen_ai.output.messages`
   (semconv 1.37 and later), or the flat `gen_ai.prompt.{i}.*` / `gen_ai.completion.{i}.*` keys;
2. span events: `gen_ai.client.inference.operation.details` (the same three keys as attributes);
   else one event per message (semconv 1.28 to 1.36): `gen_ai.system.message`, `gen_ai.user.message`,
   `gen_ai.assistant.message`, `gen_ai.tool.message`, `gen_ai.choice`, whose body is either in
   attributes of its own (`content`, `role`, `tool_calls`, `id`, `message`, `index`, `finish_reason`)
   or a JSON object in `gen_ai.event.content` or `body`;
   else `gen_ai.content.prompt` / `gen_ai.content.completion` carrying `gen_ai.prompt` /
   `gen_ai.completion` (semconv 1.26 and 1.27).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..model import Message, SpanEvent
from ..text import as_text, compact_json, parse_json
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
    GEN_AI_COMPLETION,
    GEN_AI_INPUT_MESSAGES,
    GEN_AI_OPERATION_NAME,
    GEN_AI_OUTPUT_MESSAGES,
    GEN_AI_PROMPT,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_SYSTEM,
    GEN_AI_SYSTEM_INSTRUCTIONS,
    GEN_AI_TOOL_CALL_ARGUMENTS,
    GEN_AI_TOOL_CALL_RESULT,
    GEN_AI_TOOL_NAME,
    GEN_AI_WORKFLOW_NAME,
    LLM_REQUEST_TYPE,
    OPENINFERENCE_SPAN_KIND,
    TRACELOOP_SPAN_KIND,
    TRACELOOP_WORKFLOW_NAME,
)
from .messages import MessageBuilder, has_flat_messages, read_flat_messages

# Keys of the conventions registered before this one: their spans are theirs, whatever else they carry.
OTHER_CONVENTION_KEYS = (TRACELOOP_SPAN_KIND, TRACELOOP_WORKFLOW_NAME, OPENINFERENCE_SPAN_KIND)
OPERATIONS = {
    "chat": SpanClass.LLM,
    "text_completion": SpanClass.LLM,
    "completion": SpanClass.LLM,  # `llm.request.type` of Traceloop's provider instrumentations
    "generate_content": SpanClass.LLM,
    "execute_tool": SpanClass.TOOL,
    "invoke_agent": SpanClass.CHAIN,  # client (a remote agent) and internal (in process) alike
    "invoke_workflow": SpanClass.CHAIN,  # semconv 1.39: a workflow of agents
    # semantic-conventions-genai: a framework runner's entry point (ADK, OpenAI Agents `Runner.run`), which was
    # `invoke_workflow`; with `invoke_agent` and `invoke_workflow` an in-process `gen_ai.invocation.internal`
    # span, whose `gen_ai.invocation.is_nested` the span's parent already says
    "handle_conversation_turn": SpanClass.CHAIN,
}
DETAILS_EVENT = "gen_ai.client.inference.operation.details"
MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
CHOICE_EVENT = "gen_ai.choice"
PROMPT_EVENT = "gen_ai.content.prompt"  # semconv 1.26-1.27, carrying `gen_ai.prompt`
COMPLETION_EVENT = "gen_ai.content.completion"  # ... and `gen_ai.completion`
CONTENT_EVENTS = frozenset({PROMPT_EVENT, COMPLETION_EVENT})
BODY_KEYS = ("gen_ai.event.content", "body", "event.body")  # the whole event body as one JSON object
BODY_FIELDS = ("content", "role", "id", "tool_call_id", "tool_calls", "message", "index", "finish_reason")


def _is_block(value: Any) -> bool:
    """A content block of some provider: a GenAI part, an OpenAI content part, a Bedrock block."""
    return isinstance(value, str) or (
        isinstance(value, Mapping) and any(k in value for k in ("type", "text", "toolUse", "toolResult"))
    )


def _parts(content: Any) -> list[dict[str, Any]]:
    """Message content in any recorded shape as GenAI parts (`text`, `tool_call`, `tool_call_response`)."""
    if content is None or content == "":
        return []
    parsed = parse_json(content)
    if isinstance(parsed, Mapping) and _is_block(parsed):
        parsed = [parsed]
    if not (isinstance(parsed, list) and parsed and all(_is_block(b) for b in parsed)):
        # plain text, or JSON that is no content blocks: the text as the model saw it
        return [{"type": "text", "content": content if isinstance(content, str) else compact_json(content)}]
    parts: list[dict[str, Any]] = []
    for block in parsed:
        if isinstance(block, str):
            parts.append({"type": "text", "content": block})
        elif isinstance(block.get("toolUse"), Mapping):  # Bedrock Converse
            use = block["toolUse"]
            call = {"type": "tool_call", "id": use.get("toolUseId"), "name": use.get("name")}
            parts.append({**call, "arguments": use.get("input")})
        elif isinstance(block.get("toolResult"), Mapping):
            result = block["toolResult"]
            response = _text(_parts(result.get("content")))
            parts.append({"type": "tool_call_response", "id": result.get("toolUseId"), "response": response})
        elif block.get("type") == "tool_call_response" and "response" not in block and "result" in block:
            parts.append({**block, "response": block["result"]})  # the semconv docs' example says `result`
        elif "type" not in block:
            parts.append({"type": "text", "content": block.get("text")})
        else:
            parts.append(dict(block))
    return parts


def _text(parts: Iterable[Mapping[str, Any]]) -> str:
    texts = [as_text(p.get("content", p.get("text"))) for p in parts if p.get("type", "text") == "text"]
    return "\n".join(t for t in texts if t)


def _tool_call_parts(calls: Any) -> list[dict[str, Any]]:
    """OpenAI-style `tool_calls` (`{"id", "function": {"name", "arguments"}}`) as `tool_call` parts."""
    calls = parse_json(calls)
    if isinstance(calls, Mapping):
        calls = [calls]
    if not isinstance(calls, list):
        return []
    parts = []
    for call in calls:
        if not isinstance(call, Mapping):
            continue
        function: Mapping[str, Any] = call["function"] if isinstance(call.get("function"), Mapping) else {}
        parts.append(
            {
                "type": "tool_call",
                "id": call.get("id"),
                "name": function.get("name") or call.get("name"),
                "arguments": function.get("arguments", call.get("arguments", call.get("args"))),
            }
        )
    return parts


def _message_parts(role: str, message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A `{role, parts}` (semconv 1.37) or `{role, content, tool_calls, tool_call_id | id}` message as parts."""
    if "parts" in message:
        return _parts(message["parts"])
    parts = _parts(message.get("content"))
    if role == "tool":
        call_id = message.get("tool_call_id", message.get("id"))
        if not any(p.get("type") == "tool_call_response" for p in parts):
            parts = [{"type": "tool_call_response", "id": call_id, "response": _text(parts)}]
        return parts
    return parts + _tool_call_parts(message.get("tool_calls"))


def _message_list(value: Any) -> list[Mapping[str, Any]]:
    parsed = parse_json(value)
    if isinstance(parsed, Mapping):
        parsed = [parsed]
    if isinstance(parsed, str) and parsed:
        return [{"content": parsed}]
    return [m for m in parsed if isinstance(m, Mapping)] if isinstance(parsed, list) else []


def _add_system(builder: MessageBuilder, instructions: Any) -> None:
    """`gen_ai.system_instructions`: a list of parts, or plain text."""
    if instructions is not None:
        builder.add("system", _parts(instructions))


def _read_lists(builder: MessageBuilder, system: Any, inputs: Any, outputs: Any) -> int:
    """System instructions, input and output message lists into the builder; returns the split."""
    _add_system(builder, system)
    for message in _message_list(inputs):
        role = as_text(message.get("role")) or "user"
        builder.add(role, _message_parts(role.lower(), message))
    split = len(builder.messages)
    for message in _message_list(outputs):
        role = as_text(message.get("role")) or "assistant"
        builder.add(role, _message_parts(role.lower(), message), force_assistant=True)
    return split


def _event_body(event: SpanEvent) -> dict[str, Any]:
    """An old-style message event's body: a JSON object in one attribute, or one attribute per field."""
    attributes = event.attributes
    body: dict[str, Any] = {}
    for key in BODY_KEYS:
        if key in attributes:
            parsed = parse_json(attributes[key])
            body = dict(parsed) if isinstance(parsed, Mapping) else {"content": parsed}
            break
    for key in BODY_FIELDS:
        if key not in body and key in attributes:
            body[key] = attributes[key]
    return body


def _choice_message(body: Mapping[str, Any]) -> dict[str, Any]:
    """A `gen_ai.choice` body's message: `message` is an object, or (Strands) the content itself."""
    message = parse_json(body.get("message"))
    if isinstance(message, Mapping) and any(k in message for k in ("content", "tool_calls", "role", "parts")):
        found = dict(message)
    else:
        found = {"content": body.get("message", body.get("content"))}
    if "tool_calls" not in found and body.get("tool_calls") is not None:
        found["tool_calls"] = body["tool_calls"]
    return found


def _read_message_events(builder: MessageBuilder, events: Iterable[SpanEvent]) -> int:
    """Semconv 1.28-1.36 message events: inputs in order, then choices by index; returns the split."""
    choices: list[tuple[int, int, dict[str, Any]]] = []
    for position, event in enumerate(events):
        if event.name == CHOICE_EVENT:
            body = _event_body(event)
            index = body.get("index")
            index = int(index) if isinstance(index, int | str) and str(index).isdigit() else position
            choices.append((index, position, _choice_message(body)))
        elif event.name in MESSAGE_EVENTS:
            role = MESSAGE_EVENTS[event.name]
            builder.add(role, _message_parts(role, _event_body(event)))
    split = len(builder.messages)
    for _, _, message in sorted(choices, key=lambda c: (c[0], c[1])):
        builder.add("assistant", _message_parts("assistant", message), force_assistant=True)
    return split


def _read_content_events(builder: MessageBuilder, events: Iterable[SpanEvent]) -> int | None:
    """Semconv 1.26-1.27: `gen_ai.content.prompt` / `.completion` events; None when there are none."""
    found = {name: event for event in events if (name := event.name) in CONTENT_EVENTS}
    if not found:
        return None
    prompt = found.get(PROMPT_EVENT)
    completion = found.get(COMPLETION_EVENT)
    return _read_lists(
        builder,
        None,
        prompt.attributes.get(GEN_AI_PROMPT) if prompt else None,
        completion.attributes.get(GEN_AI_COMPLETION) if completion else None,
    )


class GenAISemconv:
    """Spans of provider instrumentations that follow the OpenTelemetry GenAI semantic conventions."""

    name = "genai"
    # A provider instrumentation's model span may duplicate a LangChain model span it runs inside
    # (as a sibling, or in a trace of its own): assembly matches such spans by time before making
    # them roots.
    describes_provider_calls = True
    records_langchain_runs = False

    def __init__(self, association_prefix: str = ASSOCIATION_PREFIX) -> None:
        # Traceloop's provider instrumentations write OpenLLMetry's association properties too.
        self.association_prefix = association_prefix

    def classify(self, attributes: Mapping[str, Any]) -> SpanClass | None:
        if any(key in attributes for key in OTHER_CONVENTION_KEYS):
            return None
        operation = attributes.get(GEN_AI_OPERATION_NAME) or attributes.get(LLM_REQUEST_TYPE)
        if isinstance(operation, str) and operation:
            return OPERATIONS.get(operation.lower(), SpanClass.STEP)  # embeddings, create_agent, rerank, ...
        if (attributes.get(GEN_AI_SYSTEM) or attributes.get(GEN_AI_PROVIDER_NAME)) and (
            attributes.get(GEN_AI_REQUEST_MODEL) or attributes.get(GEN_AI_RESPONSE_MODEL)
        ):
            return SpanClass.LLM  # semconv 1.26: no operation name yet
        return None

    def models(self, attributes: Mapping[str, Any]) -> list[str]:
        for key in (GEN_AI_RESPONSE_MODEL, GEN_AI_REQUEST_MODEL):
            value = attributes.get(key)
            if isinstance(value, str) and value.strip().lower() not in PLACEHOLDER_MODELS:
                return [value.strip()]
        return []

    def usage(self, attributes: Mapping[str, Any]) -> Usage:
        return genai_usage(attributes)

    def llm_messages(
        self, attributes: Mapping[str, Any], events: tuple[SpanEvent, ...] = ()
    ) -> tuple[list[Message], list[Message]]:
        builder = MessageBuilder()
        system = attributes.get(GEN_AI_SYSTEM_INSTRUCTIONS)
        if GEN_AI_INPUT_MESSAGES in attributes or GEN_AI_OUTPUT_MESSAGES in attributes:
            split = _read_lists(
                builder, system, attributes.get(GEN_AI_INPUT_MESSAGES), attributes.get(GEN_AI_OUTPUT_MESSAGES)
            )
        elif has_flat_messages(attributes):
            _add_system(builder, system)
            split = read_flat_messages(attributes, builder)
        else:
            split = self._read_events(builder, system, events)
        return builder.messages[:split], builder.messages[split:]

    @staticmethod
    def _read_events(builder: MessageBuilder, system: Any, events: tuple[SpanEvent, ...]) -> int:
        details = next((e for e in events if e.name == DETAILS_EVENT), None)
        if details is not None:
            get = details.attributes.get
            return _read_lists(
                builder,
                get(GEN_AI_SYSTEM_INSTRUCTIONS, system),
                get(GEN_AI_INPUT_MESSAGES),
                get(GEN_AI_OUTPUT_MESSAGES),
            )
        _add_system(builder, system)
        if any(e.name in MESSAGE_EVENTS or e.name == CHOICE_EVENT for e in events):
            return _read_message_events(builder, events)
        split = _read_content_events(builder, events)
        return len(builder.messages) if split is None else split

    def chain_io(self, attributes: Mapping[str, Any]) -> tuple[Any, Any]:
        """An agent or workflow span's question and answer: its last user and last assistant message.

        A run's input that is no list of messages (a chain's `{"product": "socks"}`, a graph state) is
        recorded as one user message whose text is that input as JSON (the official LangChain
        instrumentation does so): it is given back parsed, so it renders as the other conventions' inputs
        (a lone key as its value, several keys as compact JSON).
        """
        inputs, outputs = self.llm_messages(attributes)
        asked = [m.text for m in inputs if m.type == "message" and m.role == "user"]
        answered = [m.text for m in outputs if m.type == "message" and m.role == "assistant"]
        question: Any = asked[-1] if asked else None
        if len(inputs) == 1 and isinstance(question, str) and question[:1] == "{":
            parsed = parse_json(question)
            question = parsed if isinstance(parsed, Mapping) else question
        return question, (answered[-1] if answered else None)

    def run_name(self, attributes: Mapping[str, Any]) -> str | None:
        return self.workflow_name(attributes)

    def workflow_name(self, attributes: Mapping[str, Any]) -> str | None:
        """`invoke_workflow` (semconv 1.39): `gen_ai.workflow.name`."""
        name = attributes.get(GEN_AI_WORKFLOW_NAME)
        return as_text(name) if name else None

    def operation(self, attributes: Mapping[str, Any]) -> str:
        return genai_operation(attributes)

    def tool_step(self, attributes: Mapping[str, Any]) -> ToolStep:
        """`execute_tool`: `gen_ai.tool.name`, `gen_ai.tool.call.arguments`, `gen_ai.tool.call.result`."""
        result = attributes.get(GEN_AI_TOOL_CALL_RESULT)
        return ToolStep(
            name=as_text(attributes.get(GEN_AI_TOOL_NAME)) or "tool",
            input=parse_json(attributes.get(GEN_AI_TOOL_CALL_ARGUMENTS)),
            output=None if result is None else as_text(parse_json(result)),
        )

    def tags(self, attributes: Mapping[str, Any]) -> list[str]:
        return []

    def properties(self, attributes: Mapping[str, Any]) -> dict[str, str]:
        """`user.id`, `enduser.id`, `session.id`, `gen_ai.conversation.id` (and OpenLLMetry association properties)."""
        return association_properties(attributes, self.association_prefix)
