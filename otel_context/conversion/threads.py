"""The conversion core: an assembled root span and what its descendants reported -> one thread.

Pure functions, no I/O and no state: `assembly.TraceBuffer` decides when a root is complete and
calls `convert_root`.
"""

from __future__ import annotations

import enum
import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..conventions import Convention, SpanClass, Usage
from ..conventions.base import ToolStep
from ..conventions.feedback import span_rating
from ..conventions.keys import (
    ERROR_TYPE,
    EXCEPTION_EVENT,
    EXCEPTION_MESSAGE,
    EXCEPTION_TYPE,
    GEN_AI_CLIENT_OPERATION_EXCEPTION_EVENT,
    SERVICE_NAME,
)
from ..model import ConversationThread, Message, SpanEvent, SpanRecord, SpanStatus, iso8601
from ..text import as_text, clean_text
from .cost import UNKNOWN_MODEL, Pricing, ThreadCost, usd
from .evaluations import Evaluation, RatingRule, evaluation_metadata, evaluation_rating, span_evaluations
from .render import interrupt_text, render

# uuid5 namespace of otel-context thread ids: the same trace and root always give the same id.
THREAD_NAMESPACE = uuid.UUID("6f0c2f8e-5d1a-4f57-9a63-0e1c7c0a7e21")
EXCEPTION_EVENTS = frozenset({EXCEPTION_EVENT, GEN_AI_CLIENT_OPERATION_EXCEPTION_EVENT})
EMPTY_RENDERINGS = frozenset({"", "{}", "[]", "null", '""'})
_NAMESPACE_BYTES = THREAD_NAMESPACE.bytes
NO_CONTENT_TEXT = "[content not recorded: the instrumentation captured no prompts or completions]"


@dataclass(slots=True, frozen=True)
class ConversionOptions:
    """Limits applied to every thread; text past a limit is cut and marked, never dropped whole."""

    max_message_chars: int = 65_536
    max_metadata_chars: int = 2_048
    include_tools: bool = False  # the root's tool runs as `type: tool` messages between question and answer
    pricing: Pricing | None = None  # `cost_usd` from the usage, when `genai-prices` is installed
    eval_rules: tuple[RatingRule, ...] = ()  # evaluation results that rate the answer


DEFAULT_OPTIONS = ConversionOptions()


class ContributionKind(enum.Enum):
    """What a held span is to its root's thread: a model call (its usage counts once per call), a tool run,
    or any other step."""

    LLM = "llm"
    TOOL = "tool"
    STEP = "step"


@dataclass(slots=True)
class Contribution:
    """What a non-root span adds to its root's thread, kept compact while the root is awaited."""

    span_id: int
    parent_id: int | None
    kind: ContributionKind = ContributionKind.STEP
    start_ns: int = 0
    end_ns: int = 0
    models: tuple[str, ...] = ()
    usage: Usage = field(default_factory=Usage)
    tool: ToolStep | None = None
    rating: int | None = None
    evaluations: tuple[Evaluation, ...] = ()
    run: RunContent | None = None  # a chain step's question and answer, for a wrapper root above it
    interrupt: str | None = None  # what a LangGraph `interrupt()` in this step asked the human
    call: ModelCallText | None = None  # a model call's messages, read only for a root that recorded no input or output


@dataclass(slots=True, frozen=True)
class ModelCallText:
    """A held model call's messages, read only if its root chain turns out to have an empty side.

    Reading every model call's messages up front cost a quarter of conversion time for a rare case; the
    attributes are the span's own (no copy), kept until the root comes.
    """

    convention: Convention
    attributes: Mapping[str, Any]
    events: tuple[SpanEvent, ...]

    def first_question(self) -> str | None:
        inputs, _ = self.convention.llm_messages(self.attributes, self.events)
        return next((m.text for m in inputs if m.role == "user" and m.type == "message"), None)

    def last_answer(self) -> str | None:
        _, outputs = self.convention.llm_messages(self.attributes, self.events)
        return next((m.text for m in reversed(outputs) if m.role == "assistant" and m.type == "message"), None)


@dataclass(slots=True, frozen=True)
class RunContent:
    """A chain's question and answer as rendered text, and what the user said about the run.

    A chain step keeps this compact form (never the raw state) so that a wrapper root without content of
    its own, like LangGraph's `invoke_agent` span, can show the run it wraps.
    """

    question: str | None = None
    answer: str | None = None
    name: str | None = None
    properties: tuple[tuple[str, str], ...] = ()
    tags: tuple[str, ...] = ()

    @property
    def recorded(self) -> bool:
        return self.question is not None or self.answer is not None


def thread_id(trace_id: int, span_id: int) -> str:
    """A stable UUID-shaped id: retried uploads of one root update one thread."""
    return namespaced_id(f"{trace_id:032x}/{span_id:016x}")


def namespaced_id(name: str) -> str:
    """Every thread id otel-context makes (a run's, a session's): `str(uuid.uuid5(THREAD_NAMESPACE, name))`.

    Without the UUID object (SHA-1, version 5, RFC 4122 variant): this is on the path of every run.
    """
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def contribution(span: SpanRecord, convention: Convention, span_class: SpanClass, with_tools: bool) -> Contribution:
    attributes = span.attributes
    is_tool = span_class is SpanClass.TOOL
    return Contribution(
        span_id=span.span_id,
        parent_id=span.parent_id,
        kind=ContributionKind.LLM if span_class.is_llm else ContributionKind.TOOL if is_tool else ContributionKind.STEP,
        start_ns=span.start_ns,
        end_ns=span.end_ns,
        models=tuple(convention.models(attributes)),
        usage=convention.usage(attributes),
        tool=convention.tool_step(attributes) if is_tool and with_tools else None,
        rating=span_rating(span),
        evaluations=span_evaluations(span) if span.events else (),
        run=run_content(span, convention) if span_class.is_chain else None,
        interrupt=_interrupt(span) if span.status_code == SpanStatus.ERROR else None,
        call=ModelCallText(convention, attributes, span.events) if span_class.is_llm else None,
    )


def _interrupt(span: SpanRecord) -> str | None:
    """The question of a LangGraph `interrupt()`: the node's span ends with a `GraphInterrupt` exception."""
    for event in span.events:
        if event.name == EXCEPTION_EVENT and as_text(event.attributes.get(EXCEPTION_TYPE)).endswith("GraphInterrupt"):
            return interrupt_text(as_text(event.attributes.get(EXCEPTION_MESSAGE)))
    return None


def run_content(span: SpanRecord, convention: Convention) -> RunContent:
    """A chain span's rendered question and answer, name, properties and tags."""
    raw_in, raw_out = convention.chain_io(span.attributes)
    attributes = span.attributes
    return RunContent(
        question=_recorded(render(raw_in, side="input")),
        answer=_recorded(render(raw_out, side="output")),
        name=convention.run_name(attributes),
        properties=tuple(convention.properties(attributes).items()),
        tags=tuple(convention.tags(attributes)),
    )


def _recorded(text: str) -> str | None:
    """Rendered chain input or output, None when it says nothing (`{}` is a state or input with no keys)."""
    return None if text in EMPTY_RENDERINGS else text


def convert_root(
    root: SpanRecord,
    span_class: SpanClass,
    convention: Convention,
    descendants: Iterable[Contribution] = (),
    options: ConversionOptions = DEFAULT_OPTIONS,
    logged: Iterable[Evaluation] = (),
) -> ConversationThread | None:
    """One thread for a chain root, a standalone model call, or a lone tool run; `logged`: evaluations of the
    run that came as log records rather than span events.

    None for a wrapper chain with no content and nothing below it: it would be a thread without a
    single message of the user's (what `invoke_agent LangGraph` is when its run became a thread of its own).
    """
    attributes = root.attributes
    descendants = list(descendants)
    own = contribution(root, convention, span_class, with_tools=True)
    io_source: str | None = None
    run = own.run
    if span_class.is_chain:
        if run is not None and not run.recorded:
            if span_class is SpanClass.CHAIN and not descendants:
                return None
            run = _wrapped_run(root.span_id, run, descendants)
            workflow = convention.workflow_name(attributes)
            if workflow is not None:  # a named workflow of agents keeps its own name
                run = replace(run, name=workflow)
        asked = [c for c in descendants if c.interrupt is not None]
        if asked and run is not None:  # the run stopped to ask the human: that question is its answer
            run = replace(run, answer=max(asked, key=lambda c: c.start_ns).interrupt)
        filled = _from_model_calls(run, descendants, failed=root.status_code == SpanStatus.ERROR)
        if filled is not None:
            run, io_source = filled, "model_calls"
        messages = _chain_messages(root, run)
        if options.include_tools:
            steps = sorted((c for c in descendants if c.tool is not None), key=lambda c: c.start_ns)
            at = 1 if messages and messages[0].role == "user" else 0
            messages[at:at] = [_tool_message(c.tool, c.start_ns) for c in steps if c.tool is not None]
    elif span_class is SpanClass.TOOL:
        messages = [_tool_message(own.tool, root.start_ns)] if own.tool is not None else []
    else:
        messages = _llm_messages(root, convention)
    if not messages:
        messages.append(Message(role="system", type="event", text=NO_CONTENT_TEXT, timestamp_ns=root.start_ns))
    feedback = _last_rating(own, descendants)
    evaluations = [e for c in (own, *descendants) for e in c.evaluations]
    evaluations += logged
    judged = evaluation_rating(evaluations, options.eval_rules) if evaluations else None
    rating = feedback if feedback is not None else judged  # the user's own word over an evaluator's
    if rating is not None:
        answer = next((m for m in reversed(messages) if m.role == "assistant" and m.type == "message"), None)
        if answer is not None:
            answer.rating = rating
    error = _error(root)
    if error is not None:
        messages.append(Message(role="system", type="event", text=f"{error[0]}: {error[1]}", timestamp_ns=root.end_ns))

    models, usage, per_model = _models_and_usage(own, descendants)
    metadata: dict[str, str] = {
        "trace_id": root.trace_hex,
        "span_id": root.span_hex,
        # to the microsecond: runs a few hundred µs apart would sort as ties at Context's milliseconds
        "started_at": iso8601(root.start_ns, "microseconds"),
        "latency_ms": str(round(max(0, root.end_ns - root.start_ns) / 1e6, 3)),
        "source": "otel-context",
    }
    if span_class.is_chain:
        metadata["workflow"] = (run.name if run is not None else None) or root.name
    elif span_class is SpanClass.TOOL:
        metadata["operation"] = "execute_tool"
    else:
        metadata["operation"] = convention.operation(attributes)
    if models:
        metadata["model"] = ",".join(models)
    if usage:
        metadata["input_tokens"] = str(usage.input_tokens)
        metadata["output_tokens"] = str(usage.output_tokens)
        metadata["total_tokens"] = str(usage.total_tokens)
        for key in ("cache_read_tokens", "cache_write_tokens", "reasoning_tokens"):
            if getattr(usage, key):
                metadata[key] = str(getattr(usage, key))
    if options.pricing is not None:
        metadata.update(_cost_metadata(options.pricing.thread_cost(per_model, root.start_ns)))
    service = as_text(root.resource.get(SERVICE_NAME))
    if service and not service.startswith("unknown_service"):  # the SDK's placeholder names no service
        metadata["service_name"] = service
    tags = list(run.tags) if run is not None else convention.tags(attributes)
    if tags:
        metadata["tags"] = ",".join(tags)
    properties = run.properties if run is not None else convention.properties(attributes).items()
    for key, value in properties:
        metadata.setdefault(key, value)
    if io_source is not None:
        metadata["io_source"] = io_source
    if feedback is not None:
        metadata["feedback_rating"] = str(feedback)
    metadata.update(evaluation_metadata(evaluations))
    if judged is not None:
        metadata["eval_rating"] = str(judged)
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
        start_ns=root.start_ns,
        name=metadata.get("workflow") or root.name,
    )


def _models_and_usage(own: Contribution, descendants: list[Contribution]) -> tuple[list[str], Usage, dict[str, Usage]]:
    """Models and token totals of a trace (also per model, for pricing), counting one model call once.

    A provider instrumentation (OpenAI, Anthropic, ...) beside the LangChain one adds a span for the same
    call under the LangChain model span; its usage is the same tokens, so it counts only when its parent
    reported none. Its model name is often the more precise one and is kept. An agent or workflow span
    that reports the sum of the model calls below it (`invoke_agent`, agent steps) counts only when
    none of them reported usage: summing both would count every token twice.
    """
    by_id = {c.span_id: c for c in descendants}
    by_id[own.span_id] = own
    children: dict[int | None, list[Contribution]] = {}
    for item in descendants:
        children.setdefault(item.parent_id, []).append(item)
    above_model_usage: set[int] = set()  # spans with a model call that reported usage somewhere below them
    for item in descendants:
        if item.kind is ContributionKind.LLM and item.usage:
            parent = by_id.get(item.parent_id) if item.parent_id is not None else None
            while parent is not None and parent.span_id not in above_model_usage:
                above_model_usage.add(parent.span_id)
                parent = by_id.get(parent.parent_id) if parent.parent_id is not None else None
    models = list(own.models)
    usage = Usage()
    per_model: dict[str, Usage] = {}
    for item in (own, *descendants):
        models.extend(m for m in item.models if m not in models)
        if not item.usage:
            continue
        if item.kind is not ContributionKind.LLM and item.span_id in above_model_usage:
            continue  # an aggregate over model calls already counted
        parent = by_id.get(item.parent_id) if item.parent_id is not None else None
        if (
            item.kind is ContributionKind.LLM
            and parent is not None
            and parent.kind is ContributionKind.LLM
            and parent.usage
        ):
            continue
        usage.add(item.usage)
        per_model.setdefault(_usage_model(item, children), Usage()).add(item.usage)
    return models, usage, per_model


def _usage_model(item: Contribution, children: dict[int | None, list[Contribution]]) -> str:
    """The model a span's tokens went to: its own, else that of the provider call under it."""
    if item.models:
        return item.models[0]
    below = next(
        (c.models[0] for c in children.get(item.span_id, ()) if c.kind is ContributionKind.LLM and c.models), None
    )
    return below or UNKNOWN_MODEL


def _cost_metadata(cost: ThreadCost | None) -> dict[str, str]:
    """`cost_usd` (only when every model was priced), `cost_usd.<model>` for several models, the source."""
    if cost is None:
        return {}
    out = {"cost_source": cost.source}
    total = cost.total
    if total is not None:
        out["cost_usd"] = usd(total)
    if len(cost.by_model) + len(cost.unpriced) > 1 or cost.unpriced:
        out.update({f"cost_usd.{model}": usd(price) for model, price in cost.by_model.items()})
    if cost.unpriced:
        out["cost_unpriced_models"] = ",".join(cost.unpriced)
    return out


def _last_rating(own: Contribution, descendants: list[Contribution]) -> int | None:
    rated = [c for c in (*descendants, own) if c.rating is not None]
    return max(rated, key=lambda c: c.start_ns).rating if rated else None


def _tool_message(step: ToolStep, start_ns: int) -> Message:
    text = step.output if step.output is not None else ""
    return Message(
        role="assistant",
        type="tool",
        text=text,
        name=step.name,
        input=step.input,
        observation=step.output,
        timestamp_ns=start_ns,
    )


def _wrapped_run(root_id: int, own: RunContent, descendants: list[Contribution]) -> RunContent:
    """A contentless wrapper root's run: question and answer of the first chain below it that has them.

    "First" is the shallowest, then the earliest; the name, tags and properties are the wrapped chain's,
    after the wrapper's own (LangGraph's wrapper carries the conversation id, the chain the user's metadata).
    """
    depth = {root_id: 0}
    for item in sorted(descendants, key=lambda c: c.start_ns):  # a parent starts before its children
        depth.setdefault(item.span_id, depth.get(item.parent_id, 0) + 1)  # type: ignore[arg-type]
    chains = sorted((c for c in descendants if c.run is not None), key=lambda c: (depth.get(c.span_id, 0), c.start_ns))
    runs = [c.run for c in chains if c.run is not None]
    if not runs:
        return own
    asked = next((run.question for run in runs if run.question is not None), None)
    answered = next((run.answer for run in runs if run.answer is not None), None)
    inner = runs[0]
    properties = dict(inner.properties)
    properties.update(own.properties)
    return RunContent(asked, answered, inner.name or own.name, tuple(properties.items()), own.tags or inner.tags)


def _from_model_calls(run: RunContent | None, descendants: list[Contribution], *, failed: bool) -> RunContent | None:
    """A root chain's empty side filled from its model calls: the first user and the last assistant message.

    A root records nothing useful when its input or output is a state object that renders empty, a custom
    runnable returns None, or content capture is off for chains only; its model calls still say what was
    asked and answered. A failed run gave no answer, whatever a model call said before it failed. None
    when nothing is missing or the model calls recorded nothing either.
    """
    if run is not None and run.question is not None and run.answer is not None:
        return None
    calls = [c.call for c in sorted(descendants, key=lambda c: c.start_ns) if c.call is not None]
    question = run.question if run is not None else None
    answer = run.answer if run is not None else None
    if question is None:
        question = next((q for c in calls if (q := c.first_question())), None)
    if answer is None and not failed:
        answer = next((a for c in reversed(calls) if (a := c.last_answer())), None)
    if (question, answer) == ((run.question, run.answer) if run is not None else (None, None)):
        return None
    return replace(run, question=question, answer=answer) if run is not None else RunContent(question, answer)


def _chain_messages(root: SpanRecord, run: RunContent | None) -> list[Message]:
    messages = []
    if run is not None and run.question:
        messages.append(Message(role="user", text=run.question, timestamp_ns=root.start_ns))
    if run is not None and run.answer:
        messages.append(Message(role="assistant", text=run.answer, timestamp_ns=root.end_ns))
    return messages


def _llm_messages(root: SpanRecord, convention: Convention) -> list[Message]:
    inputs, outputs = convention.llm_messages(root.attributes, root.events)
    for message in inputs:
        message.timestamp_ns = root.start_ns
    for message in outputs:
        message.timestamp_ns = root.end_ns
    return [*inputs, *outputs]


def _error(root: SpanRecord) -> tuple[str, str] | None:
    """(type, text) of a failed root: the `exception` (or `gen_ai.client.operation.exception`, which marks
    a failed operation even without an ERROR status) event's type and message first (a status description
    may hold a whole traceback), then `error.type` and the status description."""
    failed_events = [e for e in root.events if e.name in EXCEPTION_EVENTS]
    if root.status_code != SpanStatus.ERROR and not any(
        e.name == GEN_AI_CLIENT_OPERATION_EXCEPTION_EVENT for e in failed_events
    ):
        return None
    error_type = message = ""
    if failed_events:
        error_type = as_text(failed_events[0].attributes.get(EXCEPTION_TYPE))
        message = as_text(failed_events[0].attributes.get(EXCEPTION_MESSAGE))
    error_type = error_type or as_text(root.attributes.get(ERROR_TYPE))
    message = message or root.status_message
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
