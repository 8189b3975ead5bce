"""Replicas behind the real Collector: `load_balancing` (routing_key traceID, static resolver) in front of
three `otel-context serve` replicas sharing one Redis session book, as collector-config/gateway.yaml ships.

A LangChain app runs 200 conversations across 20 sessions, two turns of every session at the same moment
in each round, so the turns of one session reach different replicas together. Every session must end
as one Context thread holding all its turns in order, none twice; also when a replica is killed with
SIGKILL and restarted mid-run, and when Redis restarts mid-run.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_context.preparation.sessions import session_thread_id

from ..support.otelcol import BUILD_TIMEOUT_S, CONFIG_DIR, otelcol_binary
from ..support.redis import RedisServer
from ..support.sidecar import SERVE_TOKEN, Process, clean_env, serve_counters
from ..support.threads import TOKEN, read_threads
from ..support.tracing import Tracing
from ..support.waiting import wait_for
from .test_sidecar_otelcol import healthy

pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S)  # the first use may build the Collector
EXPORTER = "load_balancing/otel_context"
SESSIONS, ROUNDS, AT_ONCE = 20, 5, 2  # 20 sessions x 5 rounds x 2 turns at once = 200 conversations


def free_ports(count: int) -> list[int]:
    """Distinct free ports: every socket stays bound until all are chosen."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class Replica:
    """One `otel-context serve` (HTTP and gRPC), its spool and state kept across a restart."""

    def __init__(
        self, index: int, ports: list[int], local_api_url: str, redis_url: str, root: Path, settle_ms: int
    ) -> None:
        self.index, (self.http_port, self.grpc_port) = index, ports
        self.env = clean_env(
            OTEL_EXPORTER_CONTEXT_ENDPOINT=local_api_url,
            OTEL_EXPORTER_CONTEXT_TOKEN=TOKEN,
            OTEL_CONTEXT_SERVE_TOKEN=SERVE_TOKEN,
            OTEL_CONTEXT_SERVE_SETTLE=str(settle_ms),
            OTEL_CONTEXT_SERVE_STATE_DIR=str(root / f"state-{index}"),
            OTEL_EXPORTER_CONTEXT_SPOOL_DIR=str(root / f"spool-{index}"),
            OTEL_EXPORTER_CONTEXT_SESSION_DB=redis_url,
            OTEL_EXPORTER_CONTEXT_RETRY_MAX_BACKOFF="1000",
        )
        self.logs: list[str] = []
        self.process: Process | None = None

    def start(self) -> None:
        args = ["serve", "--port", str(self.http_port), "--grpc-port", str(self.grpc_port)]
        self.process = Process([sys.executable, "-m", "otel_context.cli", *args], self.env, ready=None)

    def wait_ready(self) -> None:
        assert self.process is not None
        ok = wait_for(lambda: "otel-context serve:" in self.process.text() or self.process.proc.poll() is not None, 30)
        assert ok and self.process.proc.poll() is None, self.process.text()[-3000:]

    def kill(self) -> None:
        assert self.process is not None
        self.process.proc.kill()
        self.process.proc.wait()
        self.logs.append(self.process.stop())

    def stop(self) -> str:
        if self.process is not None and self.process.log is None:
            self.logs.append(self.process.stop())
        return "\n".join(self.logs)


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def gateway(local_api, redis_server, tmp_path, request):
    """Three replicas sharing Redis, behind the shipped gateway.yaml (only addresses moved)."""
    binary = otelcol_binary()
    settle_ms = getattr(request, "param", 300)
    ports = free_ports(8)
    replicas = [
        Replica(i, ports[2 * i : 2 * i + 2], local_api.url, redis_server.url, tmp_path, settle_ms) for i in range(3)
    ]
    for replica in replicas:
        replica.start()
    for replica in replicas:
        replica.wait_ready()
    grpc_port, health_port = ports[6:]
    overlay = {
        "extensions": {"health_check": {"endpoint": f"127.0.0.1:{health_port}"}},
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{grpc_port}"}, "http": None}}},
        "exporters": {
            EXPORTER: {"resolver": {"static": {"hostnames": [f"127.0.0.1:{r.grpc_port}" for r in replicas]}}}
        },
        "service": {"telemetry": {"metrics": {"level": "none"}}},
    }
    overlay_file = tmp_path / "overlay.yaml"
    overlay_file.write_text(yaml.safe_dump(overlay))
    collector = Process(
        [str(binary), "--config", str(CONFIG_DIR / "gateway.yaml"), "--config", str(overlay_file)],
        clean_env(OTEL_CONTEXT_SERVE_TOKEN=SERVE_TOKEN),
    )
    if not wait_for(lambda: healthy(health_port) or collector.proc.poll() is not None, timeout=30) or (
        collector.proc.poll() is not None
    ):
        for replica in replicas:
            replica.stop()
        pytest.fail("the Collector did not start:\n" + collector.stop()[-4000:])
    info = {"grpc": grpc_port, "replicas": replicas, "collector": collector, "redis": redis_server}
    yield info
    info["collector_log"] = collector.stop()
    for replica in replicas:
        replica.stop()


def run_app(
    tracing: Tracing, grpc_port: int, between_rounds: Callable[[int], None] = lambda r: None, pause_s: float = 0.0
) -> None:
    """200 conversations: in each round, two turns of each of the 20 sessions at the same moment."""
    processor = BatchSpanProcessor(
        OTLPSpanExporter(endpoint=f"127.0.0.1:{grpc_port}", insecure=True), schedule_delay_millis=50
    )
    tracing.router.target = processor
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])

    def turn(session: int, label: str) -> None:
        chain = prompt | FakeListChatModel(responses=[f"answer s{session} {label}"]) | StrOutputParser()
        chain.invoke({"question": f"question s{session} {label}"}, config={"metadata": {"session_id": f"s{session}"}})

    try:
        with ThreadPoolExecutor(SESSIONS * AT_ONCE) as pool:
            for r in range(ROUNDS):
                start = threading.Barrier(SESSIONS * AT_ONCE)

                def together(session: int, label: str, start=start) -> None:
                    start.wait()
                    turn(session, label)

                jobs = [pool.submit(together, s, f"r{r}t{t}") for s in range(SESSIONS) for t in range(AT_ONCE)]
                for job in jobs:
                    job.result()
                processor.force_flush()
                between_rounds(r)
                time.sleep(pause_s)
    finally:
        tracing.router.target = None
        processor.shutdown()


def labels_of(texts: list[str], session: int) -> list[str]:
    return [t.removeprefix(f"question s{session} ") for t in texts if t.startswith("question ")]


def check_in_order(texts: list[str], session: int) -> None:
    """Rounds in order, each question followed by its own answer."""
    labels = labels_of(texts, session)
    rounds = [int(label[1 : label.index("t")]) for label in labels]
    assert rounds == sorted(rounds), labels
    for i, text in enumerate(texts):
        if text.startswith("question "):
            assert texts[i + 1] == text.replace("question", "answer", 1), texts


def every_label() -> list[str]:
    return sorted(f"r{r}t{t}" for r in range(ROUNDS) for t in range(AT_ONCE))


def one_thread_per_session(client) -> bool:
    threads = read_threads(client)
    return len(threads) == SESSIONS and all(len(t.messages) >= 2 * ROUNDS * AT_ONCE for t in threads)


def check_one_thread_per_session(client, *, ordered: bool = True) -> None:
    threads = read_threads(client)
    assert len(threads) == SESSIONS, sorted((t.metadata["session_id"], len(t.messages)) for t in threads)
    for thread in threads:
        session = int(thread.metadata["session_id"][1:])
        assert thread.id == session_thread_id(f"s{session}")
        texts = [m.message for m in thread.messages]
        assert sorted(labels_of(texts, session)) == every_label()  # every turn, none twice
        if ordered:
            check_in_order(texts, session)
        for i, text in enumerate(texts):  # each turn whole: its answer right after its question
            if text.startswith("question "):
                assert texts[i + 1] == text.replace("question", "answer", 1), texts


def test_three_replicas_behind_the_collector_make_one_thread_per_session_with_every_turn(gateway, client, tracing):
    # Rounds a second apart, as a person's turns are: turns of one session that complete within the
    # Collector's batching and the replicas' settle time of each other may be appended in either order
    # (each replica appends in the order it converts; see preparation/sessions.py).
    run_app(tracing, gateway["grpc"], pause_s=1.0)
    wait_for(lambda: one_thread_per_session(client), timeout=60, interval=0.5)
    check_one_thread_per_session(client)
    received = [serve_counters(replica.http_port)["spans_received"] for replica in gateway["replicas"]]
    assert all(received), received  # trace id routing spread the turns of every session over the replicas
    for replica in gateway["replicas"]:
        log = replica.stop()
        assert "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize("gateway", [1500], indirect=True)  # spans wait 1.5 s for late children
def test_a_replica_killed_mid_run_and_restarted_loses_nothing_acknowledged(gateway, client, tracing):
    """Acknowledged spans a replica held when SIGKILL came must still become turns (the sidecar's WAL)."""
    victim = gateway["replicas"][1]

    def kill_and_restart(round_: int) -> None:
        if round_ == 1:
            time.sleep(0.6)  # round 1's spans reached the replicas and wait out their settle time
            victim.kill()
            time.sleep(2.0)
            victim.start()  # well within 10 s; the Collector retries what it could not deliver
            victim.wait_ready()

    run_app(tracing, gateway["grpc"], kill_and_restart, pause_s=0.3)
    wait_for(lambda: one_thread_per_session(client), timeout=20, interval=0.5)
    check_one_thread_per_session(client, ordered=False)  # replayed turns are appended when they are replayed


def test_redis_restarted_mid_run_sessions_continue_with_a_clear_line_and_nothing_lost(gateway, client, tracing):
    redis = gateway["redis"]

    def restart_redis(round_: int) -> None:
        if round_ == 1:
            time.sleep(0.6)  # round 1's turns are in Redis
            # a restart (SIGTERM: Redis answers what it applied, then exits); its append-only file has
            # every write. (Killed with SIGKILL, an add it applied whose answer was lost would also
            # go to the per-replica thread: shown twice, never lost; see the README.)
            redis.stop()
        if round_ == 3:  # round 2's turns were added while Redis was down
            redis.start()

    run_app(tracing, gateway["grpc"], restart_redis, pause_s=0.6)

    def settled() -> bool:
        threads = read_threads(client)
        return all(
            sum(
                len(labels_of([m.message for m in t.messages], s))
                for t in threads
                if t.metadata["session_id"] == f"s{s}"
            )
            == ROUNDS * AT_ONCE
            for s in range(SESSIONS)
        )

    wait_for(settled, timeout=60, interval=0.5)
    threads = read_threads(client)
    for s in range(SESSIONS):
        mine = [t for t in threads if t.metadata["session_id"] == f"s{s}"]
        labels = [label for t in mine for label in labels_of([m.message for m in t.messages], s)]
        assert sorted(labels) == every_label(), (
            s,
            [(t.id, len(t.messages)) for t in mine],
        )  # none lost, none twice
        shared = [t for t in mine if t.id == session_thread_id(f"s{s}")]
        assert len(shared) == 1  # the session's own thread went on after Redis came back
        shared_labels = labels_of([m.message for m in shared[0].messages], s)
        assert any(label.startswith(f"r{ROUNDS - 1}") for label in shared_labels), shared_labels
        assert len(mine) == 1  # the sidecar's turns waited for Redis (pushed back): none went elsewhere
        texts = [m.message for m in mine[0].messages]
        for i, text in enumerate(texts):  # turns that waited for Redis land after later ones: each stays whole
            if text.startswith("question "):
                assert texts[i + 1] == text.replace("question", "answer", 1), texts
    logs = "\n".join(replica.stop() for replica in gateway["replicas"])
    assert f"session store {redis.url} failed" in logs, logs[-3000:]
    assert "answers again" in logs
