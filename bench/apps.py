"""The LangChain apps benchmarks run, and the realistic span mix captured once from the real instrumentation.

The mix: standalone chat calls, 4-step chains and nested chains, as an instrumented app emits them
(`opentelemetry-instrumentation-langchain` on fake chat models). `SpanMix` replays the captured
traces with fresh trace ids, as SDK spans, `SpanRecord`s or OTLP protobuf bodies.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, TraceFlags

from otel_context.model import SpanRecord
from otel_context.spans.sdk import records_from_sdk

SESSION_SUFFIXES = ("session_id", "session.id", "conversation.id")
COMPANY_PROMPT = "What is a good name for a company that makes {product}?"


def company_chain() -> Any:
    """The seed's company-name chain, in LCEL: prompt | FakeListChatModel | StrOutputParser()."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    prompt = ChatPromptTemplate.from_messages([("human", COMPANY_PROMPT)])
    return prompt | FakeListChatModel(responses=["Rainbow Threads"]) | StrOutputParser()


def legacy_chain(callbacks: list[Any] | None = None) -> Any:
    """The seed's company-name chain as the old handler's documentation builds it: an `LLMChain`.

    The handler goes to the chat model *and* the chain, as its docstring asks.
    """
    import warnings

    from langchain_classic.chains import LLMChain
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.prompts import ChatPromptTemplate, HumanMessagePromptTemplate, PromptTemplate

    human = HumanMessagePromptTemplate(prompt=PromptTemplate(template=COMPANY_PROMPT, input_variables=["product"]))
    chat_prompt = ChatPromptTemplate.from_messages([human])
    chat = FakeListChatModel(responses=["Rainbow Threads"], callbacks=callbacks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LLMChain is deprecated; that is the point of the comparison
        return LLMChain(llm=chat, prompt=chat_prompt, callbacks=callbacks)


def _chat(answer: str, tokens: tuple[int, int] = (12, 5)) -> Any:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    usage = {"input_tokens": tokens[0], "output_tokens": tokens[1], "total_tokens": sum(tokens)}
    return GenericFakeChatModel(messages=iter([AIMessage(answer, usage_metadata=usage)]))


def run_mix(round_no: int = 0) -> None:
    """One round of the realistic mix: 2 standalone chat calls, 2 four-step chains, 1 nested chain."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableLambda, RunnableParallel

    _chat("J'adore la programmation.").invoke(
        [
            SystemMessage("You are a helpful assistant that translates English to French."),
            HumanMessage(f"I love programming ({round_no})."),
        ]
    )
    _chat("Your order ships tomorrow.", (40, 8)).invoke(
        [
            SystemMessage("You answer questions about orders."),
            HumanMessage("Where is my order?"),
            AIMessage("Which order number?"),
            HumanMessage(f"Order {round_no}."),
        ]
    )
    for user in ("u-1", "u-2"):
        four_steps = (
            ChatPromptTemplate.from_messages([("system", "You name companies."), ("human", COMPANY_PROMPT)])
            | _chat("  Rainbow Threads  ")
            | StrOutputParser()
            | RunnableLambda(lambda text: text.strip())
        )
        config = {"metadata": {"user_id": user, "session_id": f"s-{round_no}"}, "tags": ["naming"]}
        four_steps.invoke({"product": f"colorful socks {round_no}"}, config=config)
    inner = (
        ChatPromptTemplate.from_messages([("human", "Write a poem about {topic}")])
        | _chat("A poem.")
        | StrOutputParser()
    )
    outer = (
        RunnableParallel(poem=inner)
        | ChatPromptTemplate.from_messages([("human", "Translate to French: {poem}")])
        | _chat("Un poème.")
        | StrOutputParser()
    )
    outer.invoke({"topic": f"the sea {round_no}"})


def capture_mix(rounds: int = 2) -> list[list[ReadableSpan]]:
    """Run the mix under the real instrumentation once; the finished SDK spans, one list per trace."""
    from opentelemetry.instrumentation.langchain import LangchainInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench-app"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    instrumentor = LangchainInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        for round_no in range(rounds):
            run_mix(round_no)
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    traces: dict[int, list[ReadableSpan]] = {}
    for span in memory.get_finished_spans():  # end order: children before their root
        assert span.context is not None
        traces.setdefault(span.context.trace_id, []).append(span)
    return list(traces.values())


def _fresh_sessions(attributes: Any, cycle: int) -> Any:
    """Session ids unique per replay cycle: a replayed app has many short sessions, not two endless ones."""
    if not attributes or not any(key.endswith(SESSION_SUFFIXES) for key in attributes):
        return attributes
    return {key: f"{value}-{cycle}" if key.endswith(SESSION_SUFFIXES) else value for key, value in attributes.items()}


def _with_trace_id(span: ReadableSpan, trace_id: int, cycle: int) -> ReadableSpan:
    context = span.context
    assert context is not None
    parent = span.parent
    return ReadableSpan(
        name=span.name,
        context=SpanContext(trace_id, context.span_id, False, TraceFlags(TraceFlags.SAMPLED)),
        parent=SpanContext(trace_id, parent.span_id, False, TraceFlags(TraceFlags.SAMPLED)) if parent else None,
        resource=span.resource,
        attributes=_fresh_sessions(span.attributes, cycle),
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


@dataclass
class SpanMix:
    """Captured traces, replayed with fresh trace ids so every copy is a new trace."""

    traces: list[list[ReadableSpan]]
    seed: int = 1234

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    @property
    def spans_per_trace(self) -> float:
        return sum(len(t) for t in self.traces) / len(self.traces)

    def describe(self) -> str:
        """E.g. `10 traces: 4 × 1 span, 4 × 5 spans, 2 × 10 spans`."""
        sizes = Counter(len(t) for t in self.traces)
        parts = [f"{count} × {size} span{'s' if size > 1 else ''}" for size, count in sorted(sizes.items())]
        return f"{len(self.traces)} traces: " + ", ".join(parts)

    def _fresh_id(self) -> int:
        return self._random.getrandbits(128) | 1

    def fresh_traces(self) -> Iterator[list[ReadableSpan]]:
        """Endless copies of the captured traces, in turn, each with a new trace id (and session ids)."""
        for cycle in itertools.count():
            for trace in self.traces:
                trace_id = self._fresh_id()
                yield [_with_trace_id(span, trace_id, cycle) for span in trace]

    def span_batches(self, total_spans: int, batch_size: int) -> list[list[ReadableSpan]]:
        """About `total_spans` fresh spans, whole traces in end order, cut into batches of `batch_size`."""
        spans: list[ReadableSpan] = []
        traces = self.fresh_traces()
        while len(spans) < total_spans:
            spans.extend(next(traces))
        return [spans[i : i + batch_size] for i in range(0, len(spans), batch_size)]

    def record_traces(self, count: int) -> list[list[SpanRecord]]:
        """`count` fresh traces as `SpanRecord`s, each span with its own attribute dict (as received spans have)."""
        templates = [records_from_sdk(trace) for trace in self.traces]
        out = []
        for index in range(count):
            trace_id = self._fresh_id()
            cycle = index // len(templates)
            out.append(
                [
                    replace(record, trace_id=trace_id, attributes=dict(_fresh_sessions(record.attributes, cycle)))
                    for record in templates[index % len(templates)]
                ]
            )
        return out
