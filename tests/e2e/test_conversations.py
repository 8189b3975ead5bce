"""Beyond the old handler: sessions, feedback, tool steps, redaction and filters — in process and in the sidecar."""

from __future__ import annotations

import json

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

from otel_context import ContextSpanExporter
from otel_context.config import resolve_receiver_settings, resolve_settings
from otel_context.preparation.sessions import session_thread_id
from otel_context.receiver.service import SidecarThread

from ..support.threads import TOKEN, read_threads, texts
from ..support.tracing import App
from ..support.waiting import wait_for


def chain(answer: str):
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    return prompt | FakeListChatModel(responses=[answer]) | StrOutputParser()


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two numbers."""
    return a * b


@tool
def shout(text: str) -> str:
    """Shout a text."""
    return text.upper()


def test_session_turns_become_one_thread_in_order(make_pipeline, client, local_api):
    pipeline = make_pipeline()
    config = {"metadata": {"session_id": "s-1", "user_id": "u-1"}}
    for n in range(4):
        chain(f"answer {n}").invoke({"question": f"question {n}"}, config=config)
        pipeline.flush()  # each turn is appended on its own
    (thread,) = read_threads(client)
    # the sidecar's book is shared (SQLite): the id anyone can compute; in process, the book in memory
    # is this process's own, and so is the thread (a second process continues in a thread of its own)
    assert thread.id == session_thread_id("s-1", scope=pipeline.pipeline.sessions.scope)
    # each turn appended once, by one POST of its own two messages
    assert [m.message for m in thread.messages] == [
        "question 0", "answer 0", "question 1", "answer 1", "question 2", "answer 2", "question 3", "answer 3",
    ]  # fmt: skip
    assert local_api.store.write_count(thread.id) == 4
    assert thread.metadata["user_id"] == "u-1" and "trace_id" not in thread.metadata
    assert local_api.store.metadata_changes() == {}  # the same thread metadata on every POST
    answers = [m.metadata for m in thread.messages[1::2]]
    assert len({a["trace_id"] for a in answers}) == 4 and all("latency_ms" in a for a in answers)  # run facts


def test_a_bare_agent_loop_lands_in_one_thread(make_pipeline, client):
    pipeline = make_pipeline(include_tools=True)
    config = {"metadata": {"session_id": "loop-7"}}
    chat = FakeListChatModel(responses=["I will shout it.", "Done: HELLO"])
    chat.invoke("please shout hello", config=config)  # one trace per call, no root chain
    shout.invoke({"text": "hello"}, config=config)
    chat.invoke("and now?", config=config)
    pipeline.flush()
    (thread,) = read_threads(client)
    assert texts(thread) == [
        ("message", "user", "please shout hello"),
        ("message", "assistant", "I will shout it."),
        ("tool", "assistant", "HELLO"),
        ("message", "user", "and now?"),
        ("message", "assistant", "Done: HELLO"),
    ]
    assert thread.messages[2].additional_properties["name"] == "shout"


def test_tool_steps_sit_between_question_and_answer_when_asked(make_pipeline, client):
    pipeline = make_pipeline(include_tools=True)
    steps = RunnableLambda(lambda x: {"product": multiply.invoke({"a": x["a"], "b": 3}), "loud": shout.invoke("hey")})
    (steps | RunnableLambda(lambda r: f"{r['loud']} {r['product']}")).invoke({"a": 2})
    pipeline.flush()
    (thread,) = read_threads(client)
    assert [(m.type, m.message) for m in thread.messages] == [
        ("message", '{"a":2}'),
        ("tool", "6"),
        ("tool", "HEY"),
        ("message", "HEY 6"),
    ]
    multiply_step = thread.messages[1].additional_properties
    assert (multiply_step["name"], multiply_step["input"], multiply_step["observation"]) == (
        "multiply",
        {"a": 2, "b": 3},
        "6",
    )


def test_tool_steps_are_off_by_default(make_pipeline, client):
    pipeline = make_pipeline()
    (RunnableLambda(lambda x: shout.invoke(x)) | StrOutputParser()).invoke("hey")
    pipeline.flush()
    (thread,) = read_threads(client)
    assert [m.type for m in thread.messages] == ["message", "message"]


def test_redaction_patterns_and_hook_apply_before_anything_leaves(make_pipeline, client):
    pipeline = make_pipeline(redact=["all"])
    secret = "Mail jane.doe@example.com, call +1 415-555-0134, card 4111 1111 1111 1111, key sk-abcdef1234567890XYZ"
    chain("I will email jane.doe@example.com").invoke({"question": secret}, config={"metadata": {"user_id": "a@b.io"}})
    pipeline.flush()
    (thread,) = read_threads(client)
    sent = " ".join(m.message for m in thread.messages) + " ".join(thread.metadata.values())
    for leaked in ("jane.doe@example.com", "415-555-0134", "4111 1111 1111 1111", "sk-abcdef1234567890XYZ", "a@b.io"):
        assert leaked not in sent
    assert thread.messages[0].message == (
        "Mail [REDACTED:email], call [REDACTED:phone], card [REDACTED:card], key [REDACTED:api_key]"
    )


def test_a_redaction_hook(local_api, client, tracing):
    app = App(ContextSpanExporter(endpoint=local_api.url, token=TOKEN, register_metrics=False,
                                  redact=lambda text: text.replace("Acme", "[client]")), tracing)  # fmt: skip
    try:
        chain("Acme rocks").invoke({"question": "Tell me about Acme"})
        app.flush()
    finally:
        app.close()
    (thread,) = read_threads(client)
    assert [m.message for m in thread.messages] == ["Tell me about [client]", "[client] rocks"]


def test_include_and_exclude_workflows_by_name(make_pipeline, client):
    pipeline = make_pipeline(include_workflows=["support*"], exclude_workflows=["support-internal"])
    chain("a").with_config(run_name="support-bot").invoke({"question": "kept"})
    chain("b").with_config(run_name="support-internal").invoke({"question": "excluded"})
    chain("c").with_config(run_name="smalltalk").invoke({"question": "not included"})
    pipeline.flush()
    assert [texts(t)[0][2] for t in read_threads(client)] == ["kept"]
    assert pipeline.counters.get("threads_filtered") == 2


def test_sampling_by_ratio_is_counted(make_pipeline, client):
    pipeline = make_pipeline(sample_ratio=0.5)
    for n in range(40):
        chain("a").invoke({"question": f"q{n}"})
    pipeline.flush()
    sent = len(read_threads(client))
    assert 5 < sent < 35  # deterministic per trace id, about half
    assert sent + pipeline.counters.get("threads_sampled_out") == 40


def test_feedback_in_the_run_rates_its_answer(make_pipeline, client):
    pipeline = make_pipeline()

    def rate(answer: str) -> str:
        trace.get_current_span().set_attribute("context.feedback.rating", 1)
        return answer

    (chain("great answer") | RunnableLambda(rate)).invoke({"question": "q"})
    pipeline.flush()
    (thread,) = read_threads(client)
    assert [m.rating for m in thread.messages] == [None, 1]


def test_feedback_sent_later_patches_the_session_thread(make_pipeline, client, local_api):
    pipeline = make_pipeline()
    config = {"metadata": {"session_id": "s-9"}}
    chain("first").invoke({"question": "one"}, config=config)
    chain("second").invoke({"question": "two"}, config=config)
    pipeline.flush()
    feedback = {"context.feedback.session_id": "s-9", "context.feedback.rating": -1}
    with pipeline.app.tracer.start_as_current_span("user feedback", attributes=feedback):
        pass
    pipeline.flush()
    assert wait_for(lambda: local_api.stats()["requests"].get("PATCH /api/v1/log/conversation/thread/{id}", 0) == 1)
    (thread,) = read_threads(client)
    assert [m.rating for m in thread.messages] == [None, None, None, -1]
    assert pipeline.counters.get("ratings_sent") == 1


def test_sidecar_sessions_survive_a_restart(local_api, client, tracing, tmp_path):
    receiver = resolve_receiver_settings(port=0, grpc_port=-1, settle_s=0.1, state_dir=str(tmp_path))
    config = {"metadata": {"session_id": "long-chat"}}
    for n in range(2):  # one turn per sidecar life
        sidecar = SidecarThread(receiver, resolve_settings(endpoint=local_api.url, token=TOKEN))
        running = sidecar.start()
        app = App(OTLPSpanExporter(endpoint=f"{running.http_url}/v1/traces"), tracing)  # type: ignore[arg-type]
        chain(f"answer {n}").invoke({"question": f"question {n}"}, config=config)
        app.processor.force_flush()
        app.close()
        assert sidecar.stop() == 0
    (thread,) = read_threads(client)
    assert [m.message for m in thread.messages] == ["question 0", "answer 0", "question 1", "answer 1"]
    assert (tmp_path / "sessions.db").exists()
    assert local_api.store.metadata_changes() == {}  # the second life kept the metadata the first fixed


class ProviderInstrumentedModel(FakeListChatModel):
    """A chat model whose "provider SDK" is instrumented too: a GenAI semconv span under LangChain's."""

    def _call(self, messages, stop=None, run_manager=None, **kwargs):
        answer = super()._call(messages, stop, run_manager, **kwargs)
        tracer = trace.get_tracer("fake-openai-instrumentation")
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.usage.input_tokens": 12,
            "gen_ai.usage.output_tokens": 3,
            "gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "text", "content": "Hello"}]}]',
            "gen_ai.output.messages": json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": answer}]}]
            ),
        }
        with tracer.start_as_current_span("chat gpt-4o-mini", attributes=attributes) as span:
            span.add_event("gen_ai.choice", {"index": 0, "message": answer})
        return answer


def test_a_provider_span_beside_the_langchain_one_is_one_call(make_pipeline, client):
    pipeline = make_pipeline()
    ProviderInstrumentedModel(responses=["Bonjour"]).invoke("Hello")  # standalone: LangChain span + provider span
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    (prompt | ProviderInstrumentedModel(responses=["Salut"]) | StrOutputParser()).invoke({"question": "Hi"})
    pipeline.flush()
    threads = read_threads(client)
    assert [texts(t) for t in threads] == [
        [("message", "user", "Hello"), ("message", "assistant", "Bonjour")],
        [("message", "user", "Hi"), ("message", "assistant", "Salut")],
    ]
    for thread in threads:
        assert thread.metadata["model"] == "gpt-4o-mini-2024-07-18"
        assert (thread.metadata["input_tokens"], thread.metadata["output_tokens"]) == ("12", "3")


def test_a_provider_call_without_langchain_is_its_own_thread(local_api, client, tracing):
    """Alone, the provider span waits for a LangChain span to claim it, then becomes a thread of its own."""
    exporter = ContextSpanExporter(endpoint=local_api.url, token=TOKEN, register_metrics=False, root_wait_s=0.5)
    app = App(exporter, tracing)
    try:
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "text", "content": "Direct"}]}]',
            "gen_ai.output.messages": '[{"role": "assistant", "parts": [{"type": "text", "content": "call"}]}]',
        }
        with trace.get_tracer("openai").start_as_current_span("chat gpt-4o-mini", attributes=attributes):
            pass
        app.processor.force_flush()
        assert wait_for(lambda: app.exporter.stats()["threads_uploaded"] == 1, timeout=10)  # the ticker's doing
    finally:
        app.close()
    (thread,) = read_threads(client)
    assert texts(thread) == [("message", "user", "Direct"), ("message", "assistant", "call")]
