"""The conversion core: an assembled root span and what its descendants reported -> one thread.

Pure functions, no I/O and no state: `assembly.TraceBuffer` decides when a root is complete and
calls `convert_root`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .conventions import Convention, SpanClass, Usage
from .model import STATUS_ERROR, ConversationThread, Message, SpanRecord
from .render import render
from .text import as_text, clean_text

# uuid5 namespace of otel-context thread ids: the same trace and root always give the same id.
THREAD_NAMESPACE = uuid.UUID("6f0c2f8e-5d1a-4f57-9a63-0e1c7c0a7e21")
NO_CONTENT_TEXT = "[content not recorded: the instrumentation captured no prompts or completions]"


@dataclass(slots=True, frozen=True)
class ConversionOptions:
    """Limits applied to every thread; text past a limit is cut and marked, never dropped whole."""

    max_message_chars: int = 65_536
    max_metadata_chars: int = 2_048


DEFAULT_OPTIONS = ConversionOptions()


@dataclass(slots=True)
class Contribution:
    """What a non-root span adds to its root's thread, kept compact while the root is awaited."""

    span_id: int
    parent_id: int | None
    models: tuple[str, ...] = ()
    usage: Usage = field(default_factory=Usage)


def thread_id(trace_id: int, span_id: int) -> str:
    """A stable UUID-shaped id: retried uploads of one root update one thread."""
    return str(uuid.uuid5(THREAD_NAMESPACE, f"{trace_id:032x}/{span_id:016x}"))


def contribution(span: SpanRecord, convention: Convention) -> Contribution:
    attributes = span.attributes
    return Contribution(
        span_id=span.span_id,
        parent_id=span.parent_id,
        models=tuple(convention.models(attributes)),
        usage=convention.usage(attributes),
    )


def convert_root(
    root: SpanRecord,
    span_class: SpanClass,
    convention: Convention,
    descendants: Iterable[Contribution] = (),
    options: ConversionOptions = DEFAULT_OPTIONS,
) -> ConversationThread:
    """One thread for a chain root or a standalone model call."""
    attributes = root.attributes
    if span_class is SpanClass.CHAIN_ROOT:
        messages = _chain_messages(root, convention)
    else:
        messages = _llm_messages(root, convention)
    if not any(m.type == "message" and m.role in ("user", "assistant") for m in messages):
        messages.insert(0, Message(role="system", type="event", text=NO_CONTENT_TEXT, timestamp_ns=root.start_ns))
    error = _error(root)
    if error is not None:
        messages.append(Message(role="system", type="event", text=f"{error[0]}: {error[1]}", timestamp_ns=root.end_ns))

    own = contribution(root, convention)
    models = list(own.models)
    usage = Usage()
    usage.add(own.usage)
    for item in descendants:
        usage.add(item.usage)
        models.extend(m for m in item.models if m not in models)

    metadata: dict[str, str] = {
        "trace_id": root.trace_hex,
        "span_id": root.span_hex,
        "latency_ms": str(round(max(0, root.end_ns - root.start_ns) / 1e6, 3)),
        "source": "otel-context",
    }
    if span_class is SpanClass.CHAIN_ROOT:
        name = attributes.get("traceloop.entity.name") or attributes.get("traceloop.workflow.name") or root.name
        metadata["workflow"] = as_text(name)
    else:
        metadata["operation"] = as_text(attributes.get("gen_ai.operation.name", "chat"))
    if models:
        metadata["model"] = ",".join(models)
    if usage:
        metadata["input_tokens"] = str(usage.input_tokens)
        metadata["output_tokens"] = str(usage.output_tokens)
        metadata["total_tokens"] = str(usage.total_tokens)
    service = root.resource.get("service.name")
    if service:
        metadata["service_name"] = as_text(service)
    tags = convention.tags(attributes)
    if tags:
        metadata["tags"] = ",".join(tags)
    for key, value in convention.properties(attributes).items():
        metadata.setdefault(key, value)
    if error is not None:
        metadata["error"] = "true"
        metadata["error_type"] = error[0]
        metadata["error_message"] = error[1]

    return ConversationThread(
        id=thread_id(root.trace_id, root.span_id),
        messages=[_clean_message(m, options) for m in messages],
        metadata={k: clean_text(v, options.max_metadata_chars) for k, v in metadata.items()},
        trace_id=root.trace_hex,
        end_ns=root.end_ns,
    )


def _chain_messages(root: SpanRecord, convention: Convention) -> list[Message]:
    raw_in, raw_out = convention.chain_io(root.attributes)
    messages = []
    text_in = render(raw_in, side="input")
    if text_in:
        messages.append(Message(role="user", text=text_in, timestamp_ns=root.start_ns))
    text_out = render(raw_out, side="output")
    if text_out:
        messages.append(Message(role="assistant", text=text_out, timestamp_ns=root.end_ns))
    return messages


def _llm_messages(root: SpanRecord, convention: Convention) -> list[Message]:
    inputs, outputs = convention.llm_messages(root.attributes)
    for message in inputs:
        message.timestamp_ns = root.start_ns
    for message in outputs:
        message.timestamp_ns = root.end_ns
    return [*inputs, *outputs]


def _error(root: SpanRecord) -> tuple[str, str] | None:
    """(type, text) of a failed root, from its `exception` event, `error.type` and status."""
    if root.status_code != STATUS_ERROR:
        return None
    error_type = as_text(root.attributes.get("error.type"))
    message = root.status_message
    for event in root.events:
        if event.name == "exception":
            error_type = error_type or as_text(event.attributes.get("exception.type"))
            message = message or as_text(event.attributes.get("exception.message"))
            break
    return error_type or "Error", message or "the root span ended with status ERROR"


def _clean_message(message: Message, options: ConversionOptions) -> Message:
    message.text = clean_text(message.text, options.max_message_chars)
    if message.observation is not None:
        message.observation = clean_text(message.observation, options.max_message_chars)
    return message


def descendants_of(root_id: int, pending: Sequence[Contribution]) -> list[Contribution]:
    """The contributions whose parent chain leads to `root_id`."""
    children: dict[int | None, list[Contribution]] = {}
    for item in pending:
        children.setdefault(item.parent_id, []).append(item)
    found: list[Contribution] = []
    stack = [root_id]
    while stack:
        for child in children.get(stack.pop(), ()):
            found.append(child)
            stack.append(child.span_id)
    return found
