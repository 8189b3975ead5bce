"""The OpenInference and GenAI semconv readers, on real and documented spans (tests/fixtures/*/).

`fixtures/openinference/` holds real spans of `openinference-instrumentation-langchain` running the
reference scenarios (`fixtures/capture_openinference.py`, run in a process of its own);
`fixtures/genai/` holds spans built from the GenAI semantic conventions' documentation, one file per
way of recording messages (`fixtures/genai/make_fixtures.py`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from otel_context.assembly.trace_buffer import TraceBuffer
from otel_context.conventions import (
    CONVENTIONS,
    GenAISemconv,
    OpenInference,
    OpenLLMetry,
    SpanClass,
    convention_for,
    default_conventions,
)
from otel_context.conversion.threads import ConversionOptions
from otel_context.model import SpanEvent
from otel_context.spans.sdk_json import load_json_file

from ..support.paths import FIXTURES, REFERENCE_SPANS

OPENINFERENCE = FIXTURES / "openinference"
GENAI = FIXTURES / "genai"
ALL_FIXTURES = sorted([*OPENINFERENCE.glob("*.json"), *GENAI.glob("*.json")])


def convert(path: Path, **buffer_args):
    """Feed a fixture span by span (the hardest split), then drain: the threads and the buffer."""
    buffer = TraceBuffer(**buffer_args)
    threads = []
    for span in load_json_file(path):
        threads += buffer.add([span])
    threads += buffer.drain()
    return threads, buffer


def only_thread(path: Path, **buffer_args):
    threads, buffer = convert(path, **buffer_args)
    assert len(threads) == 1, [t.messages for t in threads]
    assert buffer.held_spans == 0
    return threads[0]


def messages(thread) -> list[tuple[str, str, str]]:
    return [(m.type, m.role, m.text) for m in thread.messages]


def span_attributes(path: Path, name: str) -> dict:
    return next(s.attributes for s in load_json_file(path) if s.name == name)


def test_registered_in_order() -> None:
    assert [c.name for c in CONVENTIONS] == ["openllmetry", "openinference", "genai"]
    assert [type(c) for c in default_conventions("acme.")] == [OpenLLMetry, OpenInference, GenAISemconv]


@pytest.mark.parametrize("path", ALL_FIXTURES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_fixture_gives_one_thread_and_leaves_nothing_held(path: Path) -> None:
    threads, buffer = convert(path)
    assert len(threads) == 1
    assert buffer.counters.get("conversion_errors") == 0
    assert buffer.held_spans == 0
    assert all(isinstance(v, str) for v in threads[0].metadata.values())


# -- OpenInference: real spans --------------------------------------------------------------------------


def test_openinference_spans_are_read_by_openinference_only() -> None:
    for path in OPENINFERENCE.glob("*.json"):
        for span in load_json_file(path):
            convention, _ = convention_for(span.attributes)
            assert convention.name == "openinference", (path.name, span.name)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("CHAIN", SpanClass.CHAIN),
        ("AGENT", SpanClass.CHAIN),
        ("LLM", SpanClass.LLM),
        ("TOOL", SpanClass.TOOL),
        *[(k, SpanClass.STEP) for k in ("RETRIEVER", "EMBEDDING", "RERANKER", "GUARDRAIL", "EVALUATOR", "PROMPT")],
    ],
)
def test_openinference_classify(kind: str, expected: SpanClass) -> None:
    assert OpenInference().classify({"openinference.span.kind": kind}) is expected
    assert OpenInference().classify({"gen_ai.operation.name": "chat"}) is None


def test_openinference_chat_standalone() -> None:
    thread = only_thread(OPENINFERENCE / "chat_standalone.json")
    assert messages(thread) == [
        ("message", "system", "You are a helpful assistant that translates English to French."),
        ("message", "user", "I love programming."),
        ("message", "assistant", "J'adore la programmation."),
    ]
    assert thread.metadata["operation"] == "chat"
    assert "model" not in thread.metadata  # FakeListChatModel names no model
    assert not any(k.startswith(("ls_", "lc_")) for k in thread.metadata)


def test_openinference_chain_lcel_root_input_and_output_only() -> None:
    thread = only_thread(OPENINFERENCE / "chain_lcel.json")
    assert messages(thread) == [("message", "user", "colorful socks"), ("message", "assistant", "Rainbow Threads")]
    assert thread.metadata["workflow"] == "RunnableSequence"


def test_openinference_chain_nested_one_thread() -> None:
    thread = only_thread(OPENINFERENCE / "chain_nested.json")
    assert messages(thread) == [("message", "user", "the sea"), ("message", "assistant", "Poème court sur la mer.")]


def test_openinference_chain_metadata_user_and_session() -> None:
    thread = only_thread(OPENINFERENCE / "chain_metadata.json")
    assert messages(thread) == [
        ("message", "user", "When does my order ship?"),
        ("message", "assistant", "Your order ships tomorrow."),
    ]
    assert thread.metadata["user_id"] == "u-123"  # only in the `metadata` JSON
    assert thread.metadata["session_id"] == "s-42"  # also `session.id`
    assert "tags" not in thread.metadata  # OpenInference does not record LangChain's config tags
    assert not any(k.startswith(("ls_", "lc_")) for k in thread.metadata)


def test_openinference_using_attributes_user_session_tags_metadata() -> None:
    thread = only_thread(OPENINFERENCE / "chain_using_attributes.json")
    assert messages(thread)[-1] == ("message", "assistant", "Your order ships tomorrow.")
    assert thread.metadata["user_id"] == "u-123"
    assert thread.metadata["session_id"] == "s-42"
    assert thread.metadata["tags"] == "support,beta"
    assert thread.metadata["plan"] == "pro"


def test_openinference_chain_error() -> None:
    thread = only_thread(OPENINFERENCE / "chain_error.json")
    assert messages(thread)[0] == ("message", "user", "hi")
    event = thread.messages[-1]
    assert (event.type, event.role) == ("event", "system")
    assert event.text.startswith("ValueError: ") and "upstream tool failed" in event.text
    assert thread.metadata["error"] == "true"
    assert thread.metadata["error_type"] == "ValueError"


def test_openinference_chain_error_text_is_the_exception_message() -> None:
    # OpenInference fills the status description with the exception's repr and traceback.
    thread = only_thread(OPENINFERENCE / "chain_error.json")
    assert messages(thread) == [("message", "user", "hi"), ("event", "system", "ValueError: upstream tool failed")]
    assert thread.metadata["error_message"] == "upstream tool failed"


def test_openinference_chat_tool_history() -> None:
    thread = only_thread(OPENINFERENCE / "chat_tool_history.json")
    assert messages(thread) == [
        ("message", "system", "You are a weather assistant."),
        ("message", "user", "What is the weather in Paris?"),
        ("tool", "assistant", 'get_weather({"city":"Paris"})'),
        ("message", "assistant", "It is 18°C and sunny in Paris."),
    ]
    tool = thread.messages[2]
    assert (tool.name, tool.input, tool.observation) == ("get_weather", {"city": "Paris"}, "18°C and sunny")


def test_openinference_chain_tool() -> None:
    thread = only_thread(OPENINFERENCE / "chain_tool.json")
    assert messages(thread) == [
        ("message", "user", "the weather in Paris"),
        ("message", "assistant", "18°C and sunny in Paris"),
    ]
    with_tools = only_thread(OPENINFERENCE / "chain_tool.json", options=ConversionOptions(include_tools=True))
    tool = with_tools.messages[1]
    # OpenInference records the tool input {"city": "Paris"} as the bare string: one key, a string value
    assert (tool.type, tool.name, tool.input, tool.observation) == (
        "tool",
        "get_weather",
        "Paris",
        "18°C and sunny in Paris",
    )


def test_openinference_chain_without_parser_renders_the_ai_message() -> None:
    thread = only_thread(OPENINFERENCE / "chain_message_output.json")
    assert messages(thread) == [
        ("message", "user", '{"question":"What colour is the sky?","audience":"children"}'),
        ("message", "assistant", "Blue, mostly."),
    ]


def test_openinference_model_and_usage() -> None:
    thread = only_thread(OPENINFERENCE / "chat_model_usage.json")
    assert messages(thread) == [("message", "user", "Say hello in French."), ("message", "assistant", "Bonjour !")]
    assert thread.metadata["model"] == "gpt-4o-mini-2024-07-18"
    assert (thread.metadata["input_tokens"], thread.metadata["output_tokens"], thread.metadata["total_tokens"]) == (
        "12",
        "4",
        "16",
    )


@pytest.mark.parametrize("scenario", ["chat_standalone", "chain_lcel", "chain_nested", "chain_metadata"])
def test_openinference_threads_equal_openllmetry_threads(scenario: str) -> None:
    ours = only_thread(OPENINFERENCE / f"{scenario}.json")
    reference = only_thread(REFERENCE_SPANS / f"{scenario}.json")
    assert messages(ours) == messages(reference)
    for key in ("user_id", "session_id"):
        assert ours.metadata.get(key) == reference.metadata.get(key)


def test_openinference_readers_directly() -> None:
    reader = OpenInference()
    llm = span_attributes(OPENINFERENCE / "chat_model_usage.json", "ProviderLikeChatModel")
    assert reader.models(llm) == ["gpt-4o-mini-2024-07-18"]
    assert (reader.usage(llm).input_tokens, reader.usage(llm).output_tokens, reader.usage(llm).total_tokens) == (
        12,
        4,
        16,
    )
    inputs, outputs = reader.llm_messages(llm)
    assert [(m.role, m.text) for m in inputs] == [("user", "Say hello in French.")]
    assert [(m.role, m.text) for m in outputs] == [("assistant", "Bonjour !")]

    parser = span_attributes(OPENINFERENCE / "chain_lcel.json", "StrOutputParser")
    raw_in, raw_out = reader.chain_io(parser)
    assert raw_in == {"type": "ai", "content": "Rainbow Threads"}  # message_to_dict's {"type", "data"} unwrapped
    assert raw_out == "Rainbow Threads"

    tool = span_attributes(OPENINFERENCE / "chain_tool.json", "get_weather")
    step = reader.tool_step(tool)
    assert (step.name, step.input, step.output) == ("get_weather", "Paris", "18°C and sunny in Paris")

    root = span_attributes(OPENINFERENCE / "chain_metadata.json", "RunnableSequence")
    assert reader.properties(root) == {"user_id": "u-123", "session_id": "s-42"}
    llm_with_ls = span_attributes(OPENINFERENCE / "chain_metadata.json", "FakeListChatModel")
    assert reader.properties(llm_with_ls) == {"user_id": "u-123", "session_id": "s-42"}  # ls_* skipped


def test_openinference_properties_tags_and_content_parts() -> None:
    reader = OpenInference()
    attributes = {
        "openinference.span.kind": "LLM",
        "metadata": '{"thread_id": "t-1", "langgraph_node": "agent", "checkpoint_ns": "x", "retries": 2}',
        "tag.tags": ["a", "b"],
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.contents.0.message_content.type": "text",
        "llm.input_messages.0.message.contents.0.message_content.text": "What is in this image?",
        "llm.input_messages.0.message.contents.1.message_content.type": "image",
        "llm.input_messages.0.message.contents.1.message_content.image.image.url": "https://example.com/cat.png",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.tool_calls.0.tool_call.id": "call_9",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "describe",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"detail": "high"}',
        "llm.token_count.prompt": 30,
        "llm.token_count.completion": 5,
        "llm.model_name": "gpt-4o",
    }
    assert reader.properties(attributes) == {"thread_id": "t-1"}
    assert reader.tags(attributes) == ["a", "b"]
    inputs, outputs = reader.llm_messages(attributes)
    assert [(m.type, m.role, m.text) for m in inputs] == [("message", "user", "What is in this image?")]
    assert [(m.type, m.name, m.input) for m in outputs] == [("tool", "describe", {"detail": "high"})]
    assert reader.usage(attributes).total_tokens == 35
    assert reader.models({"llm.model_name": "unknown", "metadata": '{"ls_model_name": "claude-3-5"}'}) == ["claude-3-5"]


def test_openinference_text_plain_is_kept_and_json_parsed() -> None:
    reader = OpenInference()
    plain = {"input.value": '{"not": "parsed"}', "output.value": "hi"}
    assert reader.chain_io(plain) == ('{"not": "parsed"}', "hi")
    typed = {"input.value": '{"a": 1}', "input.mime_type": "application/json", "output.mime_type": "application/json"}
    assert reader.chain_io(typed) == ({"a": 1}, None)


# -- GenAI semantic conventions -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"gen_ai.operation.name": "chat"}, SpanClass.LLM),
        ({"gen_ai.operation.name": "text_completion"}, SpanClass.LLM),
        ({"gen_ai.operation.name": "generate_content"}, SpanClass.LLM),
        ({"gen_ai.operation.name": "embeddings"}, SpanClass.STEP),
        ({"gen_ai.operation.name": "execute_tool"}, SpanClass.TOOL),
        ({"gen_ai.operation.name": "invoke_agent"}, SpanClass.CHAIN),
        ({"llm.request.type": "chat", "gen_ai.system": "OpenAI"}, SpanClass.LLM),
        ({"llm.request.type": "completion"}, SpanClass.LLM),
        ({"llm.request.type": "embedding"}, SpanClass.STEP),
        ({"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4"}, SpanClass.LLM),
        ({"gen_ai.operation.name": "chat", "traceloop.workflow.name": "RunnableSequence"}, None),
        ({"gen_ai.operation.name": "execute_task", "traceloop.span.kind": "task"}, None),
        ({"gen_ai.operation.name": "chat", "openinference.span.kind": "LLM"}, None),
        ({"http.request.method": "POST"}, None),
        ({"gen_ai.system": "openai"}, None),
    ],
)
def test_genai_classify(attributes: dict, expected: SpanClass | None) -> None:
    assert GenAISemconv().classify(attributes) is expected


def test_genai_never_claims_what_the_langchain_conventions_wrote() -> None:
    for path in [*OPENINFERENCE.glob("*.json"), *REFERENCE_SPANS.glob("*.json")]:
        for span in load_json_file(path):
            assert GenAISemconv().classify(span.attributes) is None, (path.name, span.name)
    for path in GENAI.glob("*.json"):
        for span in load_json_file(path):
            found = convention_for(span.attributes)
            assert found is None or found[0].name == "genai", (path.name, span.name)


def test_genai_details_event_under_an_http_span() -> None:
    thread = only_thread(GENAI / "details_event.json")
    assert messages(thread) == [
        ("message", "system", "You are a helpful weather assistant."),
        ("message", "user", "Weather in Paris?"),
        ("tool", "assistant", 'get_weather({"location":"Paris"})'),
        ("message", "assistant", "The weather in Paris is currently rainy with a temperature of 57°F."),
    ]
    assert thread.messages[2].observation == "rainy, 57°F"
    assert thread.metadata["model"] == "gpt-4o-2024-08-06"
    assert (thread.metadata["input_tokens"], thread.metadata["output_tokens"], thread.metadata["total_tokens"]) == (
        "97",
        "52",
        "149",
    )
    assert thread.metadata["conversation_id"] == "conv_5j66UpCpwteGg4YSxUnt7lPY"
    assert thread.metadata["operation"] == "chat"
    assert thread.metadata["service_name"] == "weather-api"


def test_genai_details_event_with_structured_values() -> None:
    thread = only_thread(GENAI / "details_event_structured.json")
    assert messages(thread) == [
        (
            "message",
            "system",
            "You are a language translator.\nYour mission is to translate text in English to French.",
        ),
        ("message", "user", "I love programming."),
        ("message", "assistant", "J'adore la programmation."),
    ]
    assert thread.metadata["user_id"] == "u-1138"
    assert thread.metadata["session_id"] == "sess-77"
    assert thread.metadata["total_tokens"] == "31"


def test_genai_message_events_with_json_bodies() -> None:
    thread = only_thread(GENAI / "message_events_body.json")
    assert messages(thread) == [
        ("message", "system", "You are a helpful assistant."),
        ("message", "user", "What is the weather in Seattle?"),
        ("tool", "assistant", 'get_weather({"city":"Seattle"})'),
        ("message", "assistant", "It is nice in Seattle: 72°F."),
    ]
    assert thread.messages[2].observation == "Nice weather, 72°F"
    assert thread.metadata["model"] == "gpt-4o-mini-2024-07-18"
    assert thread.metadata["total_tokens"] == "73"
    assert thread.metadata["user_id"] == "alice@example.com"  # enduser.id


def test_genai_message_events_with_attribute_fields() -> None:
    thread = only_thread(GENAI / "message_events_attributes.json")
    assert messages(thread) == [
        ("message", "system", "You are a weather assistant."),
        ("message", "user", "What's the weather in Paris?"),
        ("tool", "assistant", 'weather({"city":"Paris"})'),
        ("message", "assistant", "It is sunny in Paris, 24°C."),
    ]
    assert thread.messages[2].observation == "sunny, 24°C"
    assert thread.metadata["model"] == "us.anthropic.claude-3-7-sonnet-20250219-v1:0"
    assert (thread.metadata["input_tokens"], thread.metadata["output_tokens"], thread.metadata["total_tokens"]) == (
        "420",
        "18",
        "438",
    )
    assert thread.metadata["session_id"] == "strands-session-9"


def test_genai_content_events() -> None:
    thread = only_thread(GENAI / "content_events.json")
    assert messages(thread) == [
        ("message", "user", "What is the capital of France?"),
        ("message", "assistant", "The capital of France is Paris."),
    ]
    assert thread.metadata["model"] == "gpt-4-0613"
    assert (thread.metadata["input_tokens"], thread.metadata["output_tokens"], thread.metadata["total_tokens"]) == (
        "14",
        "7",
        "21",
    )


def test_genai_flat_keys_and_embeddings_give_no_thread() -> None:
    threads, buffer = convert(GENAI / "flat_keys.json")
    (thread,) = threads
    assert messages(thread) == [
        ("message", "system", "You are a poet."),
        ("message", "user", "Tell me a joke about OpenTelemetry"),
        ("message", "assistant", "Why did the span cross the trace? To get to the other service!"),
    ]
    assert thread.metadata["model"] == "gpt-3.5-turbo-0125"
    assert (thread.metadata["input_tokens"], thread.metadata["output_tokens"], thread.metadata["total_tokens"]) == (
        "20",
        "15",
        "35",
    )
    assert thread.metadata["session_id"] == "poetry-42"
    assert buffer.counters.get("spans_evicted") == 1  # the embeddings span: a step without a root


def test_genai_flat_keys_with_tool_calls() -> None:
    thread = only_thread(GENAI / "flat_keys_tool_calls.json")
    assert messages(thread) == [
        ("message", "user", "What's the weather like in Boston today?"),
        ("tool", "assistant", 'get_current_weather({"location":"Boston, MA"})'),
        ("message", "assistant", "It is 22°C and cloudy in Boston today."),
    ]
    assert thread.messages[1].observation == "22°C, cloudy"
    assert thread.metadata["total_tokens"] == "95"


def test_genai_agent_with_tool_and_two_model_calls() -> None:
    thread = only_thread(GENAI / "agent_attributes.json", options=ConversionOptions(include_tools=True))
    assert messages(thread) == [
        ("message", "user", "Weather in Paris?"),
        ("tool", "assistant", "rainy, 57°F"),
        ("message", "assistant", "The weather in Paris is currently rainy with a temperature of 57°F."),
    ]
    tool = thread.messages[1]
    assert (tool.name, tool.input, tool.observation) == ("get_weather", {"location": "Paris"}, "rainy, 57°F")
    assert thread.metadata["workflow"] == "invoke_agent Weather Agent"
    assert thread.metadata["model"] == "gpt-4o-2024-08-06"
    assert (thread.metadata["input_tokens"], thread.metadata["output_tokens"], thread.metadata["total_tokens"]) == (
        "157",
        "70",
        "227",
    )
    assert thread.metadata["conversation_id"] == "conv_5j66UpCpwteGg4YSxUnt7lPY"


def test_genai_preference_attributes_then_flat_keys_then_events() -> None:
    reader = GenAISemconv()
    event = SpanEvent("gen_ai.user.message", 0, {"content": "from the event"})
    on_span = {"gen_ai.operation.name": "chat", "gen_ai.input.messages": '[{"role": "user", "content": "from attrs"}]'}
    flat = {"gen_ai.operation.name": "chat", "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "from flat"}
    assert [m.text for m in reader.llm_messages(on_span, (event,))[0]] == ["from attrs"]
    assert [m.text for m in reader.llm_messages(flat, (event,))[0]] == ["from flat"]
    assert [m.text for m in reader.llm_messages({"gen_ai.operation.name": "chat"}, (event,))[0]] == ["from the event"]


def test_genai_event_bodies_in_other_shapes() -> None:
    reader = GenAISemconv()
    events = (
        SpanEvent("gen_ai.system.message", 0, {"body": '{"content": "Be brief."}'}),
        SpanEvent("gen_ai.user.message", 1, {"content": '{"order": 42}'}),  # JSON that is no content blocks
        SpanEvent(
            "gen_ai.assistant.message",
            2,
            {"tool_calls": '[{"id": "c1", "function": {"name": "f", "arguments": "{}"}}]'},
        ),
        SpanEvent("gen_ai.tool.message", 3, {"content": "done", "id": "c1"}),
        SpanEvent("gen_ai.choice", 5, {"index": 1, "message": '{"content": "second"}'}),
        SpanEvent("gen_ai.choice", 4, {"index": 0, "message": '{"role": "assistant", "content": "first"}'}),
    )
    inputs, outputs = reader.llm_messages({"gen_ai.operation.name": "chat"}, events)
    assert [(m.type, m.role, m.text) for m in inputs] == [
        ("message", "system", "Be brief."),
        ("message", "user", '{"order": 42}'),
        ("tool", "assistant", "f({})"),
    ]
    assert inputs[2].observation == "done"
    assert [m.text for m in outputs] == ["first", "second"]


def test_genai_content_events_may_hold_text() -> None:
    events = (
        SpanEvent("gen_ai.content.prompt", 0, {"gen_ai.prompt": "Translate: cat"}),
        SpanEvent("gen_ai.content.completion", 1, {"gen_ai.completion": "chat"}),
    )
    inputs, outputs = GenAISemconv().llm_messages({"gen_ai.system": "openai"}, events)
    assert [(m.role, m.text) for m in inputs] == [("user", "Translate: cat")]
    assert [(m.role, m.text) for m in outputs] == [("assistant", "chat")]


def test_genai_readers_directly() -> None:
    reader = GenAISemconv()
    agent = span_attributes(GENAI / "agent_attributes.json", "invoke_agent Weather Agent")
    assert reader.chain_io(agent) == (
        "Weather in Paris?",
        "The weather in Paris is currently rainy with a temperature of 57°F.",
    )
    tool = span_attributes(GENAI / "agent_attributes.json", "execute_tool get_weather")
    step = reader.tool_step(tool)
    assert (step.name, step.input, step.output) == ("get_weather", {"location": "Paris"}, "rainy, 57°F")
    assert reader.models({"gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "unknown"}) == ["gpt-4o"]
    usage = reader.usage({"gen_ai.usage.input_tokens": 3, "gen_ai.usage.output_tokens": 4})
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (3, 4, 7)
    assert reader.properties({"user.id": "u", "session.id": "s", "gen_ai.conversation.id": "c"}) == {
        "user_id": "u",
        "session_id": "s",
        "conversation_id": "c",
    }
    assert reader.tags(agent) == []
