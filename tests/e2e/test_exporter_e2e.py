"""A LangChain app runs under the real instrumentation; threads arrive in the local Context API."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel
from opentelemetry.trace import SpanKind

from otel_context.demo import run_app

from ..support.threads import read_threads, texts


def company_chain(answer: str = "Rainbow Threads"):
    prompt = ChatPromptTemplate.from_messages([("human", "What is a good name for a company that makes {product}?")])
    return prompt | FakeListChatModel(responses=[answer]) | StrOutputParser()


def test_seed_chat_call_becomes_system_user_assistant_thread(app, client):
    chat = FakeListChatModel(responses=["J'adore la programmation."])
    chat.invoke(
        [
            SystemMessage(content="You are a helpful assistant that translates English to French."),
            HumanMessage(content="I love programming."),
        ]
    )
    app.flush()
    (thread,) = read_threads(client)
    assert texts(thread) == [
        ("message", "system", "You are a helpful assistant that translates English to French."),
        ("message", "user", "I love programming."),
        ("message", "assistant", "J'adore la programmation."),
    ]
    assert thread.metadata["operation"] == "chat"
    assert thread.metadata["service_name"] == "test-app"
    assert len(thread.metadata["trace_id"]) == 32
    assert thread.messages[0].event_timestamp is not None


def test_seed_company_name_chain_keeps_root_input_and_final_output_only(app, client):
    assert company_chain().invoke({"product": "colorful socks"}) == "Rainbow Threads"
    app.flush()
    (thread,) = read_threads(client)
    assert texts(thread) == [("message", "user", "colorful socks"), ("message", "assistant", "Rainbow Threads")]
    assert thread.metadata["workflow"] == "RunnableSequence"


def test_nested_chains_make_one_thread_for_the_topmost_root(app, client):
    poem = ChatPromptTemplate.from_messages([("human", "Write a poem about {topic}")])
    inner = poem | FakeListChatModel(responses=["A short poem about the sea."]) | StrOutputParser()
    translate = ChatPromptTemplate.from_messages([("human", "Translate to French: {poem}")])
    outer = (
        RunnableParallel(poem=inner)
        | translate
        | FakeListChatModel(responses=["Poème court sur la mer."])
        | StrOutputParser()
    )
    outer.invoke({"topic": "the sea"})
    app.flush()
    (thread,) = read_threads(client)
    assert texts(thread) == [("message", "user", "the sea"), ("message", "assistant", "Poème court sur la mer.")]


def test_failing_chain_adds_an_error_event_and_metadata(app, client):
    def boom(_):
        raise ValueError("upstream tool failed")

    chain = company_chain() | RunnableLambda(boom)
    with contextlib.suppress(ValueError):
        chain.invoke({"product": "socks"})
    app.flush()
    (thread,) = read_threads(client)
    assert texts(thread) == [
        ("message", "user", "socks"),
        ("event", "system", "ValueError: upstream tool failed"),
    ]
    assert thread.metadata["error"] == "true"
    assert thread.metadata["error_type"] == "ValueError"
    assert thread.metadata["error_message"] == "upstream tool failed"


def test_metadata_user_session_tags_model_and_usage(app, client):
    reply = AIMessage(
        "Your order ships tomorrow.",
        usage_metadata={"input_tokens": 11, "output_tokens": 5, "total_tokens": 16},
    )

    class NamedModel(GenericFakeChatModel):
        model_name: str = "fake-gpt-4o"

    chain = (
        ChatPromptTemplate.from_messages([("human", "{q}")]) | NamedModel(messages=iter([reply])) | StrOutputParser()
    )
    config = {"metadata": {"user_id": "u-123", "session_id": "s-42", "plan": "pro"}, "tags": ["support"]}
    chain.invoke({"q": "When does my order ship?"}, config=config)
    app.flush()
    (thread,) = read_threads(client)
    meta = thread.metadata  # a session thread: what the session shares, the same on every POST
    assert (meta["user_id"], meta["session_id"], meta["plan"]) == ("u-123", "s-42", "pro")
    run = thread.messages[-1].metadata  # the run's own facts, on its last message
    assert (run["tags"], run["model"]) == ("support", "fake-gpt-4o")
    assert (run["input_tokens"], run["output_tokens"], run["total_tokens"]) == ("11", "5", "16")
    assert float(run["latency_ms"]) >= 0 and "model" not in meta and "latency_ms" not in meta
    assert all(isinstance(v, str) for v in (*meta.values(), *run.values()))


def test_root_under_a_non_langchain_parent_span_is_still_a_root(app, client):
    with app.tracer.start_as_current_span("GET /name", kind=SpanKind.SERVER):
        company_chain().invoke({"product": "hats"})
        FakeListChatModel(responses=["bonjour"]).invoke("hello")
    app.flush()
    threads = read_threads(client)
    assert sorted(texts(t)[0][2] for t in threads) == ["hats", "hello"]
    assert len({t.metadata["trace_id"] for t in threads}) == 1


def test_trace_split_over_many_batches(make_app, client):
    app = make_app(batch={"max_export_batch_size": 1})
    reply = AIMessage("Rainbow Threads", usage_metadata={"input_tokens": 3, "output_tokens": 2, "total_tokens": 5})
    chain = (
        ChatPromptTemplate.from_messages([("human", "{product}")])
        | GenericFakeChatModel(messages=iter([reply]))
        | StrOutputParser()
    )
    chain.invoke({"product": "colorful socks"})
    app.flush()
    (thread,) = read_threads(client)
    assert texts(thread) == [("message", "user", "colorful socks"), ("message", "assistant", "Rainbow Threads")]
    assert thread.metadata["total_tokens"] == "5"  # the chat span came in an earlier batch than its root
    assert app.exporter.buffer.held_spans == 0


def test_streaming_call_with_unknown_output_role_yields_the_reply(app, client):
    chat = FakeListChatModel(responses=["streamed answer"])
    assert "".join(str(c.content) for c in chat.stream("stream please")) == "streamed answer"
    app.flush()
    (thread,) = read_threads(client)
    assert texts(thread) == [("message", "user", "stream please"), ("message", "assistant", "streamed answer")]


def test_retried_upload_updates_the_same_thread(app, client, local_api):
    company_chain().invoke({"product": "socks"})
    app.flush()
    (thread,) = read_threads(client)
    # Upload the very same spans again, as a retry would: the stable id makes it one thread.
    from otel_context.conversion.threads import thread_id

    assert thread.id == thread_id(int(thread.metadata["trace_id"], 16), int(thread.metadata["span_id"], 16))
    app.exporter.delivery.submit([_rebuild(thread)])
    app.flush()
    assert len(read_threads(client)) == 1


def _rebuild(thread):
    from otel_context.model import ConversationThread, Message

    return ConversationThread(
        id=thread.id,
        messages=[Message(role=m.role, text=m.message, type=m.type) for m in thread.messages],
        metadata=dict(thread.metadata),
    )


def test_200_concurrent_chains_across_threads_and_asyncio_never_mix(make_app, client):
    # One batch of every span (the flush exports them), converted in slices of 64 (exporter.EXPORT_SLICE):
    # interleaved traces cross slices.
    app = make_app(batch={"max_queue_size": 20_000, "max_export_batch_size": 512, "schedule_delay_millis": 60_000})

    def echo_chain():
        return (
            ChatPromptTemplate.from_messages([("human", "question {n}")])
            | RunnableLambda(lambda prompt: f"answer {prompt.to_messages()[-1].content.split()[-1]}")
            | StrOutputParser()
        )

    chain = echo_chain()

    def worker(start: int) -> None:
        for n in range(start, start + 10):
            assert chain.invoke({"n": str(n)}) == f"answer {n}"

    threads = [threading.Thread(target=worker, args=(i * 10,)) for i in range(10)]
    for t in threads:
        t.start()

    async def run_async() -> None:
        await asyncio.gather(*(chain.ainvoke({"n": str(n)}) for n in range(100, 200)))

    asyncio.run(run_async())
    for t in threads:
        t.join()
    app.flush()
    stored = read_threads(client)
    assert len(stored) == 200
    for thread in stored:
        (_kind_in, role_in, question), (_kind_out, role_out, answer) = texts(thread)
        assert (role_in, role_out) == ("user", "assistant")
        assert answer == f"answer {question}"
    assert sorted(int(texts(t)[0][2]) for t in stored) == list(range(200))
    assert app.exporter.buffer.held_spans == 0


def test_demo_app_produces_three_threads(app, client):
    run_app()
    app.flush()
    threads = read_threads(client)
    assert [texts(t)[-1][2] for t in threads] == [
        "J'adore la programmation.",
        "Rainbow Threads",
        "Your order ships tomorrow.",
    ]
    assert threads[2].metadata["user_id"] == "u-123"
