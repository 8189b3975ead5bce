"""The sidecar with a spool and a Redis session book that refuses writes for a while (`OOM command not allowed`,
as with `maxmemory` and `noeviction`): nothing answered 200 is lost or stored twice, what cannot be taken
is answered 503 with `Retry-After`, and every turn lands once in its session's thread."""

from __future__ import annotations

import time
from collections import Counter

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_context.preparation.sessions import session_thread_id

from ..support.redis import RedisServer
from ..support.waiting import wait_for
from .test_sidecar_durability import Sidecar, company_chain, one_trace, product

SESSIONS = 4
SESSION_KEY = "traceloop.association.properties.session_id"


def session_request(template: ExportTraceServiceRequest, number: int) -> bytes:
    """One trace of session `s<number % SESSIONS>`, its question naming `number`."""
    trace = one_trace(template, number)
    for resource in trace.resource_spans:
        for scope in resource.scope_spans:
            for span in scope.spans:
                if not span.parent_span_id:
                    attribute = span.attributes.add()
                    attribute.key = SESSION_KEY
                    attribute.value.string_value = f"s{number % SESSIONS}"
    return trace.SerializeToString()


def test_redis_refusing_writes_loses_nothing_acknowledged_and_stores_nothing_twice(capture, local_api, tmp_path):
    template = encode_spans(capture(company_chain))
    redis_server = RedisServer(tmp_path / "redis")
    admin = redis_server.client()
    sidecar = Sidecar(tmp_path, local_api.url, settle_ms=200, OTEL_EXPORTER_CONTEXT_SESSION_DB=redis_server.url)
    acknowledged: list[int] = []
    pushed_back: list[int] = []
    try:

        def send(number: int) -> None:
            status, retry_after = sidecar.send(session_request(template, number))
            if status == 200:
                acknowledged.append(number)
            else:
                assert status == 503 and retry_after, (status, retry_after)
                pushed_back.append(number)

        for number in range(20):  # Redis healthy
            send(number)
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)  # every write now answers OOM command not allowed
        for number in range(20, 80):
            send(number)
            time.sleep(0.02)  # past the settle time: turns reach the book while it refuses
        assert pushed_back, "nothing was pushed back while the session book refused writes"
        waiting = sidecar.counters()
        assert waiting["requests_pushed_back"] >= len(pushed_back)
        admin.config_set("maxmemory", 0)
        for number in pushed_back:  # what a Collector does with a 503: send it again later
            assert wait_for(lambda n=number: sidecar.send(session_request(template, n))[0] == 200, timeout=30)
            acknowledged.append(number)
        for number in range(80, 100):
            send(number)
        numbers = set(acknowledged)
        assert numbers == set(range(100))

        def questions() -> Counter[str]:
            threads, _ = local_api.store.list(per_page=1000)
            return Counter(m["message"] for t in threads for m in t["messages"] if m["role"] == "user")

        expected = {product(n) for n in numbers}  # a chain's single-key input is its value
        assert wait_for(lambda: expected <= set(questions()), timeout=60), len(expected - set(questions()))
        counters = sidecar.counters()
        assert counters["threads_dropped"] == 0 and counters["threads_unconfirmed"] == 0
        log = sidecar.stop()
    finally:
        if sidecar.proc.poll() is None:
            sidecar.proc.kill()
        redis_server.stop()
    assert set(questions().values()) == {1}, "a turn was stored twice"
    threads, _ = local_api.store.list(per_page=1000)
    assert {t["id"] for t in threads} == {session_thread_id(f"s{s}") for s in range(SESSIONS)}  # none elsewhere
    assert local_api.store.metadata_changes() == {}  # every POST of a session thread carried the same metadata
    assert "OutOfMemoryError" in log and "answers again" in log and "Traceback" not in log, log[-3000:]
