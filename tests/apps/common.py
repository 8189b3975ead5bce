"""A real LangChain app under the real instrumentation and SDK, exporting with `ContextSpanExporter`.

The subprocess apps of the end-to-end tests (serverless loop, fork, gunicorn, sessions, exit) share it;
settings come from the environment, as in production.
"""

from __future__ import annotations

from getcontext import ContextAPI
from getcontext.token import Credential
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable
from opentelemetry.instrumentation.langchain import LangchainInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from otel_context import ContextSpanExporter, ContextSpanProcessor


def setup(**batch: int) -> tuple[TracerProvider, ContextSpanExporter]:
    exporter = ContextSpanExporter(register_metrics=False)
    provider = TracerProvider(resource=Resource.create({"service.name": "test-app"}))
    provider.add_span_processor(ContextSpanProcessor(exporter, **batch))  # its force_flush waits for delivery
    LangchainInstrumentor().instrument(tracer_provider=provider)
    return provider, exporter


def chain(answer: str) -> Runnable:
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    return prompt | FakeListChatModel(responses=[answer]) | StrOutputParser()


def stored_questions(endpoint: str, token: str) -> list[str]:
    """First user message of every stored thread, read back with the real client."""
    client = ContextAPI(credential=Credential(token), endpoint=endpoint, retry_total=0)
    try:
        listing = client.conversations(start_time="2000-01-01T00:00:00Z", per_page=1000, enforce_https=False)
        out = []
        for summary in listing.conversations or []:
            thread = client.conversation(summary.id, enforce_https=False)
            out.extend(m.message for m in thread.messages[:1])
        return out
    finally:
        client.close()
