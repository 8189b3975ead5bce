"""Sessions shared through Redis: two processes (or replicas) appending turns of one session at once make one
thread with every turn once; in process, Redis down means one clear line and turns kept per process; in the
sidecar (strict), any Redis error makes the turn wait, never placed twice or lost."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from otel_context.preparation.session_redis import RedisSessions
from otel_context.preparation.sessions import SessionStoreUnavailable, Turn, session_thread_id

from ..support.redis import RedisServer
from .test_sessions_across_processes import turns_taken_at_once


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


def turn(label: str, session: str = "s", messages: int = 2) -> Turn:
    return Turn(session, label, {"session_id": session}, messages, messages - 1)


def test_two_live_processes_taking_turns_at_once_make_one_thread_in_order(local_api, client, tmp_path, redis_server):
    thread = turns_taken_at_once(local_api, client, tmp_path, "s-redis", redis_server.url)
    assert thread.id == session_thread_id("s-redis")  # the same id every process computes


def test_places_at_the_same_moment_from_many_books_get_distinct_offsets(redis_server):
    books = [RedisSessions(redis_server.url, max_turns=500) for _ in range(4)]
    start = threading.Barrier(8)
    placed: list[int] = []

    def place(index: int) -> None:
        start.wait()
        for n in range(25):
            (where,) = books[index % 4].place_all([turn(f"w{index}-{n}")])
            placed.append(where.offset)

    workers = [threading.Thread(target=place, args=(i,)) for i in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(placed) == list(range(0, 400, 2))  # 200 turns of 2 messages, none overlapping
    assert books[0].latest_answer("s") == (session_thread_id("s"), 399)
    for book in books:
        book.close()


def test_the_thread_ids_are_those_every_process_computes(redis_server):
    book = RedisSessions(redis_server.url, max_turns=1)
    for session in ("s", "sessión-ü/ä 🙂", "a\nb"):
        placed = book.place_all([turn("one", session), turn("two", session)])
        assert [p.thread_id for p in placed] == [session_thread_id(session, 1), session_thread_id(session, 2)]
        assert placed[1].metadata == {"session_id": session, "session_part": "2"}


def test_a_full_part_continues_in_the_next_and_an_expired_session_never_reuses_its_part(redis_server):
    book = RedisSessions(redis_server.url, max_turns=2, ttl_s=0.3)
    parts = [p.thread_id for p in book.place_all([turn(f"t{n}") for n in range(3)])]
    assert parts == [session_thread_id("s", 1)] * 2 + [session_thread_id("s", 2)]
    (again,) = book.place_all([turn("t0")])
    assert again.repeat and (again.thread_id, again.offset) == (session_thread_id("s", 1), 0)
    time.sleep(0.5)  # the turns expire; the session's part counter does not
    (later,) = book.place_all([turn("t9")])
    assert (later.thread_id, later.offset, later.repeat) == (session_thread_id("s", 3), 0, False)


def test_redis_down_in_process_one_clear_line_turns_kept_per_process_then_shared_again(redis_server, caplog):
    caplog.set_level(logging.INFO, logger="otel_context")
    book = RedisSessions(redis_server.url)
    (shared,) = book.place_all([turn("t1")])
    assert shared.thread_id == session_thread_id("s")
    redis_server.stop()
    during = book.place_all([turn("t2"), turn("t3")])
    assert {p.thread_id for p in during} == {session_thread_id("s", scope=book._local.scope)} != {shared.thread_id}
    lines = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(lines) == 1 and redis_server.url in lines[0], lines
    redis_server.start()
    time.sleep(1.1)  # the book tries Redis again once a second
    (after,) = book.place_all([turn("t4")])
    assert (after.thread_id, after.offset) == (shared.thread_id, 2)
    assert any("answers again" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("fault", ["oom", "readonly", "down"])
def test_a_strict_book_raises_on_any_redis_error_and_places_nothing(redis_server, fault):
    import redis

    book = RedisSessions(redis_server.url, fallback=False)
    admin = redis.Redis.from_url(redis_server.url)
    book.place_all([turn("t1")])
    if fault == "oom":  # writes refused: `OOM command not allowed when used memory > 'maxmemory'`
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
    elif fault == "readonly":  # a replica after a failover
        admin.replicaof("127.0.0.1", 1)
    else:
        redis_server.stop()
    with pytest.raises(SessionStoreUnavailable):
        book.place_all([turn("t2")])
    if fault == "oom":
        admin.config_set("maxmemory", 0)
    elif fault == "readonly":
        admin.replicaof("NO", "ONE")
    else:
        redis_server.start()
    time.sleep(1.1)
    (placed,) = book.place_all([turn("t2")])
    assert (placed.thread_id, placed.offset, placed.repeat) == (session_thread_id("s"), 2, False)
