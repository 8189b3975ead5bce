"""Items sent together: which ones a worker takes at once, and how a batch is retried and settled.

The sending itself (pipelined HTTP) is tested against a server in `tests/e2e/test_lean_upload.py`;
here the retry layer gets a scripted sender (one list of verdicts per try), which is all it sees.
"""

from __future__ import annotations

import threading
import time

from otel_context.delivery.item import ItemKind, QueueItem
from otel_context.delivery.outcome import SendOutcome, Verdict
from otel_context.delivery.queue import SendingQueue
from otel_context.delivery.retry import Backoff, RetryingSender

DELIVERED = SendOutcome(Verdict.DELIVERED, 201)
REJECTED = SendOutcome(Verdict.REJECTED, 400, reason="HTTP 400")


def busy(seconds: float | None = None) -> SendOutcome:
    return SendOutcome(Verdict.RETRY, 429, seconds, "HTTP 429")


def item(thread_id: str, kind: ItemKind = ItemKind.THREAD) -> QueueItem:
    return QueueItem(thread_id, thread_id.encode(), kind)


class Script:
    """A sender answering each try from a table: thread id -> its outcomes, one per try."""

    def __init__(self, answers: dict[str, list[SendOutcome]]) -> None:
        self.answers = answers
        self.tries: list[list[str]] = []

    def __call__(self, items: list[QueueItem]) -> list[SendOutcome]:
        self.tries.append([i.thread_id for i in items])
        return [self.answers[i.thread_id].pop(0) for i in items]


def deliver(script: Script, items: list[QueueItem], *, max_elapsed_s: float = 60.0, deadline: float = float("inf")):
    events: list[tuple[str, object]] = []
    sender = RetryingSender(script, Backoff(initial_s=0.01, max_s=0.02, jitter=0.0), max_elapsed_s)
    sender.deliver(
        items,
        wait=lambda seconds: events.append(("wait", seconds)) is not None,
        on_retry=lambda outcome: events.append(("retry", outcome.status)),
        deadline=lambda: deadline,
        settle=lambda settled: events.append(tuple((item.thread_id, outcome.verdict) for item, outcome in settled)),
    )
    return events


def test_a_batch_settles_each_item_as_soon_as_its_outcome_is_final_and_retries_the_rest_together():
    script = Script({"a": [DELIVERED], "b": [busy(), busy(), DELIVERED], "c": [REJECTED], "d": [busy(), DELIVERED]})
    events = deliver(script, [item("a"), item("b"), item("c"), item("d")])
    assert script.tries == [["a", "b", "c", "d"], ["b", "d"], ["b"]]
    assert events == [
        (("a", Verdict.DELIVERED), ("c", Verdict.REJECTED)),  # settled before anything waits: a flush need not wait
        ("retry", 429),
        ("retry", 429),
        ("wait", 0.01),
        (("d", Verdict.DELIVERED),),
        ("retry", 429),
        ("wait", 0.02),
        (("b", Verdict.DELIVERED),),
    ]


def test_the_wait_is_the_longest_retry_after_any_answer_asked_for():
    script = Script({"a": [busy(0.5), DELIVERED], "b": [busy(2.0), DELIVERED], "c": [busy(), DELIVERED]})
    events = deliver(script, [item("a"), item("b"), item("c")])
    assert [event[1] for event in events if event[0] == "wait"] == [2.0]


def test_items_still_failing_when_time_runs_out_are_settled_as_retry_and_not_counted_as_retried():
    script = Script({"a": [DELIVERED], "b": [busy(5.0)]})
    events = deliver(script, [item("a"), item("b")], max_elapsed_s=1.0)
    assert events == [(("a", Verdict.DELIVERED),), (("b", Verdict.RETRY),)]


def test_take_gives_up_to_the_limit_oldest_first_never_two_uploads_of_one_thread():
    queue = SendingQueue(100)
    queue.offer([item("a"), item("b"), item("c"), item("d")])
    assert [i.thread_id for i in queue.take(lambda: False, 3)] == ["a", "b", "c"]
    queue.offer([item("a"), item("e")])  # a's next version waits until its upload in flight is settled
    assert [i.thread_id for i in queue.take(lambda: False, 3)] == ["d", "e"]
    assert queue.take(lambda: True, 3) == []


def test_a_rating_goes_alone_and_after_its_thread():
    queue = SendingQueue(100)
    queue.offer([item("a"), item("a", ItemKind.RATING), item("b"), item("c", ItemKind.RATING), item("d")])
    first = queue.take(lambda: False, 10)
    assert [(i.thread_id, i.kind) for i in first] == [
        ("a", ItemKind.THREAD),
        ("b", ItemKind.THREAD),
        ("d", ItemKind.THREAD),
    ]
    queue.settle(first[0])
    assert [(i.thread_id, i.kind) for i in queue.take(lambda: False, 10)] == [("a", ItemKind.RATING)]
    assert [(i.thread_id, i.kind) for i in queue.take(lambda: False, 10)] == [("c", ItemKind.RATING)]


def test_a_taker_passed_over_an_item_of_a_busy_thread_is_woken_when_that_upload_ends():
    queue = SendingQueue(100)  # no timed wake-up: only the settle can wake it
    queue.offer([item("a")])
    (first,) = queue.take(lambda: False)  # "a" is in flight
    queue.offer([item("a")])  # its next version must wait for it
    got: list[list[QueueItem]] = []
    taker = threading.Thread(target=lambda: got.append(queue.take(lambda: False, 4)), daemon=True)
    taker.start()
    taker.join(0.2)
    assert taker.is_alive() and not got  # passed over "a", asleep
    queue.settle(first)
    taker.join(10)
    assert [[i.thread_id for i in batch] for batch in got] == [["a"]]


class CountingCondition(threading.Condition):
    """Counts the waits that ended (the takers wait with no timeout: each one is a wake-up)."""

    woken = 0

    def wait(self, timeout: float | None = None) -> bool:
        ended = super().wait(timeout)
        self.woken += 1
        return ended


def test_new_items_wake_one_idle_taker_per_batch_they_fill():
    queue = SendingQueue(100, per_take=4)
    queue.cond = cond = CountingCondition()
    got: list[list[str]] = []
    takers = [
        threading.Thread(target=lambda: got.append([i.thread_id for i in queue.take(lambda: False, 4)]), daemon=True)
        for _ in range(3)
    ]
    for taker in takers:
        taker.start()
    time.sleep(0.2)  # all three asleep
    queue.offer([item(f"t{n}") for n in range(6)])  # two batches' worth: two takers woken
    for taker in takers:
        taker.join(1)
    assert sorted(len(batch) for batch in got) == [2, 4]
    assert sum(taker.is_alive() for taker in takers) == 1 and cond.woken == 2  # the third slept on
    queue.offer([item("t9")])
    for taker in takers:
        taker.join(10)
    assert sorted(len(batch) for batch in got) == [1, 2, 4]


def test_the_spool_rows_of_a_settled_batch_go_in_one_transaction(tmp_path):
    from otel_context.delivery.spool import Spool

    spool = Spool(str(tmp_path / "spool"), 10 * 1024 * 1024)
    queue = SendingQueue(100, spool)
    queue.offer([item("a"), item("b"), item("c")])
    a, b, c = queue.take(lambda: False, 3)
    commits = []
    spool._db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    queue.remove_rows([a, b])
    assert spool.count() == 1 and len(commits) == 1
    queue.settle(a)
    queue.settle(b)
    assert spool.count() == 1 and len(commits) == 1  # nothing left to remove for them
    queue.settle(c)
    assert spool.count() == 0 and queue.idle()
    spool.close()
