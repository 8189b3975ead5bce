"""The OpenInference and GenAI semconv readers, on real and documented spans (tests/fixtures/*/).

`fixtures/openinference/` holds real spans of `openinference-instrumentation-langchain` running the
reference scenarios (`fixtures/capture_openinference.py`, run in a process of its own);
`fixtures/genai/` holds spans built from the GenAI semantic conventions' documentation, one file per
way of recording messages (`fixtures/genai/make_fixtures.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatch
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
REFERENCE_FIXTURES = sorted(REFERENCE_SPANS.glob("*.json"))


def fixture_id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


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


@pytest.mark.parametrize("path", ALL_FIXTURES, ids=fixture_id)
def test_every_fixture_gives_one_thread_and_leaves_nothing_held(path: Path) -> None:
    threads, buffer = convert(path)
    assert len(threads) == 1
    assert buffer.counters.get("conversion_errors") == 0
    assert buffer.held_spans == 0
    assert all(isinstance(v, str) for v in threads[0].metadata.values())


# -- Which convention reads which spans -----------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(OPENINFERENCE.glob("*.json")), ids=fixture_id)
def test_openinference_spans_are_read_by_openinference_only(path: Path) -> None:
    for span in load_json_file(path):
        convention, _ = convention_for(span.attributes)
        assert convention.name == "openinference", span.name


@pytest.mark.parametrize("path", [*sorted(OPENINFERENCE.glob("*.json")), *REFERENCE_FIXTURES], ids=fixture_id)
def test_genai_never_claims_what_the_langchain_conventions_wrote(path: Path) -> None:
    for span in load_json_file(path):
        assert GenAISemconv().classify(span.attributes) is None, span.name


@pytest.mark.parametrize("path", sorted(GENAI.glob("*.json")), ids=fixture_id)
def test_genai_spans_are_read_by_genai_or_by_none(path: Path) -> None:
    for span in load_json_file(path):
        found = convention_for(span.attributes)
        assert found is None or found[0].name == "genai", span.name


# -- Each fixture's thread ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """What a fixture's one thread must hold: what is named here is checked, nothing else."""

    messages: list[tuple[str, str, str]] | None = None  # (type, role, text) of every message
    metadata: dict[str, str] = field(default_factory=dict)
    absent: tuple[str, ...] = ()  # metadata keys, or patterns ("ls_*"), that must not be there
    fields: dict[int, dict[str, object]] = field(default_factory=dict)  # message index -> attributes
    counters: dict[str, int] = field(default_factory=dict)  # the buffer's


def case(path: Path, expected: Expected, include_tools: bool = False):
    options = ConversionOptions(include_tools=True) if include_tools else None
    return pytest.param(path, options, expected, id=fixture_id(path) + ("+tools" if include_tools else ""))


def tokens(input_tokens: str, output_tokens: str, total_tokens: str) -> dict[str, str]:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens, "total_tokens": total_tokens}


WEATHER_IN_PARIS = "The weather in Paris is currently rainy with a temperature of 57°F."
CONVERSIONS = [
    # OpenInference: real spans
    case(
        OPENINFERENCE / "chat_standalone.json",
        Expected(
            messages=[
                ("message", "system", "You are a helpful assistant that translates English to French."),
                ("message", "user", "I love programming."),
                ("message", "assistant", "J'adore la programmation."),
            ],
            metadata={"operation": "chat"},
            absent=("model", "ls_*", "lc_*"),  # FakeListChatModel names no model
        ),
    ),
    case(
        OPENINFERENCE / "chain_lcel.json",  # the root's input and output only
        Expected(
            messages=[("message", "user", "colorful socks"), ("message", "assistant", "Rainbow Threads")],
            metadata={"workflow": "RunnableSequence"},
        ),
    ),
    case(
        OPENINFERENCE / "chain_nested.json",  # one thread
        Expected(messages=[("message", "user", "the sea"), ("message", "assistant", "Poème court sur la mer.")]),
    ),
    case(
        OPENINFERENCE / "chain_metadata.json",
        Expected(
            messages=[
                ("message", "user", "When does my order ship?"),
                ("message", "assistant", "Your order ships tomorrow."),
            ],
            # user_id is only in the `metadata` JSON, session_id also in `session.id`
            metadata={"user_id": "u-123", "session_id": "s-42"},
            absent=("tags", "ls_*", "lc_*"),  # OpenInference does not record LangChain's config tags
        ),
    ),
    case(
        OPENINFERENCE / "chain_using_attributes.json",  # user, session, tags and metadata
        Expected(
            metadata={"user_id": "u-123", "session_id": "s-42", "tags": "support,beta", "plan": "pro"},
            fields={-1: {"type": "message", "role": "assistant", "text": "Your order ships tomorrow."}},
        ),
    ),
    case(
        OPENINFERENCE / "chain_error.json",
        Expected(
            # OpenInference fills the status description with the exception's repr and traceback: the
            # event's text is the exception's message
            messages=[("message", "user", "hi"), ("event", "system", "ValueError: upstream tool failed")],
            metadata={"error": "true", "error_type": "ValueError", "error_message": "upstream tool failed"},
        ),
    ),
    case(
        OPENINFERENCE / "chat_tool_history.json",
        Expected(
            messages=[
                ("message", "system", "You are a weather assistant."),
                ("message", "user", "What is the weather in Paris?"),
                ("tool", "assistant", 'get_weather({"city":"Paris"})'),
                ("message", "assistant", "It is 18°C and sunny in Paris."),
            ],
            fields={2: {"name": "get_weather", "input": {"city": "Paris"}, "observation": "18°C and sunny"}},
        ),
    ),
    case(
        OPENINFERENCE / "chain_tool.json",
        Expected(
            messages=[
                ("message", "user", "the weather in Paris"),
                ("message", "assistant", "18°C and sunny in Paris"),
            ]
        ),
    ),
    case(
        OPENINFERENCE / "chain_tool.json",
        # OpenInference records the tool input {"city": "Paris"} as the bare string: one key, a string value
        Expected(
            fields={
                1: {"type": "tool", "name": "get_weather", "input": "Paris", "observation": "18°C and sunny in Paris"}
            }
        ),
        include_tools=True,
    ),
    case(
        OPENINFERENCE / "chain_message_output.json",  # without a parser: the AI message rendered
        Expected(
            messages=[
                ("message", "user", '{"question":"What colour is the sky?","audience":"children"}'),
                ("message", "assistant", "Blue, mostly."),
            ]
        ),
    ),
    case(
        OPENINFERENCE / "chat_model_usage.json",  # model and usage
        Expected(
            messages=[("message", "user", "Say hello in French."), ("message", "assistant", "Bonjour !")],
            metadata={"model": "gpt-4o-mini-2024-07-18", **tokens("12", "4", "16")},
        ),
    ),
    # GenAI semantic conventions: one file per way of recording messages
    case(
        GENAI / "details_event.json",  # under an HTTP span
        Expected(
            messages=[
                ("message", "system", "You are a helpful weather assistant."),
                ("message", "user", "Weather in Paris?"),
                ("tool", "assistant", 'get_weather({"location":"Paris"})'),
                ("message", "assistant", WEATHER_IN_PARIS),
            ],
            fields={2: {"observation": "rainy, 57°F"}},
            metadata={
                "model": "gpt-4o-2024-08-06",
                **tokens("97", "52", "149"),
                "conversation_id": "conv_5j66UpCpwteGg4YSxUnt7lPY",
                "operation": "chat",
                "service_name": "weather-api",
            },
        ),
    ),
    case(
        GENAI / "details_event_structured.json",  # with structured values
        Expected(
            messages=[
                (
                    "message",
                    "system",
                    "You are a language translator.\nYour mission is to translate text in English to French.",
                ),
                ("message", "user", "I love programming."),
                ("message", "assistant", "J'adore la programmation."),
            ],
            metadata={"user_id": "u-1138", "session_id": "sess-77", "total_tokens": "31"},
        ),
    ),
    case(
        GENAI / "message_events_body.json",  # message events with JSON bodies
        Expected(
            messages=[
                ("message", "system", "You are a helpful assistant."),
                ("message", "user", "What is the weather in Seattle?"),
                ("tool", "assistant", 'get_weather({"city":"Seattle"})'),
                ("message", "assistant", "It is nice in Seattle: 72°F."),
            ],
            fields={2: {"observation": "Nice weather, 72°F"}},
            # user_id from enduser.id
            metadata={"model": "gpt-4o-mini-2024-07-18", "total_tokens": "73", "user_id": "alice@example.com"},
        ),
    ),
    case(
        GENAI / "message_events_attributes.json",  # message events with attribute fields
        Expected(
            messages=[
                ("message", "system", "You are a weather assistant."),
                ("message", "user", "What's the weather in Paris?"),
                ("tool", "assistant", 'weather({"city":"Paris"})'),
                ("message", "assistant", "It is sunny in Paris, 24°C."),
            ],
            fields={2: {"observation": "sunny, 24°C"}},
            metadata={
                "model": "us.anthropic.claude-3-7-sonnet-20250219-v1:0",
                **tokens("420", "18", "438"),
                "session_id": "strands-session-9",
            },
        ),
    ),
    case(
        GENAI / "content_events.json",
        Expected(
            messages=[
                ("message", "user", "What is the capital of France?"),
                ("message", "assistant", "The capital of France is Paris."),
            ],
            metadata={"model": "gpt-4-0613", **tokens("14", "7", "21")},
        ),
    ),
    case(
        GENAI / "flat_keys.json",  # and an embeddings span, which gives no thread
        Expected(
            messages=[
                ("message", "system", "You are a poet."),
                ("message", "user", "Tell me a joke about OpenTelemetry"),
                ("message", "assistant", "Why did the span cross the trace? To get to the other service!"),
            ],
            metadata={"model": "gpt-3.5-turbo-0125", **tokens("20", "15", "35"), "session_id": "poetry-42"},
            counters={"spans_evicted": 1},  # the embeddings span: a step without a root
        ),
    ),
    case(
        GENAI / "flat_keys_tool_calls.json",
        Expected(
            messages=[
                ("message", "user", "What's the weather like in Boston today?"),
                ("tool", "assistant", 'get_current_weather({"location":"Boston, MA"})'),
                ("message", "assistant", "It is 22°C and cloudy in Boston today."),
            ],
            fields={1: {"observation": "22°C, cloudy"}},
            metadata={"total_tokens": "95"},
        ),
    ),
    case(
        GENAI / "agent_attributes.json",  # an agent with a tool and two model calls
        Expected(
            messages=[
                ("message", "user", "Weather in Paris?"),
                ("tool", "assistant", "rainy, 57°F"),
                ("message", "assistant", WEATHER_IN_PARIS),
            ],
            fields={1: {"name": "get_weather", "input": {"location": "Paris"}, "observation": "rainy, 57°F"}},
            metadata={
                "workflow": "invoke_agent Weather Agent",
                "model": "gpt-4o-2024-08-06",
                **tokens("157", "70", "227"),
                "conversation_id": "conv_5j66UpCpwteGg4YSxUnt7lPY",
            },
        ),
        include_tools=True,
    ),
]


@pytest.mark.parametrize(("path", "options", "expected"), CONVERSIONS)
def test_fixture_gives_its_thread(path: Path, options: ConversionOptions | None, expected: Expected) -> None:
    threads, buffer = convert(path, **({"options": options} if options else {}))
    assert len(threads) == 1, [t.messages for t in threads]
    assert buffer.held_spans == 0
    (thread,) = threads
    if expected.messages is not None:
        assert messages(thread) == expected.messages
    for index, attributes in expected.fields.items():
        message = thread.messages[index]
        assert {name: getattr(message, name) for name in attributes} == attributes, index
    assert {key: thread.metadata.get(key) for key in expected.metadata} == expected.metadata
    assert not [key for key in thread.metadata if any(fnmatch(key, pattern) for pattern in expected.absent)]
    for name, value in expected.counters.items():
        assert buffer.counters.get(name) == value, name


# -- OpenInference: real spans --------------------------------------------------------------------------


OPENINFERENCE_KINDS = [
    ("CHAIN", SpanClass.CHAIN),
    ("AGENT", SpanClass.CHAIN),
    ("LLM", SpanClass.LLM),
    ("TOOL", SpanClass.TOOL),
    *[(k, SpanClass.STEP) for k in ("RETRIEVER", "EMBEDDING", "RERANKER", "GUARDRAIL", "EVALUATOR", "PROMPT")],
]


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        *[pytest.param({"openinference.span.kind": kind}, cls, id=kind) for kind, cls in OPENINFERENCE_KINDS],
        pytest.param({"gen_ai.operation.name": "chat"}, None, id="no-kind"),  # GenAI's, not OpenInference's
    ],
)
def test_openinference_classify(attributes: dict, expected: SpanClass | None) -> None:
    assert OpenInference().classify(attributes) is expected


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


def test_the_keys_taken_from_semantic_conventions_are_the_names_instrumentations_write():
    """`conventions/keys.py` imports some keys from `opentelemetry-semantic-conventions`: a release that
    renamed one would silently stop a reader matching what instrumentations write."""
    from otel_context.conventions import keys

    written = {
        "ENDUSER_ID": "enduser.id",
        "ERROR_TYPE": "error.type",
        "EXCEPTION_MESSAGE": "exception.message",
        "EXCEPTION_TYPE": "exception.type",
        "GEN_AI_COMPLETION": "gen_ai.completion",
        "GEN_AI_OPERATION_NAME": "gen_ai.operation.name",
        "GEN_AI_PROMPT": "gen_ai.prompt",
        "GEN_AI_REQUEST_MODEL": "gen_ai.request.model",
        "GEN_AI_RESPONSE_MODEL": "gen_ai.response.model",
        "GEN_AI_SYSTEM": "gen_ai.system",
        "GEN_AI_USAGE_COMPLETION_TOKENS": "gen_ai.usage.completion_tokens",
        "GEN_AI_USAGE_INPUT_TOKENS": "gen_ai.usage.input_tokens",
        "GEN_AI_USAGE_OUTPUT_TOKENS": "gen_ai.usage.output_tokens",
        "GEN_AI_USAGE_PROMPT_TOKENS": "gen_ai.usage.prompt_tokens",
        "SERVICE_NAME": "service.name",
        "SESSION_ID": "session.id",
        "USER_ID": "user.id",
    }
    assert {name: getattr(keys, name) for name in written} == written
