"""LangChain apps calling `ChatOpenAI` (and `OpenAI`) against a local OpenAI-compatible stub: the runs the
tests of OpenTelemetry's own LangChain instrumentation (`opentelemetry-instrumentation-genai-langchain`)
are made of. That instrumentation records model calls only for models that name one (`ChatOpenAI`,
`ChatBedrock`, ...), so LangChain's fake models would give no model span: here each scenario serves its
replies from `tests.support.openai_stub` over loopback (no network, no key).

Each scenario returns the threads it must give, as (type, role, text) messages. Run as a script, it runs
them in a process of its own: `python tests/apps/official_apps.py --instrument official|openllmetry|both|none
SCENARIO...` (`none`: instrumented by `opentelemetry-instrument`, exported as its environment says;
otherwise `ContextSpanExporter`, or OTLP/HTTP to `--otlp URL`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support.openai_stub import OpenAIStub

Messages = list[tuple[str, str, str]]
SYSTEM = "Translate to French."
QUESTION = "What is 6 times 7?"
ANSWER = "6 times 7 is 42."
SESSION = "conversation-42"
# content capture of the official instrumentation (off by default, as OpenTelemetry's GenAI instrumentations are)
os.environ.setdefault("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")


def chat_model(stub: OpenAIStub, **kwargs: Any):
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=stub.url, api_key="stub", model="gpt-4o-mini", max_retries=0, **kwargs)


def chat() -> list[Messages]:
    from langchain_core.messages import HumanMessage, SystemMessage

    with OpenAIStub(["J'adore la programmation."]) as stub:
        chat_model(stub).invoke([SystemMessage(SYSTEM), HumanMessage("I love programming.")])
    return [
        [
            ("message", "system", SYSTEM),
            ("message", "user", "I love programming."),
            ("message", "assistant", "J'adore la programmation."),
        ]
    ]


def chat_stream() -> list[Messages]:
    from langchain_core.messages import HumanMessage

    with OpenAIStub(["Bonjour tout le monde !"]) as stub:
        model = chat_model(stub, stream_usage=True)
        "".join(str(chunk.content) for chunk in model.stream([HumanMessage("Stream a greeting.")]))
    return [[("message", "user", "Stream a greeting."), ("message", "assistant", "Bonjour tout le monde !")]]


def text() -> list[Messages]:
    """A text-completion model (`OpenAI`, not a chat model)."""
    from langchain_openai import OpenAI

    with OpenAIStub([" jumps over the lazy dog."]) as stub:
        OpenAI(base_url=stub.url, api_key="stub", model="gpt-3.5-turbo-instruct", max_retries=0).invoke(
            "Complete: the quick brown fox"
        )
    return [
        [("message", "user", "Complete: the quick brown fox"), ("message", "assistant", " jumps over the lazy dog.")]
    ]


def _chain(stub: OpenAIStub, template: str):
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    return ChatPromptTemplate.from_template(template) | chat_model(stub) | StrOutputParser()


def chain() -> list[Messages]:
    with OpenAIStub(["Rainbow Threads"]) as stub:
        _chain(stub, "What is a good name for a company that makes {product}?").invoke({"product": "socks"})
    return [[("message", "user", "socks"), ("message", "assistant", "Rainbow Threads")]]


def chain_keys() -> list[Messages]:
    with OpenAIStub(["Sunny Socks"]) as stub:
        _chain(stub, "Name a {mood} company that makes {product}.").invoke({"product": "socks", "mood": "cheerful"})
    return [[("message", "user", '{"product":"socks","mood":"cheerful"}'), ("message", "assistant", "Sunny Socks")]]


def chain_session() -> list[Messages]:
    with OpenAIStub(["Tomorrow.", "On Monday."]) as stub:
        runnable = _chain(stub, "{question}")
        config = {"metadata": {"session_id": SESSION}}
        runnable.invoke({"question": "When does my order ship?"}, config=config)
        runnable.invoke({"question": "And when does it arrive?"}, config=config)
    return [  # one thread: the session's turns, appended
        [
            ("message", "user", "When does my order ship?"),
            ("message", "assistant", "Tomorrow."),
            ("message", "user", "And when does it arrive?"),
            ("message", "assistant", "On Monday."),
        ]
    ]


def chain_error() -> list[Messages]:
    from langchain_core.runnables import RunnableLambda

    def broken(_: object) -> str:
        raise ValueError("the parser broke")

    with OpenAIStub(["ok"]) as stub, contextlib.suppress(ValueError):
        (_chain(stub, "{step}") | RunnableLambda(broken)).invoke({"step": "a broken step"})
    return [[("message", "user", "a broken step"), ("event", "system", "ValueError: the parser broke")]]


def agent() -> list[Messages]:
    """`create_agent` with a tool: the model asks for it, the tool runs, the model answers."""
    from langchain.agents import create_agent
    from langchain_core.tools import tool

    @tool
    def multiply(a: int, b: int) -> int:
        """Multiply two numbers."""
        return a * b

    with OpenAIStub([[{"name": "multiply", "args": {"a": 6, "b": 7}}], ANSWER]) as stub:
        graph = create_agent(chat_model(stub), [multiply], system_prompt="You are a calculator.")
        graph.invoke(
            {"messages": [{"role": "user", "content": QUESTION}]}, config={"configurable": {"thread_id": "t-7"}}
        )
    return [[("message", "user", QUESTION), ("message", "assistant", ANSWER)]]


def graph() -> list[Messages]:
    """A LangGraph `StateGraph` of two model nodes (the official instrumentation's README example)."""
    from typing import Annotated, TypedDict

    from langchain_core.messages import HumanMessage, SystemMessage
    from langgraph.graph import END, START, StateGraph
    from langgraph.graph.message import add_messages

    State = TypedDict("State", {"messages": Annotated[list, add_messages], "research": str})  # noqa: UP013

    with OpenAIStub(["Paris is the capital of France.", "Paris."]) as stub:
        model = chat_model(stub)

        def researcher(state: dict) -> dict:
            reply = model.invoke([SystemMessage("Be factual."), HumanMessage(state["messages"][-1].content)])
            return {"research": reply.content, "messages": [reply]}

        def summariser(state: dict) -> dict:
            return {"messages": [model.invoke([SystemMessage("One word."), HumanMessage(state["research"])])]}

        builder = StateGraph(State)
        builder.add_node("researcher", researcher)
        builder.add_node("summariser", summariser)
        builder.add_edge(START, "researcher")
        builder.add_edge("researcher", "summariser")
        builder.add_edge("summariser", END)
        builder.compile().invoke({"messages": [HumanMessage("What is the capital of France?")], "research": ""})
    return [[("message", "user", "What is the capital of France?"), ("message", "assistant", "Paris.")]]


SCENARIOS: dict[str, Callable[[], list[Messages]]] = {
    "chat": chat,
    "chat_stream": chat_stream,
    "text": text,
    "chain": chain,
    "chain_keys": chain_keys,
    "chain_session": chain_session,
    "chain_error": chain_error,
    "agent": agent,
    "graph": graph,
}
# What the official instrumentation alone records no span for: `on_llm_start` (text models) is not handled.
NOT_RECORDED_BY_OFFICIAL = frozenset({"text"})


def instrument(which: str, tracer_provider: Any = None) -> None:
    """Instrument LangChain with the official instrumentation, OpenLLMetry's, or both (official first)."""
    if which in ("official", "both"):
        from opentelemetry.instrumentation.genai.langchain import LangChainInstrumentor

        LangChainInstrumentor().instrument(tracer_provider=tracer_provider)
    if which in ("openllmetry", "both"):
        from opentelemetry.instrumentation.langchain import LangchainInstrumentor

        LangchainInstrumentor().instrument(tracer_provider=tracer_provider)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instrument", choices=["official", "openllmetry", "both", "none"], default="official")
    parser.add_argument("--otlp", help="export OTLP/HTTP to this URL instead of ContextSpanExporter")
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    args = parser.parse_args(argv)
    provider = None
    if args.instrument != "none":
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": "official-app"}))
        if args.otlp:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter: Any = OTLPSpanExporter(endpoint=args.otlp)
        else:
            from otel_context import ContextSpanExporter

            exporter = ContextSpanExporter(register_metrics=False)
        if args.otlp:
            provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
        else:
            from otel_context import ContextSpanProcessor

            provider.add_span_processor(ContextSpanProcessor(exporter, schedule_delay_millis=50))
        trace.set_tracer_provider(provider)
        instrument(args.instrument, provider)
    for name in args.scenarios:
        SCENARIOS[name]()
    if provider is not None:
        provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
