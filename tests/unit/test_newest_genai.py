"""The newest GenAI conventions: `invoke_workflow`, client and internal `invoke_agent`, cache and reasoning
tokens, multimodal parts and `gen_ai.client.operation.exception` (constructed fixtures in
fixtures/genai/, also replayed through the exporter and the sidecar by tests/e2e/test_conventions_e2e.py;
a real LangChain run with images, end to end, is in tests/e2e/test_newest_genai.py)."""

from __future__ import annotations

import json

from otel_context.assembly.trace_buffer import TraceBuffer
from otel_context.conversion.evaluations import parse_rules
from otel_context.conversion.threads import ConversionOptions
from otel_context.spans.sdk_json import load_json_file

from ..support.paths import FIXTURES

GENAI = FIXTURES / "genai"
# the 1x1 PNG in newest_workflow.json
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def thread_of(name: str, **options):
    buffer = TraceBuffer(options=ConversionOptions(**options))
    threads = [t for span in load_json_file(GENAI / name) for t in buffer.add([span])] + buffer.drain()
    assert len(threads) == 1 and buffer.held_spans == 0
    return threads[0]


def test_a_workflow_of_agents_with_media_cache_and_reasoning_tokens():
    thread = thread_of("newest_workflow.json", eval_rules=parse_rules("groundedness>=0.8"))
    assert [(m.role, m.text) for m in thread.messages] == [
        ("user", "Where was this photo taken?\n[image: image/png]\n[audio: audio/wav]"),
        ("assistant", "Lisbon, by the tram."),
    ]
    assert thread.messages[1].rating == 1
    meta = thread.metadata
    assert meta["workflow"] == "travel-desk" and meta["io_source"] == "model_calls"
    assert (meta["input_tokens"], meta["output_tokens"]) == ("1200", "80")
    assert (meta["cache_read_tokens"], meta["cache_write_tokens"], meta["reasoning_tokens"]) == ("1000", "100", "30")
    assert (meta["eval.groundedness"], meta["eval.groundedness.label"]) == ("0.9", "grounded")
    assert PIXEL not in json.dumps(thread.to_wire())


def test_an_operation_exception_event_marks_the_call_failed():
    thread = thread_of("operation_exception.json")
    assert thread.messages[-1].type == "event"
    assert thread.messages[-1].text == "openai.RateLimitError: Rate limit reached for gpt-4o"
    assert (thread.metadata["error"], thread.metadata["error_type"]) == ("true", "openai.RateLimitError")


def test_a_conversation_turn_of_the_current_semantic_conventions_genai():
    """`handle_conversation_turn` is the run; per-modality counts sum to the usage; `cache_write` is the cache
    writes' new name; a `generic` part shows its type, never its fields."""
    thread = thread_of("conversation_turn.json", include_tools=True)
    assert [(m.type, m.role, m.text) for m in thread.messages] == [
        ("message", "user", "Is the museum open?"),
        ("tool", "assistant", '{"open":"10:00","close":"18:00"}'),
        ("message", "assistant", "Yes, until 18:00 today."),
    ]
    meta = thread.metadata
    assert meta["workflow"] == "handle_conversation_turn"
    assert (meta["input_tokens"], meta["output_tokens"], meta["total_tokens"]) == ("1000", "40", "1040")
    assert (meta["cache_read_tokens"], meta["cache_write_tokens"]) == ("600", "200")
    assert "io_source" not in meta


def test_a_generic_part_reads_as_its_type():
    from otel_context.conventions.genai import GenAISemconv

    question = [
        {
            "role": "user",
            "parts": [
                {"type": "text", "content": "Answer from the result."},
                {"type": "generic", "generic_type": "search_result", "content": [{"type": "text", "text": "x"}]},
                {"type": "generic"},
            ],
        }
    ]
    inputs, _ = GenAISemconv().llm_messages({"gen_ai.input.messages": json.dumps(question)})
    assert [m.text for m in inputs] == ["Answer from the result.\n[search_result]\n[content]"]
