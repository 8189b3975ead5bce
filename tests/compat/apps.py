"""The compatibility matrix's LangChain apps, and the thread each one must become.

Run inside one matrix environment (`python tests/compat/apps.py --out DIR --endpoint URL --token T`):
it instruments LangChain with the release installed there, runs every app with LangChain's fake
models (no network, no key), captures each app's spans with the real SDK (`InMemorySpanExporter`,
written to DIR/<app>.json as `ReadableSpan.to_json()` dicts in end order) and, at the same time,
exports them through the real `ContextSpanExporter` to the Context API at URL.

Imported by the test suite and the matrix runner for `APPS` and `EXPECTED` only: nothing runs at import.
Works with `langchain-core` 0.3 and 1.x.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

SYSTEM = "You are a helpful assistant that translates English to French."

# app -> the thread's messages as (type, role, text); "*" in a text matches any rest of the line
EXPECTED: dict[str, list[tuple[str, str, str]]] = {
    "chat_multiturn": [
        ("message", "system", SYSTEM),
        ("message", "user", "I love programming."),
        ("message", "assistant", "J'adore la programmation."),
        ("message", "user", "And I love tea."),
        ("message", "assistant", "Et j'adore le thé."),
    ],
    "completion": [
        ("message", "user", "Complete: the quick brown fox"),
        ("message", "assistant", " jumps over the lazy dog."),
    ],
    "streaming": [
        ("message", "user", "Stream a greeting."),
        ("message", "assistant", "Bonjour tout le monde !"),
    ],
    "chain_async": [
        ("message", "user", "colorful socks"),
        ("message", "assistant", "Rainbow Threads"),
    ],
    "chain_nested": [
        ("message", "user", "the sea"),
        ("message", "assistant", "Poème court sur la mer."),
    ],
    "chain_metadata": [
        ("message", "user", "When does my order ship?"),
        ("message", "assistant", "Tomorrow."),
    ],
    "chain_failure": [
        ("message", "user", "a broken step"),
        ("event", "system", "ValueError: the parser broke"),
    ],
    "agent_tools": [
        ("message", "user", "What is the weather in Paris?"),
        ("message", "assistant", "It is 22 °C and sunny in Paris."),
    ],
}
EXPECTED_METADATA: dict[str, dict[str, str]] = {
    "chain_metadata": {"user_id": "u-7", "session_id": "s-7"},
    "chain_failure": {"error_type": "ValueError"},
}


def chat_multiturn() -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    chat = FakeListChatModel(responses=["Et j'adore le thé."])
    chat.invoke(
        [
            SystemMessage(SYSTEM),
            HumanMessage("I love programming."),
            AIMessage("J'adore la programmation."),
            HumanMessage("And I love tea."),
        ]
    )


def completion() -> None:
    from langchain_core.language_models.fake import FakeListLLM

    FakeListLLM(responses=[" jumps over the lazy dog."]).invoke("Complete: the quick brown fox")


def streaming() -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.messages import HumanMessage

    chat = FakeListChatModel(responses=["Bonjour tout le monde !"])
    "".join(chunk.content for chunk in chat.stream([HumanMessage("Stream a greeting.")]))


def chain_async() -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    prompt = ChatPromptTemplate.from_template("What is a good name for a company that makes {product}?")
    chain = prompt | FakeListChatModel(responses=["Rainbow Threads"]) | StrOutputParser()
    asyncio.run(chain.ainvoke({"product": "colorful socks"}))


def chain_nested() -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    poem = (
        ChatPromptTemplate.from_template("Write a poem about {topic}")
        | FakeListChatModel(responses=["A short poem about the sea."])
        | StrOutputParser()
    )
    translate = (
        ChatPromptTemplate.from_template("Translate to French: {poem}")
        | FakeListChatModel(responses=["Poème court sur la mer."])
        | StrOutputParser()
    )
    ({"poem": poem} | translate).invoke({"topic": "the sea"})


def chain_metadata() -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    chain = (
        ChatPromptTemplate.from_template("{question}") | FakeListChatModel(responses=["Tomorrow."]) | StrOutputParser()
    )
    chain.invoke({"question": "When does my order ship?"}, config={"metadata": {"user_id": "u-7", "session_id": "s-7"}})


def chain_failure() -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableLambda

    def broken(_: object) -> str:
        raise ValueError("the parser broke")

    chain = ChatPromptTemplate.from_template("{step}") | FakeListChatModel(responses=["ok"]) | RunnableLambda(broken)
    with contextlib.suppress(ValueError):
        chain.invoke({"step": "a broken step"})


def agent_tools() -> None:
    """A tool-calling agent loop: the model asks for a tool, the tool runs, the model answers."""
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langchain_core.runnables import RunnableLambda
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"22 °C and sunny in {city}"

    call = {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1"}
    model = GenericFakeChatModel(
        messages=iter([AIMessage(content="", tool_calls=[call]), AIMessage(content="It is 22 °C and sunny in Paris.")])
    )

    def agent(inputs: dict) -> str:
        messages = [HumanMessage(inputs["question"])]
        while True:
            reply = model.invoke(messages)
            messages.append(reply)
            if not reply.tool_calls:
                return reply.content
            for tool_call in reply.tool_calls:
                result = get_weather.invoke(tool_call["args"])
                messages.append(ToolMessage(result, tool_call_id=tool_call["id"]))

    RunnableLambda(agent).with_config(run_name="weather_agent").invoke({"question": "What is the weather in Paris?"})


APPS: dict[str, Callable[[], None]] = {
    "chat_multiturn": chat_multiturn,
    "completion": completion,
    "streaming": streaming,
    "chain_async": chain_async,
    "chain_nested": chain_nested,
    "chain_metadata": chain_metadata,
    "chain_failure": chain_failure,
    "agent_tools": agent_tools,
}


def name_fake_chat_models() -> None:
    """Give LangChain's fake chat models a model name (in their invocation parameters), as real ones have:
    OpenTelemetry's own instrumentation records no model call without one."""
    from langchain_core.language_models import fake_chat_models

    for model in (fake_chat_models.FakeListChatModel, fake_chat_models.GenericFakeChatModel):
        original = model._get_invocation_params

        def named(self, stop=None, _original=original, **kwargs):
            return {**_original(self, stop=stop, **kwargs), "model_name": "fake-chat-model"}

        model._get_invocation_params = named


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory for <app>.json span dumps")
    parser.add_argument("--endpoint", required=True, help="the Context API the real exporter delivers to")
    parser.add_argument("--token", required=True)
    parser.add_argument(
        "--instrumentation", choices=["openllmetry", "openinference", "official", "both"], default="openllmetry"
    )
    args = parser.parse_args(argv)

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_context import ContextSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": "compat-matrix"}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    exporter = ContextSpanExporter(endpoint=args.endpoint, token=args.token, register_metrics=False)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
    if args.instrumentation == "openinference":
        from openinference.instrumentation.langchain import LangChainInstrumentor

        LangChainInstrumentor().instrument(tracer_provider=provider)
    if args.instrumentation in ("official", "both"):
        import os

        from opentelemetry.instrumentation.genai.langchain import LangChainInstrumentor as Official

        os.environ.setdefault("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
        name_fake_chat_models()
        Official().instrument(tracer_provider=provider)
    if args.instrumentation in ("openllmetry", "both"):
        from opentelemetry.instrumentation.langchain import LangchainInstrumentor

        LangchainInstrumentor().instrument(tracer_provider=provider)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, app in APPS.items():
        memory.clear()
        app()
        spans = [json.loads(span.to_json()) for span in memory.get_finished_spans()]
        (out / f"{name}.json").write_text(json.dumps(spans, indent=1, ensure_ascii=False) + "\n")
    provider.force_flush()
    ok = exporter.force_flush(60_000)
    provider.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
