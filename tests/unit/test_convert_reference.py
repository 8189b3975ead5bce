"""The conversion core on real spans captured from the instrumentation (tests/fixtures/reference)."""

from __future__ import annotations

import random
from dataclasses import replace

from otel_context.assembly.trace_buffer import TraceBuffer
from otel_context.config import resolve_settings
from otel_context.conversion.threads import thread_id
from otel_context.pipeline import Pipeline
from otel_context.spans.sdk_json import load_json_file

from ..support.paths import REFERENCE_SPANS


def convert(name: str, shuffle: bool = False, **buffer_args):
    spans = load_json_file(REFERENCE_SPANS / name)
    if shuffle:
        random.Random(7).shuffle(spans)
    buffer = TraceBuffer(**buffer_args)
    threads = []
    for span in spans:  # one span per batch: the hardest split
        threads += buffer.add([span])
    threads += buffer.drain()
    return threads, buffer


def messages(thread):
    return [(m.type, m.role, m.text) for m in thread.messages]


def test_chat_standalone():
    (thread,), _ = convert("chat_standalone.json")
    assert messages(thread) == [
        ("message", "system", "You are a helpful assistant that translates English to French."),
        ("message", "user", "I love programming."),
        ("message", "assistant", "J'adore la programmation."),
    ]
    assert thread.metadata["trace_id"] == "0104b8aa31369387a26706b7f3f1e7d4"
    assert thread.id == thread_id(0x0104B8AA31369387A26706B7F3F1E7D4, 0x84A80B959ABB43CA)


def test_chain_lcel_root_input_and_output_only():
    (thread,), buffer = convert("chain_lcel.json")
    assert messages(thread) == [("message", "user", "colorful socks"), ("message", "assistant", "Rainbow Threads")]
    assert buffer.held_spans == 0


def test_chain_nested_one_thread():
    (thread,), _ = convert("chain_nested.json")
    assert messages(thread) == [("message", "user", "the sea"), ("message", "assistant", "Poème court sur la mer.")]


def test_chain_metadata_properties_and_tags():
    (thread,), _ = convert("chain_metadata.json")
    assert thread.metadata["user_id"] == "u-123"
    assert thread.metadata["session_id"] == "s-42"
    assert thread.metadata["tags"] == "support"
    assert not any(k.startswith(("ls_", "lc_")) for k in thread.metadata)


def test_chain_error_event_and_metadata():
    (thread,), _ = convert("chain_error.json")
    assert messages(thread) == [("message", "user", "hi"), ("event", "system", "ValueError: upstream tool failed")]
    assert thread.metadata["error_type"] == "ValueError"


def test_ids_are_stable_and_uuid_shaped():
    (a,), _ = convert("chain_lcel.json")
    (b,), _ = convert("chain_lcel.json")
    assert a.id == b.id
    assert len(a.id) == 36 and a.id.count("-") == 4


def test_wire_format_matches_the_context_api():
    (thread,), _ = convert("chat_standalone.json")
    wire = thread.to_wire()
    assert set(wire) == {"id", "messages", "metadata"}
    assert wire["messages"][0]["event_timestamp"].endswith("Z")
    assert all(isinstance(v, str) for v in wire["metadata"].values())


def test_settle_window_lets_children_arrive_after_their_root():
    now = [0.0]
    spans = load_json_file(REFERENCE_SPANS / "chain_nested.json")
    buffer = TraceBuffer(settle_s=2.0, clock=lambda: now[0])
    assert buffer.add(list(reversed(spans))) == []  # root first, as a sidecar may see it
    now[0] = 3.0
    (thread,) = buffer.due()
    assert messages(thread)[-1][2] == "Poème court sur la mer."
    assert buffer.held_spans == 0


def test_duplicate_delivery_is_converted_once():
    spans = load_json_file(REFERENCE_SPANS / "chain_lcel.json")
    buffer = TraceBuffer()
    assert len(buffer.add(spans)) == 1
    assert buffer.add(spans) == []
    assert buffer.counters.get("duplicates") == 1


def test_orphans_are_evicted_by_count_and_age_and_counted():
    now = [0.0]
    spans = [s for s in load_json_file(REFERENCE_SPANS / "chain_lcel.json") if s.parent_id is not None]
    buffer = TraceBuffer(max_traces=1, max_age_s=10, clock=lambda: now[0])
    buffer.add(spans)
    assert buffer.held_spans == 3
    now[0] = 11.0
    buffer.due()
    assert buffer.held_spans == 0
    assert buffer.counters.get("spans_evicted") == 3
    assert buffer.counters.get("traces_evicted") == 1


def test_a_candidate_whose_parent_never_comes_leaves_no_trace_behind():
    """An OpenInference-style chain under a parent that never arrives (a filtered HTTP span) becomes a
    root after the wait, and nothing stays indexed under the missing parent."""
    from otel_context.model import SpanRecord

    now = [0.0]
    buffer = TraceBuffer(root_wait_s=5, clock=lambda: now[0])
    chain = SpanRecord(
        trace_id=1, span_id=2, parent_id=99, name="chain", start_ns=0, end_ns=1,
        attributes={"openinference.span.kind": "CHAIN", "input.value": "hi", "output.value": "yo"},
    )  # fmt: skip
    assert buffer.add([chain]) == []
    now[0] = 6.0
    (thread,) = buffer.due()
    assert messages(thread) == [("message", "user", "hi"), ("message", "assistant", "yo")]
    assert buffer._waiting_on == {} and buffer._candidates == {}


def test_the_sidecar_recognises_a_resent_run_long_after_an_app_would_forget_it():
    """The sidecar remembers 100,000 built roots: a Collector resends a request whose answer was lost. An
    app, where nothing resends spans, remembers as many as it holds pending traces, so its RSS levels off
    sooner; a run it sees again after that many others is converted again."""
    chat = load_json_file(REFERENCE_SPANS / "chat_standalone.json")
    settings = resolve_settings(endpoint="http://127.0.0.1:1", token="t", max_pending_traces=100, sessions=False)
    for push_back, converted_again in ((True, 0), (False, 1)):
        pipeline = Pipeline(settings, push_back=push_back, session_db=":memory:")
        try:
            buffer = pipeline.buffer
            assert len(buffer.add(chat)) == 1
            for n in range(1, 301):  # 300 other runs: three times the pending traces' bound
                assert len(buffer.add([replace(span, trace_id=span.trace_id ^ n) for span in chat])) == 1
            assert len(buffer.add(chat)) == converted_again
        finally:
            pipeline.shutdown(1)
