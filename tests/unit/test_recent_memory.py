"""The trace buffer's bounded memories of recent keys: what they remember and when they forget."""

from __future__ import annotations

from otel_context.assembly.trace_buffer import _Recent, _RecentRuns


def test_recent_keys_remember_at_least_half_their_size_and_at_most_all_of_it() -> None:
    recent = _Recent(10)
    first = (0x0123456789ABCDEF0123456789ABCDEF, 0xFEDCBA9876543210)
    recent.add(first)
    for n in range(1, 5):  # four more: still within the latest five
        recent.add((n, n))
    assert first in recent
    assert (first[0], first[1] + 1) not in recent  # another span of the same trace is another key
    assert (first[0], None) not in recent
    for n in range(5, 9):  # nine added in all: the first five are the older generation
        recent.add((n, n))
    assert first in recent
    recent.add((9, 9))  # the newer generation is full: it becomes the older, the oldest goes
    assert first not in recent
    assert all((n, n) in recent for n in range(5, 10))


def test_a_key_without_a_span_is_not_a_span_of_its_trace() -> None:
    recent = _Recent(100)
    recent.add((7, None))
    assert (7, None) in recent
    assert (7, 1) not in recent


def test_recent_runs_give_the_latest_run_of_a_trace_across_generations() -> None:
    runs = _RecentRuns(4)
    runs[1] = 10
    runs[2] = 20  # a new generation starts
    runs[1] = 11
    assert runs.get(1) == 11
    assert runs.get(2) == 20
    runs[3] = 30
    runs[4] = 40
    assert runs.get(2) is None  # its generation is gone
    assert runs.get(3) == 30
