"""One trace holds at most `max_spans_per_trace` spans while its root is awaited: the newest are kept.

A flood of model calls under a root that comes last (a real OpenLLMetry chain, its model span cloned
with token counts that say which clone it is): the oldest beyond the bound are evicted and counted,
and the root, when it comes, still makes its thread from the spans kept.
"""

from __future__ import annotations

import dataclasses

import pytest

from otel_context.assembly.trace_buffer import TraceBuffer
from otel_context.config import resolve_settings
from otel_context.environment_variables import OTEL_EXPORTER_CONTEXT_MAX_SPANS_PER_TRACE
from otel_context.spans.sdk_json import load_json_file

from ..support.paths import REFERENCE_SPANS

CHAIN = load_json_file(REFERENCE_SPANS / "chain_lcel.json")  # three steps (no usage), then the root
ROOT = CHAIN[-1]
CHAT = next(s for s in CHAIN if s.name == "FakeListChatModel.chat")


def model_calls(count: int) -> list:
    """`count` model calls under the root, call i with i + 1 input tokens (1-based: its number)."""
    return [
        dataclasses.replace(
            CHAT,
            span_id=0x1000 + i,
            attributes={**CHAT.attributes, "gen_ai.usage.input_tokens": i + 1, "gen_ai.usage.output_tokens": 1},
        )
        for i in range(count)
    ]


def flood(buffer: TraceBuffer, count: int, batch: int = 30) -> list:
    """The model calls in batches of `batch`, then the chain's own spans (root last); the threads made."""
    calls = model_calls(count)
    threads = []
    for start in range(0, count, batch):
        threads += buffer.add(calls[start : start + batch])
    assert threads == []  # nothing is a root yet
    return buffer.add(CHAIN)


def test_the_newest_spans_are_kept_and_the_others_counted():
    buffer = TraceBuffer(max_spans_per_trace=50)
    calls = model_calls(200)
    for start in range(0, 200, 30):
        buffer.add(calls[start : start + 30])
        assert buffer.held_spans <= 50
    assert buffer.held_spans == 50
    assert buffer.counters.get("spans_evicted") == 150
    assert buffer.counters.get("traces_evicted") == 0  # the trace is still held: its root may come

    (thread,) = buffer.add(CHAIN)
    # the chain's own three steps came last: kept, with the newest 47 calls (numbers 154-200)
    assert thread.metadata["input_tokens"] == str(sum(range(154, 201)))
    assert thread.metadata["incomplete"] == "true"
    assert thread.metadata["incomplete_reason"] == "evicted"
    assert [(m.role, m.text) for m in thread.messages] == [("user", "colorful socks"), ("assistant", "Rainbow Threads")]
    assert buffer.held_spans == 0
    assert buffer.counters.get("spans_evicted") == 153  # the oldest three calls gave way to the chain's steps


def test_a_trace_within_the_bound_loses_nothing():
    buffer = TraceBuffer(max_spans_per_trace=53)  # 50 calls and the chain's three steps
    (thread,) = flood(buffer, 50)
    assert thread.metadata["input_tokens"] == str(sum(range(1, 51)))
    assert "incomplete" not in thread.metadata
    assert buffer.counters.get("spans_evicted") == 0


def test_one_batch_past_the_bound_is_trimmed_at_once():
    buffer = TraceBuffer(max_spans_per_trace=10)
    (thread,) = flood(buffer, 1000, batch=1000)
    assert thread.metadata["input_tokens"] == str(sum(range(994, 1001)))  # 7 calls and the chain's 3 steps
    assert buffer.counters.get("spans_evicted") == 993


def test_the_bound_is_a_setting(monkeypatch):
    monkeypatch.delenv(OTEL_EXPORTER_CONTEXT_MAX_SPANS_PER_TRACE, raising=False)
    assert resolve_settings().max_spans_per_trace == 10_000
    monkeypatch.setenv(OTEL_EXPORTER_CONTEXT_MAX_SPANS_PER_TRACE, "250")
    assert resolve_settings().max_spans_per_trace == 250
    monkeypatch.setenv(OTEL_EXPORTER_CONTEXT_MAX_SPANS_PER_TRACE, "0")  # malformed: one warning, the default
    assert resolve_settings().max_spans_per_trace == 10_000
    with pytest.raises(ValueError, match="max_spans_per_trace"):
        resolve_settings(max_spans_per_trace=0)
