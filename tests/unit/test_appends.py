"""What one POST appends (`preparation/appends.py`), and where a recent run's answer is for a later rating
(`preparation/feedback.py`): the two interfaces the pipeline calls between redaction and delivery."""

from __future__ import annotations

from otel_context.conversion.evaluations import Evaluation, parse_rules
from otel_context.model import ConversationThread, Message
from otel_context.preparation.appends import Appends
from otel_context.preparation.feedback import RecentAnswers
from otel_context.preparation.sessions import MemorySessions, SessionStoreUnavailable, session_thread_id


def run(n: int, session: str | None = None, **metadata: str) -> ConversationThread:
    meta = {"trace_id": f"{n:032x}", "span_id": f"{n:016x}", **metadata}
    if session is not None:
        meta["session_id"] = session
    messages = [Message("user", f"q{n}"), Message("assistant", f"a{n}"), Message("system", "end", type="event")]
    return ConversationThread(id=f"run-{n}", messages=messages, metadata=meta, trace_id=f"{n:032x}")


class Failing(MemorySessions):
    """A shared store that is down until `up` is set."""

    up = False

    def place_all(self, turns):
        if not self.up:
            raise SessionStoreUnavailable("down")
        return super().place_all(turns)


def test_a_standalone_run_is_its_own_thread_and_a_turn_is_appended_to_its_session():
    appends = Appends(MemorySessions(), max_waiting=10)
    built = appends.build([run(1), run(2, "s"), run(3, "s")])
    alone, first, second = built.appends
    assert (alone.sent.id, alone.session, alone.answer) == ("run-1", None, 1)
    assert first.sent.id == second.sent.id == session_thread_id("s", scope=appends._sessions.scope)
    assert (first.answer, second.answer) == (1, 3 + 1)  # the second turn's answer, after the first's 3 messages
    assert built.repeated == built.dropped == 0
    again = appends.build([run(3, "s")])  # placed before: a second copy, and no spool to recognise it
    assert (again.repeated, again.appends) == (1, [])  # not appended twice


def test_a_repeated_turn_goes_to_the_spool_that_recognises_it():
    appends = Appends(MemorySessions(), max_waiting=10, repeats_recognised=True)
    (first,) = appends.build([run(3, "s")]).appends
    again = appends.build([run(3, "s")])  # a replay after a crash: it may never have been sent
    (second,) = again.appends
    assert again.repeated == 1 and (second.sent.id, second.sent.segment) == (first.sent.id, first.sent.segment)


def test_turns_the_store_cannot_place_wait_bounded_and_go_first_when_it_is_back():
    store = Failing()
    appends = Appends(store, max_waiting=2)
    built = appends.build([run(1, "s"), run(2), run(3, "s"), run(4, "s")])
    assert [a.run.trace_id for a in built.appends] == [f"{2:032x}"]  # standalone runs never wait
    assert built.dropped == 1 and appends.waiting  # the oldest of three went
    assert appends.holds(f"{3:032x}") and not appends.holds(f"{1:032x}")
    store.up = True
    built = appends.build([run(5, "s")])
    assert [a.run.trace_id[-1] for a in built.appends] == ["3", "4", "5"] and not appends.waiting


def test_without_a_session_store_every_run_is_standalone():
    built = Appends(None, max_waiting=10).build([run(1, "s")])
    assert [(a.sent.id, a.session) for a in built.appends] == [("run-1", None)]


def test_recent_answers_find_a_run_by_trace_by_root_span_and_by_thread_id():
    recent = RecentAnswers()
    (alone,) = Appends(None, max_waiting=1).build([run(7)]).appends
    recent.remember(alone)
    assert recent.find(f"{7:032x}") == recent.find("run-7") == ("run-7", 1)
    rules = parse_rules("score>=0.5")
    found, rating = recent.judge(f"{7:032x}", f"{7:016x}", Evaluation("score", score=0.1), rules)
    assert found == ("run-7", 1) and rating is not None
    assert recent.judge(f"{8:032x}", None, Evaluation("score", score=0.1), rules) == (None, None)


def test_an_answer_the_user_rated_is_never_rated_by_an_evaluator():
    recent = RecentAnswers()
    (alone,) = Appends(None, max_waiting=1).build([run(7)]).appends
    recent.remember(alone)
    recent.rated_by_user(("run-7", 1))
    rules = parse_rules("score>=0.5")
    assert recent.judge(f"{7:032x}", None, Evaluation("score", score=0.1), rules) == (("run-7", 1), None)


def test_recent_answers_are_bounded_oldest_first():
    recent = RecentAnswers(max_keys=3)
    built = Appends(None, max_waiting=1).build([run(1), run(2)])
    for append in built.appends:
        recent.remember(append)
    assert recent.find(f"{1:032x}") is None and recent.find("run-2") == ("run-2", 1)


def test_recent_answers_hold_at_most_their_bound_whatever_the_keys():
    """Every run adds three keys (trace, trace/root span, thread id): the bound holds for each, not just
    the first (a soak's RSS grew by one key per run when the root span's key went around it)."""
    recent = RecentAnswers(max_keys=30)
    for append in Appends(None, max_waiting=1).build([run(n) for n in range(1, 101)]).appends:
        recent.remember(append)
    assert len(recent) == 30
    assert recent.find(f"{100:032x}") == recent.find("run-100") == ("run-100", 1)


def test_a_marked_message_keeps_every_field_and_leaves_the_original_alone():
    """`Message.with_metadata` builds the copy field by field (faster than `dataclasses.replace`): a field
    added to `Message` and not copied there would vanish from every upload; this compares with `replace`."""
    from dataclasses import fields, replace

    original = Message(
        "assistant", "a", type="tool", timestamp_ns=5, name="n", input={"q": 1}, observation="o", metadata={"k": "v"}
    )
    original.rating = 1
    marked = original.with_metadata({"trace_id": "t"})
    assert marked == replace(original, metadata={"k": "v", "trace_id": "t"})
    assert all(getattr(marked, f.name) is not None for f in fields(Message))  # every field was set above
    assert original.metadata == {"k": "v"}
