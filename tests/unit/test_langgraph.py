"""LangChain 1.x agents and LangGraph graphs, captured (tests/fixtures/langgraph/): one run, one thread.

The instrumentation wraps each graph run's `LangGraph.workflow` span in a contentless `invoke_agent
LangGraph` span; the captured spans of the runs (tests/apps/langgraph_apps.py, captured by
tests/fixtures/capture_langgraph.py) go through the conversion core, in order and shuffled.
"""

from __future__ import annotations

import json
import random

import pytest

from otel_context.assembly.trace_buffer import TraceBuffer
from otel_context.conversion.threads import ConversionOptions
from otel_context.spans.sdk_json import load_json_file

from ..apps.langgraph_apps import SESSIONS
from ..support import paths
from ..support.threads import dialogue, turns

FIXTURES = paths.FIXTURES / "langgraph"
EXPECTED: dict[str, list[list[str]]] = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))


def replay(name: str, shuffle: bool = False, **buffer_args):
    spans = load_json_file(FIXTURES / f"{name}.json")
    if shuffle:
        random.Random(10).shuffle(spans)
    buffer = TraceBuffer(options=ConversionOptions(include_tools=True), **buffer_args)
    threads = []
    for span in spans:  # one span per batch: the hardest split
        threads += buffer.add([span])
    return threads + buffer.drain(), buffer


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_captured_runs_give_one_thread_per_run(name):
    threads, buffer = replay(name)
    assert [dialogue(t) for t in threads] == [turns([pair]) for pair in EXPECTED[name]]
    assert buffer.counters.get("threads_converted") == len(EXPECTED[name])
    if name in SESSIONS:
        assert {t.metadata["thread_id"] for t in threads} == {SESSIONS[name]}


@pytest.mark.parametrize("name", ["agent_invoke", "supervisor", "interrupt_and_resume"])
def test_captured_runs_in_any_order(name):
    threads, _ = replay(name, shuffle=True, settle_s=60.0)  # as the sidecar, which waits for stragglers
    assert sorted(dialogue(t)[0][1] for t in threads) == sorted(q for q, _ in EXPECTED[name])
    assert all(dialogue(t)[0][0] == "user" for t in threads)


def test_the_wrapper_alone_is_no_thread():
    spans = load_json_file(FIXTURES / "agent_invoke.json")
    (wrapper,) = [s for s in spans if s.name == "invoke_agent LangGraph"]
    buffer = TraceBuffer()
    assert buffer.add([wrapper]) == []
    assert buffer.counters.get("roots_empty") == 1


def test_the_wrapper_is_the_root_and_takes_the_metadata_of_the_run_it_wraps():
    threads, _ = replay("checkpointer_conversation")
    wrappers = [s for s in load_json_file(FIXTURES / "checkpointer_conversation.json") if s.name.startswith("invoke_")]
    assert [t.metadata["span_id"] for t in threads] == [s.span_hex for s in wrappers]
    assert {t.metadata["workflow"] for t in threads} == {"LangGraph"}
    assert {t.metadata["conversation_id"] for t in threads} == {"conversation-1"}  # the wrapper's own
