"""The session book places each turn once: its thread, the thread's fixed metadata, its messages' offset."""

from __future__ import annotations

import pytest

from otel_context.delivery.readback import segment_stored
from otel_context.model import ConversationThread, Message
from otel_context.preparation.segments import session_append, standalone
from otel_context.preparation.session_sqlite import SqliteSessions
from otel_context.preparation.sessions import MemorySessions, Turn, session_thread_id


def run(n: int, session: str = "s", **metadata: str) -> ConversationThread:
    meta = {"trace_id": f"{n:032x}", "span_id": f"{n:016x}", "session_id": session, "user_id": "u",
            "latency_ms": str(n), "model": f"m{n}", **metadata}  # fmt: skip
    messages = [Message("user", f"q{n}"), Message("assistant", f"a{n}")]
    return ConversationThread(id=f"run-{n}", messages=messages, metadata=meta, trace_id=f"{n:032x}")


@pytest.fixture(params=["memory", "sqlite"])
def book(request, tmp_path):
    if request.param == "memory":
        return MemorySessions(max_turns=3)
    return SqliteSessions(tmp_path / "sessions.db", max_turns=3)


def test_turns_are_placed_one_after_another_with_fixed_metadata(book):
    turns = [Turn.of("s", run(n, latency_ms=str(n))) for n in range(3)]
    placed = book.place_all(turns)
    assert [p.offset for p in placed] == [0, 2, 4]
    assert {p.thread_id for p in placed} == {session_thread_id("s", scope=book.scope)}
    assert all(p.metadata == {"session_id": "s", "user_id": "u"} for p in placed)
    assert book.latest_answer("s") == (placed[0].thread_id, 5)


def test_a_turn_seen_again_is_placed_where_it_was(book):
    first = book.place_all([Turn.of("s", run(1)), Turn.of("s", run(2))])
    again = book.place_all([Turn.of("s", run(1))])
    assert again[0].repeat and (again[0].thread_id, again[0].offset) == (first[0].thread_id, first[0].offset)
    assert book.place_all([Turn.of("s", run(3))])[0].offset == 4  # the repeat appended nothing


def test_a_full_part_continues_in_the_next_with_its_own_fixed_metadata(book):
    placed = book.place_all([Turn.of("s", run(n, user_id=f"u{n}")) for n in range(4)])
    assert placed[3].thread_id == session_thread_id("s", 2, book.scope) != placed[0].thread_id
    assert placed[3].offset == 0
    assert placed[3].metadata == {"session_id": "s", "user_id": "u3", "session_part": "2"}
    assert placed[1].metadata == placed[0].metadata == {"session_id": "s", "user_id": "u0"}


def test_a_session_append_carries_only_its_run_and_its_facts_on_the_last_message():
    thread = run(7)
    (placement,) = MemorySessions().place_all([Turn.of("s", thread)])
    sent = session_append(thread, placement)
    assert sent.id == placement.thread_id and sent.metadata == {"session_id": "s", "user_id": "u"}
    assert [m.text for m in sent.messages] == ["q7", "a7"]
    assert sent.messages[0].metadata == {"trace_id": f"{7:032x}", "span_id": f"{7:016x}"}
    assert sent.messages[1].metadata["latency_ms"] == "7" and sent.messages[1].metadata["model"] == "m7"
    assert sent.segment == f"{7:032x}/{7:016x}"


def test_a_segment_is_found_by_its_key_or_by_its_first_message():
    sent = standalone(run(3))
    wire = [m.to_wire() for m in sent.messages]
    assert segment_stored(wire, wire, sent.segment)
    assert not segment_stored([m.to_wire() for m in standalone(run(4)).messages], wire, sent.segment)
    bare = [{k: v for k, v in m.items() if k != "metadata"} for m in wire]  # an API that drops message metadata
    assert segment_stored(bare, wire, sent.segment)
    assert not segment_stored([], wire, sent.segment)


def test_two_books_on_one_file_place_turns_of_one_session_without_overlap(tmp_path):
    one, two = SqliteSessions(tmp_path / "s.db"), SqliteSessions(tmp_path / "s.db")
    offsets = [(one if n % 2 else two).place_all([Turn.of("s", run(n))])[0].offset for n in range(6)]
    assert offsets == [0, 2, 4, 6, 8, 10]
