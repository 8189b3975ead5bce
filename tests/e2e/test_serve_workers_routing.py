"""Trace routing between two workers of `serve --workers 2`, in one process on one event loop: the
owner's answer "taken" is lost after it took a part (as when it dies right after its write-ahead log
commits), so the receiving worker takes the part too; the trace is still stored once in Context."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from pathlib import Path

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from otel_context.config import resolve_receiver_settings, resolve_settings
from otel_context.pipeline import Pipeline
from otel_context.receiver import routing
from otel_context.receiver.durable import DurableIntake
from otel_context.receiver.intake import OtlpIntake
from otel_context.receiver.routing import TraceRouter
from otel_context.receiver.wal import WriteAheadLog

from ..support.threads import TOKEN
from ..support.wal import logged
from .test_sidecar_durability import company_chain, make_requests, one_trace_id, product, stored

TRACES = 40


class Worker:
    """One worker's intake (pipeline, write-ahead log when `spool`, router) as `serve --workers` builds it."""

    def __init__(self, index: int, sockets: str, local_api, spool: Path | None) -> None:
        delivery = resolve_settings(endpoint=local_api.url, token=TOKEN, spool_dir=str(spool) if spool else None)
        self.pipeline = Pipeline(delivery, settle_s=0.1, push_back=True, session_db=":memory:")
        self.durable = DurableIntake(self.pipeline, WriteAheadLog(spool)) if spool else None
        self.router = TraceRouter(index, 2, sockets)
        self.intake = OtlpIntake(self.pipeline, resolve_receiver_settings(port=0), self.durable, self.router)

    def shutdown(self) -> None:
        self.intake.close()
        if self.durable is not None:
            self.durable.shutdown(20)
        else:
            self.pipeline.shutdown(20)


def answer_lost(take):
    """The owner takes the part, then its connection breaks before its answer goes out."""

    async def taken_then_lost(body: bytes) -> bool:
        assert await take(body)
        raise ConnectionResetError("the answer is lost")

    return taken_then_lost


def answer_late(take, delay_s: float):
    """The owner takes the part, then answers after the sender stopped waiting."""

    async def taken_then_slow(body: bytes) -> bool:
        assert await take(body)
        await asyncio.sleep(delay_s)
        return True

    return taken_then_slow


def run_two_workers(
    spans,
    local_api,
    tmp_path: Path,
    *,
    spool: bool,
    lose_answers: bool,
    late_s: float = 0.0,
    answered: list | None = None,
) -> tuple[Worker, Worker]:
    """Worker 1 receives one request of `TRACES` traces (copies of `spans`); worker 2 owns about half of them.

    Without a spool worker 1 answers before worker 2 has its part: the routers close once worker 2 took it
    (a worker that stops first takes the parts it has not passed on itself). `answered`: gets the seconds
    worker 1 took to answer."""
    body = b"".join(body for body, _ in make_requests(encode_spans(spans), TRACES))

    async def scenario() -> tuple[Worker, Worker]:
        with tempfile.TemporaryDirectory(prefix="otel-context-workers-") as sockets:
            one, two = (Worker(i, sockets, local_api, tmp_path / "spool" if spool else None) for i in (1, 2))
            await one.router.start(one.intake.take)
            take = answer_lost(two.intake.take) if lose_answers else two.intake.take
            await two.router.start(answer_late(take, late_s) if late_s else take)
            started = time.monotonic()
            accepted = await one.intake.export(body, json=False)
            if answered is not None:
                answered.append(time.monotonic() - started)
            assert not accepted.response.HasField("partial_success")
            deadline = time.monotonic() + 10
            while not spool and not two.pipeline.counters.get("spans_received") and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await one.router.close()
            await two.router.close()
        return one, two

    return asyncio.run(scenario())


def owned_by_two() -> set[int]:
    router = TraceRouter(1, 2, "/nonexistent")
    return {n for n in range(TRACES) if router.owner(one_trace_id(n)) == 2}


def assert_each_trace_stored_once(local_api) -> None:
    by_trace = stored(local_api)
    assert set(by_trace) == set(range(TRACES)), f"missing {set(range(TRACES)) - set(by_trace)}"
    for number, threads in by_trace.items():
        assert len(threads) == 1, f"trace {number} stored as {len(threads)} threads"
        assert [(m.get("role"), m.get("message")) for m in threads[0]["messages"]] == [
            ("user", product(number)),
            ("assistant", "Rainbow Threads"),
        ], f"trace {number} stored with its messages more than once"


def test_a_part_taken_by_its_owner_whose_answer_was_lost_is_kept_here_too_and_stored_once(
    capture, local_api, tmp_path, caplog
):
    theirs = owned_by_two()
    assert 0 < len(theirs) < TRACES
    with caplog.at_level(logging.WARNING, logger="otel_context.receiver.intake"):
        one, two = run_two_workers(capture(company_chain), local_api, tmp_path, spool=True, lose_answers=True)
    assert "worker 2 did not take spans of its traces; taken here" in caplog.text
    # both hold worker 2's traces, each in its own write-ahead log (worker 1's by its fallback)
    assert {trace for pins in logged_now(one) for trace in pins} == {one_trace_id(n) for n in range(TRACES)}
    assert {trace for pins in logged_now(two) for trace in pins} == {one_trace_id(n) for n in theirs}
    two.shutdown()  # worker 2 delivers its traces first
    one.shutdown()  # worker 1 converts them too; the shared spool recognises them as delivered
    assert one.pipeline.counters.get("threads_converted") == TRACES
    assert two.pipeline.counters.get("threads_converted") == len(theirs)
    assert_each_trace_stored_once(local_api)
    assert logged(tmp_path / "spool") == []  # every record released: every trace finished


def logged_now(worker: Worker) -> list[set[int]]:
    """The traces pinned by the records of `worker`'s own write-ahead log (the other worker is alive)."""
    assert worker.durable is not None
    return [pinned for _, _, pinned in worker.durable.wal.records()]


def test_each_worker_takes_only_its_own_traces_and_they_are_stored_once(capture, local_api, tmp_path):
    theirs = owned_by_two()
    one, two = run_two_workers(capture(company_chain), local_api, tmp_path, spool=True, lose_answers=False)
    assert {trace for pins in logged_now(two) for trace in pins} == {one_trace_id(n) for n in theirs}
    assert {trace for pins in logged_now(one) for trace in pins} == {
        one_trace_id(n) for n in range(TRACES) if n not in theirs
    }
    one.shutdown()
    two.shutdown()
    assert two.pipeline.counters.get("threads_converted") == len(theirs)
    assert one.pipeline.counters.get("threads_converted") == TRACES - len(theirs)
    assert_each_trace_stored_once(local_api)


def test_without_a_spool_the_owner_takes_its_traces_in_memory(capture, local_api, tmp_path):
    theirs = owned_by_two()
    answered: list[float] = []
    one, two = run_two_workers(
        capture(company_chain), local_api, tmp_path, spool=False, lose_answers=False, late_s=1.0, answered=answered
    )
    assert answered[0] < 0.5  # acknowledged once in memory here: not after the owner's late answer
    assert two.pipeline.counters.get("spans_received") > 0
    one.shutdown()
    two.shutdown()
    assert two.pipeline.counters.get("threads_converted") == len(theirs)
    assert one.pipeline.counters.get("threads_converted") == TRACES - len(theirs)
    assert_each_trace_stored_once(local_api)


def test_without_a_spool_a_part_its_owner_took_but_answered_late_is_not_taken_twice(
    capture, local_api, tmp_path, monkeypatch
):
    """Nothing would recognise a second copy in memory: the owner, alive and holding the part, keeps it."""
    monkeypatch.setattr(routing, "ANSWER_TIMEOUT_S", 0.2)
    theirs = owned_by_two()
    one, two = run_two_workers(capture(company_chain), local_api, tmp_path, spool=False, lose_answers=False, late_s=1.0)
    one.shutdown()
    two.shutdown()
    assert two.pipeline.counters.get("threads_converted") == len(theirs)
    assert one.pipeline.counters.get("threads_converted") == TRACES - len(theirs)  # not also worker 2's
    assert_each_trace_stored_once(local_api)
