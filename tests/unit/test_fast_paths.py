"""The sidecar's CPU shortcuts (issue 15) decide exactly as the long ways they skip.

- work limits: a plainly encoded body checked in C gets the walk's verdict, at the limits and past them;
- the session book: turns folded in one transaction give the threads and rows one transaction each gives;
- the sending queue: two versions of a thread in one batch coalesce, the older spool row removed;
- session uploads: a body built from the version the book still has goes as it is; one the book has
  moved past (another process added a turn) is rebuilt from the book before it is sent.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from otel_context.config import resolve_settings
from otel_context.delivery.item import QueueItem, encode_thread
from otel_context.delivery.outcome import SendOutcome, Verdict
from otel_context.delivery.queue import SendingQueue
from otel_context.delivery.spool import Spool
from otel_context.model import ConversationThread, Message
from otel_context.pipeline import Pipeline
from otel_context.preparation.session_sqlite import SqliteSessions
from otel_context.preparation.sessions import Turn
from otel_context.receiver.intake import encode_varint as varint
from otel_context.spans import otlp_limits
from otel_context.spans.otlp_limits import MalformedWire, RequestLimits, RequestTooLarge


def walk_verdict(body: bytes, limits: RequestLimits) -> str:
    """What the walk alone says."""
    try:
        otlp_limits._walk(
            body, 0, len(body), ExportTraceServiceRequest.DESCRIPTOR.full_name, 0, otlp_limits._Budget(limits),
            otlp_limits._schemas(),
        )  # fmt: skip
    except (RequestTooLarge, MalformedWire) as error:
        return f"{type(error).__name__}: {error}"
    return "ok"


def check_verdict(body: bytes, limits: RequestLimits) -> str:
    """What `check_protobuf` says, the shortcut tried first."""
    otlp_limits._SHORTCUT.misses = 0
    try:
        otlp_limits.check_protobuf(body, limits)
    except (RequestTooLarge, MalformedWire) as error:
        return f"{type(error).__name__}: {error}"
    return "ok"


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """Requests as an SDK encodes them: any number of every repeated field, sometimes arrays and kvlists."""
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        resource_spans = request.resource_spans.add()
        for _ in range(draw(st.integers(0, 3))):
            resource_spans.resource.attributes.add(key=draw(st.text(max_size=3)), value=AnyValue(string_value="v"))
        for _ in range(draw(st.integers(0, 2))):
            resource_spans.resource.entity_refs.add().id_keys.extend(draw(st.lists(st.text(max_size=2), max_size=3)))
        for _ in range(draw(st.integers(0, 2))):
            scope_spans = resource_spans.scope_spans.add()
            for _ in range(draw(st.integers(0, 4))):
                span = scope_spans.spans.add(name=draw(st.text(max_size=4)), trace_id=draw(st.binary(max_size=16)))
                for _ in range(draw(st.integers(0, 5))):
                    value = span.attributes.add(key=draw(st.text(max_size=3))).value
                    kind = draw(st.sampled_from(["text", "int", "array", "kvlist", "empty"]))
                    if kind == "text":
                        value.string_value = draw(st.text(max_size=6))
                    elif kind == "int":
                        value.int_value = draw(st.integers(-(2**63), 2**63 - 1))
                    elif kind == "array":
                        value.array_value.values.add(string_value="x")
                    elif kind == "kvlist":
                        value.kvlist_value.values.add(key="k")
                for _ in range(draw(st.integers(0, 2))):
                    span.events.add(name="e").attributes.add(key="x")
                for _ in range(draw(st.integers(0, 1))):
                    span.links.add().attributes.add(key="x")
    return request.SerializeToString()


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    requests(),
    st.integers(0, 30),
    st.integers(0, 80),
    st.sampled_from(["plain", "repeated", "unknown field", "cut"]),
)
def test_work_limit_shortcut_gives_the_walks_verdict(body, max_spans, max_attributes, edit):
    if edit == "repeated":
        body += body[: len(body) // 2]
    elif edit == "unknown field":
        body += b"\x98\x02\x01"
    elif edit == "cut":
        body = body[: len(body) * 2 // 3]
    for limits in (RequestLimits(max_spans=max_spans, max_attributes=max_attributes), RequestLimits()):
        assert check_verdict(body, limits) == walk_verdict(body, limits)


def field(number: int, content: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(content)) + content


def array_attribute(values: int) -> bytes:
    """A span attribute (KeyValue) holding an array of `values` empty values."""
    return field(9, field(1, b"a") + field(2, field(5, field(1, b"") * values)))


@pytest.mark.parametrize(
    ("body", "limits"),
    [
        # array elements count as attributes too: just past the limit only through them
        (field(1, field(2, field(2, field(9, b"") * 3 + array_attribute(5)))), RequestLimits(10, 8)),
        (field(1, field(2, field(2, field(9, b"") * 3 + array_attribute(5)))), RequestLimits(10, 9)),
        # more than MAX_OTHER_FIELDS unknown fields in one message, and an unknown group (wire type 3)
        (field(1, b"\xf8\x01\x00" * 300), RequestLimits()),
        (field(1, b"\xfb\x01\xfc\x01"), RequestLimits()),
    ],
    ids=["array past the limit", "array at the limit", "unknown fields repeated", "unknown group"],
)
def test_work_limit_shortcut_on_what_only_the_walk_sees(body, limits):
    assert check_verdict(body, limits) == walk_verdict(body, limits)


@pytest.mark.parametrize(
    "body",
    [
        field(1, b"") * 40,  # empty ResourceSpans: spans
        field(1, field(2, field(2, field(9, b"") * 40 + field(11, b"") * 3))),  # attributes and events of a span
        field(1, field(1, field(3, field(3, b"a") * 40))),  # an entity ref's keys
    ],
    ids=["resource spans", "span attributes", "entity ref keys"],
)
def test_work_limit_shortcut_at_and_just_past_the_limits(body):
    counts = [0, 0]  # [spans, attributes], as the shortcut counts them
    plain = otlp_limits._plain_request_class()
    assert plain is not None
    request = plain.FromString(body)
    otlp_limits._count_repeated(request, otlp_limits._PLANS[request.DESCRIPTOR.full_name], counts)
    spans, attributes = counts
    for limits in (
        RequestLimits(max_spans=spans, max_attributes=attributes),
        RequestLimits(max_spans=spans - 1, max_attributes=attributes),
        RequestLimits(max_spans=spans, max_attributes=max(0, attributes - 1)),
    ):
        assert check_verdict(body, limits) == walk_verdict(body, limits)
    assert check_verdict(body, RequestLimits(max_spans=spans, max_attributes=attributes)) == "ok"


def test_session_turns_folded_in_one_transaction_as_one_at_a_time(tmp_path: Path):
    rng = random.Random(15)
    batched = SqliteSessions(tmp_path / "batched.db", max_turns=3)
    single = SqliteSessions(tmp_path / "single.db", max_turns=3)
    for round_no in range(60):
        batch = []
        for n in range(rng.randrange(1, 6)):
            session = f"s{rng.randrange(4)}"
            message = {"role": "user", "message": f"{round_no}.{n}", "type": "message"}
            batch.append(
                (session, Turn(f"t{rng.randrange(10)}", rng.randrange(100), [message], {"session_id": session}))
            )
        together = batched.fold_all(batch)
        alone = [single.fold(session, turn) for session, turn in batch]
        assert [encode_thread(t) for t, _ in together] == [encode_thread(t) for t in alone]
        for thread, version in dict((thread.id, (thread, version)) for thread, version in together).values():
            now = batched.current(thread.id)  # the book's own reading of the part: the same thread, version
            assert now is not None and now[0] == version and encode_thread(now[1]) == encode_thread(thread)
        for session, _ in batch:  # a session's turns expire together: each turn touches them all
            touched = "SELECT COUNT(DISTINCT touched) FROM turns WHERE session = ?"
            assert batched._db.execute(touched, (session,)).fetchone() == (1,)
    query = "SELECT session, part, turn_id, start_ns, payload FROM turns ORDER BY 1, 2, 3"
    assert batched._db.execute(query).fetchall() == single._db.execute(query).fetchall()
    parts = "SELECT * FROM parts ORDER BY 1"
    assert batched._db.execute(parts).fetchall() == single._db.execute(parts).fetchall()


def test_two_versions_of_a_thread_in_one_batch_coalesce(tmp_path: Path):
    queue = SendingQueue(100, Spool(str(tmp_path / "spool"), 10 * 1024 * 1024))
    offered = queue.offer([QueueItem("t-1", b"old"), QueueItem("t-2", b"other"), QueueItem("t-1", b"new")])
    assert (offered.accepted, offered.refused) == (3, 0)
    (first,) = queue.take(lambda: False)
    assert (first.thread_id, first.body) == ("t-1", b"new")
    assert queue.spool is not None and queue.spool.count() == 2  # the older version's row is gone


def session_thread(turn: str, start_ns: int) -> ConversationThread:
    return ConversationThread(
        id=f"turn-{turn}",
        messages=[Message("user", f"question {turn}"), Message("assistant", f"answer {turn}")],
        metadata={"session_id": "s-1", "trace_id": f"trace-{turn}"},
        trace_id=f"trace-{turn}",
        start_ns=start_ns,
    )


def test_a_session_upload_is_rebuilt_only_when_the_book_moved(tmp_path: Path):
    settings = resolve_settings(endpoint="http://127.0.0.1:9", token="t", session_db=str(tmp_path / "book.db"))
    pipeline = Pipeline(settings, push_back=True)
    sent: list[bytes] = []
    pipeline._sender.send_batch = lambda items: [  # type: ignore[method-assign]
        sent.append(item.body) or SendOutcome(Verdict.DELIVERED, 201) for item in items
    ]
    try:
        (thread,), (version,) = pipeline._prepare([session_thread("1", 1)])
        assert version == 1
        book = pipeline.sessions
        assert book is not None
        current = book.current

        def not_read(thread_id: str):
            raise AssertionError("the book's thread was read although the body was current")

        book.current = not_read  # type: ignore[method-assign]
        item = QueueItem(thread.id, encode_thread(thread), book_version=version)
        assert pipeline._send_batch([item])[0].verdict is Verdict.DELIVERED
        assert sent == [encode_thread(thread)]

        other = SqliteSessions(tmp_path / "book.db")  # another process adds the next turn meanwhile
        other.fold("s-1", Turn.of(session_thread("2", 2)))
        other.close()
        book.current = current  # type: ignore[method-assign]
        item = QueueItem(thread.id, encode_thread(thread), book_version=version)
        assert pipeline._send_batch([item])[0].verdict is Verdict.DELIVERED
        messages = json.loads(sent[-1])["conversation"]["messages"]
        assert [m["message"] for m in messages] == ["question 1", "answer 1", "question 2", "answer 2"]
        assert item.book_version == 2
    finally:
        pipeline.shutdown(1)
