"""`otel-context demo`: a small LangChain app under the standard instrumentation, exported to Context.

With no token set, an embedded local Context API receives the threads and they are read back with
`context-python` and printed. LangChain's fake chat models stand in for a provider: no network, no key.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
from collections.abc import Iterator
from typing import TextIO

from .config import resolve_token
from .extras import require


def run_app() -> list[str]:
    """The demo app itself: the seed's two examples and a chain run for a known user and session."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableConfig

    answers = []
    chat = FakeListChatModel(responses=["J'adore la programmation."])
    messages = [
        SystemMessage(content="You are a helpful assistant that translates English to French."),
        HumanMessage(content="I love programming."),
    ]
    answers.append(chat.invoke(messages).content)

    prompt = ChatPromptTemplate.from_messages([("human", "What is a good name for a company that makes {product}?")])
    namer = prompt | FakeListChatModel(responses=["Rainbow Threads"]) | StrOutputParser()
    answers.append(namer.invoke({"product": "colorful socks"}))

    support = (
        ChatPromptTemplate.from_messages([("system", "You answer questions about orders."), ("human", "{question}")])
        | FakeListChatModel(responses=["Your order ships tomorrow."])
        | StrOutputParser()
    )
    config: RunnableConfig = {"metadata": {"user_id": "u-123", "session_id": "s-42"}, "tags": ["support"]}
    answers.append(support.invoke({"question": "When does my order ship?"}, config=config))
    return [str(a) for a in answers]


@contextlib.contextmanager
def _endpoint() -> Iterator[tuple[str | None, object | None]]:
    """The endpoint to use: from the environment when a token is set, else an embedded local API."""
    if resolve_token():
        yield None, None
        return
    require("local", "otel-context demo")  # only the embedded API needs it; with a token the demo uses Context
    from .local_api import LocalContextAPI

    with LocalContextAPI() as api:
        yield api.url, api


def main(out: TextIO = sys.stdout) -> int:
    from opentelemetry.instrumentation.langchain import LangchainInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from .exporter import ContextSpanExporter

    started = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
    with _endpoint() as (local_url, local_api):
        exporter = ContextSpanExporter(endpoint=local_url, register_metrics=False)
        provider = TracerProvider(resource=Resource.create({"service.name": "otel-context-demo"}))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        instrumentor = LangchainInstrumentor()
        instrumentor.instrument(tracer_provider=provider)
        try:
            run_app()
        finally:
            instrumentor.uninstrument()
            provider.shutdown()  # flushes the span processor, then the exporter's delivery queue
        stats = exporter.stats()
        where = "an embedded local Context API" if local_api else exporter.settings.endpoint
        print(f"otel-context demo: {stats['threads_uploaded']} thread(s) uploaded to {where}", file=out)
        if stats["threads_uploaded"] < stats["threads_converted"]:
            print(f"  delivery problems: {stats}", file=out)
        if local_api is not None or exporter.settings.loopback:
            _print_threads(exporter, started, out)
        return 0 if stats["threads_uploaded"] == stats["threads_converted"] == 3 else 1


def _print_threads(exporter, started: dt.datetime, out: TextIO) -> None:
    """Read the threads back with `context-python`, as a Context user would see them."""
    from getcontext import ContextAPI
    from getcontext.token import Credential

    settings = exporter.settings
    client = ContextAPI(credential=Credential(settings.token or ""), endpoint=settings.endpoint, retry_total=0)
    listing = client.conversations(start_time=started.isoformat(), per_page=100, enforce_https=False)
    mine = [c for c in listing.conversations or [] if (c.metadata or {}).get("service_name") == "otel-context-demo"]
    threads = [client.conversation(summary.id, enforce_https=False) for summary in mine]
    threads.sort(key=lambda t: (t.metadata or {}).get("started_at", ""))
    for index, thread in enumerate(threads, 1):
        print(f"\nThread {index}: {thread.id}", file=out)
        for message in thread.messages or []:
            label = message.role if message.type in (None, "message") else f"{message.type}"
            print(f"  {label:<10} {message.message}", file=out)
        shown = {k: v for k, v in (thread.metadata or {}).items() if k not in ("span_id", "source", "started_at")}
        print("  metadata   " + ", ".join(f"{k}={v}" for k, v in sorted(shown.items())), file=out)
    client.close()
