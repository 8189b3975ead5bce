"""OpenTelemetry's own LangChain instrumentation (`opentelemetry-instrumentation-genai-langchain`), captured
(tests/fixtures/official/, by tests/fixtures/capture_official.py): alone, it gives the threads OpenLLMetry's
gives; beside OpenLLMetry's (both loaded, as `opentelemetry-instrument` does when both are installed), one run
is still one thread, its usage counted once."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from otel_context.assembly.trace_buffer import TraceBuffer
from otel_context.conversion.threads import ConversionOptions
from otel_context.model import SpanRecord
from otel_context.spans.sdk_json import load_json_file

from ..apps.official_apps import NOT_RECORDED_BY_OFFICIAL, SESSION
from ..support import paths

FIXTURES = paths.FIXTURES / "official"
EXPECTED: dict[str, list[list[list[str]]]] = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
SETTINGS = ("alone", "both")


def spans_of(setting: str, name: str) -> list[SpanRecord]:
    return load_json_file(FIXTURES / setting / f"{name}.json")


def replay(spans: list[SpanRecord], **buffer_args):
    """One span per batch (the hardest split), as an exporter in process would see them."""
    buffer = TraceBuffer(**buffer_args)
    threads = [thread for span in spans for thread in buffer.add([span])] + buffer.drain()
    assert buffer.held_spans == 0
    return threads, buffer


def messages(threads) -> list[tuple[str, str, str]]:
    return [(m.type, m.role, m.text) for thread in threads for m in thread.messages]


def expected(setting: str, name: str) -> list[tuple[str, str, str]]:
    if setting == "alone" and name in NOT_RECORDED_BY_OFFICIAL:
        return []
    return [tuple(m) for thread in EXPECTED[name] for m in thread]  # type: ignore[misc]


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_run_gives_its_thread(setting, name):
    threads, buffer = replay(spans_of(setting, name))
    assert messages(threads) == expected(setting, name)
    runs = 2 if name == "chain_session" else 0 if not expected(setting, name) else 1
    assert len(threads) == runs
    for thread in threads:  # usage once: the stub reports 11 + 7 tokens per call
        calls = 2 if name in ("agent", "graph") else 1
        assert (thread.metadata["input_tokens"], thread.metadata["output_tokens"]) == (str(11 * calls), str(7 * calls))
        assert thread.metadata["model"].startswith("gpt-")
    if setting == "both":
        genai = [s for s in spans_of(setting, name) if not any(k.startswith("traceloop.") for k in s.attributes)]
        own = [s for s in genai if s.name in ("invoke_agent LangGraph", "create_agent agent")]  # OpenLLMetry's
        assert buffer.counters.get("spans_twinned") == len(genai) - len(own)


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("name", ["chain", "agent", "graph", "chain_session"])
def test_in_any_order_through_the_sidecar(setting, name):
    spans = spans_of(setting, name)
    random.Random(23).shuffle(spans)
    threads, _ = replay(spans, settle_s=60.0)  # the sidecar waits for stragglers
    assert sorted(messages(threads)) == sorted(expected(setting, name))


def test_a_single_key_input_is_its_value_several_keys_read_as_json():
    (single,), _ = replay(spans_of("alone", "chain"))
    (several,), _ = replay(spans_of("alone", "chain_keys"))
    assert single.messages[0].text == "socks"
    assert several.messages[0].text == '{"product":"socks","mood":"cheerful"}'
    # the workflow span records no output for a string: the answer is the model call's, and says so
    assert (single.metadata["io_source"], single.metadata["workflow"]) == ("model_calls", "RunnableSequence")


def test_an_agent_answers_from_its_own_span_with_its_tool_steps():
    (thread,), _ = replay(spans_of("alone", "agent"), options=ConversionOptions(include_tools=True))
    assert [(m.type, m.text) for m in thread.messages] == [
        ("message", "What is 6 times 7?"),
        ("tool", "42"),
        ("message", "6 times 7 is 42."),
    ]
    step = thread.messages[1]
    assert (step.name, step.input, step.observation) == ("multiply", {"a": 6, "b": 7}, "42")
    assert "io_source" not in thread.metadata  # question and answer are the invoke_agent span's
    assert thread.metadata["conversation_id"] == "t-7"  # gen_ai.conversation.id, from LangGraph's thread_id


def test_tool_steps_are_the_same_beside_openllmetry():
    options = ConversionOptions(include_tools=True)
    (alone,), _ = replay(spans_of("alone", "agent"), options=options)
    (both,), _ = replay(spans_of("both", "agent"), options=options)
    assert [(m.type, m.text, m.name, m.input) for m in both.messages] == [
        (m.type, m.text, m.name, m.input) for m in alone.messages
    ]


def test_sessions_from_the_conversation_id():
    threads, _ = replay(spans_of("alone", "chain_session"))
    assert [t.metadata["conversation_id"] for t in threads] == [SESSION, SESSION]


def test_a_failed_run():
    (thread,), _ = replay(spans_of("alone", "chain_error"))
    meta = thread.metadata
    assert (meta["error"], meta["error_type"], meta["error_message"]) == ("true", "ValueError", "the parser broke")
    assert "io_source" not in meta  # a failed run gets no answer from its model calls


def test_the_openllmetry_thread_is_the_one_kept():
    # OpenLLMetry's spans record the user's run metadata too: with both, the thread is theirs
    (thread,), _ = replay(spans_of("both", "chain"))
    (span,) = [s for s in spans_of("both", "chain") if s.name == "RunnableSequence.workflow"]
    assert thread.metadata["span_id"] == span.span_hex
    assert "io_source" not in thread.metadata


def test_a_genai_span_alone_is_never_taken_for_a_twin():
    # OpenLLMetry's own GenAI wrapper (`invoke_agent LangGraph`) around its LangGraph run stays the root
    threads, buffer = replay(load_json_file(paths.FIXTURES / "langgraph" / "agent_invoke.json"))
    assert [t.name for t in threads] == ["LangGraph"]
    assert buffer.counters.get("spans_twinned") == 0


def test_a_wrapper_of_one_run_is_no_twin_of_another_run_beside_it():
    # two LangGraph runs at the same moment in one process (OpenLLMetry alone): each keeps its wrapper,
    # however close the other run's spans start and end
    spans = load_json_file(paths.FIXTURES / "langgraph" / "agent_invoke.json")
    twin = [replace(s, trace_id=s.trace_id + 1, span_id=s.span_id + 1, parent_id=s.parent_id and s.parent_id + 1,
                    start_ns=s.start_ns + 2_000_000, end_ns=s.end_ns + 2_000_000) for s in spans]  # fmt: skip
    ordered = sorted([*spans, *twin], key=lambda s: s.end_ns)
    threads, buffer = replay(ordered, settle_s=60.0)
    assert [t.name for t in threads] == ["LangGraph", "LangGraph"]
    assert buffer.counters.get("spans_twinned") == 0


def test_no_service_name_when_the_app_set_none():
    # the SDK's placeholder `unknown_service:python` names no service: no `service_name` metadata
    (span,) = [s for s in spans_of("alone", "chat")]
    anonymous = replace(span, resource={**span.resource, "service.name": "unknown_service:python"})
    (thread,), _ = replay([anonymous])
    assert "service_name" not in thread.metadata
    (named,), _ = replay([span])
    assert named.metadata["service_name"] == "official-app"
