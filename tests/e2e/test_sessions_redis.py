"""Sessions shared through Redis: two processes (or replicas) adding turns of one session at once make one
thread with every turn in order; Redis down means one clear line and turns kept per process, never lost."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from otel_context.model import Message
from otel_context.preparation.session_redis import RedisSessions
from otel_context.preparation.sessions import SessionStoreUnavailable, Turn, session_thread_id

from ..support.redis import RedisServer
from .test_sessions_across_processes import turns_taken_at_once


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


def turn(label: str, start_ns: int) -> Turn:
    return Turn(label, start_ns, [Message("user", label).to_wire()], {"session_id": "s"})


def test_two_live_processes_taking_turns_at_once_make_one_thread_in_order(local_api, client, tmp_path, redis_server):
    thread = turns_taken_at_once(local_api, client, tmp_path, "s-redis", redis_server.url)
    assert thread.id == session_thread_id("s-redis")  # the same id every process computes


def test_adds_at_the_same_moment_from_many_books_all_land_each_raising_the_version(redis_server):
    books = [RedisSessions(redis_server.url, max_turns=500) for _ in range(4)]
    start = threading.Barrier(8)

    def add(index: int) -> None:
        start.wait()
        for n in range(25):
            books[index % 4].add("s", turn(f"w{index}-{n}", index * 1000 + n))

    workers = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    version, thread = books[0].current(session_thread_id("s"))
    assert version == 200 and thread.metadata["turns"] == "200"
    starts = [m.text for m in thread.messages]
    assert starts == [f"w{i}-{n}" for i in range(8) for n in range(25)]  # in start order
    for book in books:
        book.close()


def test_the_thread_ids_redis_computes_are_those_every_process_computes(redis_server):
    book = RedisSessions(redis_server.url, max_turns=1)
    for session in ("s", "sessión-ü/ä 🙂", "a\nb"):
        for n in (1, 2):
            thread = book.fold(session, turn(f"{session}{n}", n))
            assert thread.id == session_thread_id(session, n)
            version, current = book.current(thread.id)  # found through the id the script mapped
            assert (version, current.id) == (1, thread.id)


def test_the_versions_of_a_batch_asked_at_once_are_the_ones_asked_one_by_one(redis_server):
    book, other = RedisSessions(redis_server.url), RedisSessions(redis_server.url)
    ids = [book.fold(f"s{n}", turn(f"t{n}", n)).id for n in range(5)]
    for n in range(3):
        other.add("s2", turn(f"more-{n}", 10 + n))  # another replica moves one session on
    versions = book.versions([*ids, "not-a-session-thread"])
    assert versions == {thread_id: book.version(thread_id) for thread_id in ids}
    assert versions[ids[2]] == 4 and versions[ids[0]] == 1
    redis_server.stop()
    with pytest.raises(SessionStoreUnavailable):
        book.versions(ids)
    book.close()
    other.close()


def test_a_full_part_continues_in_the_next_and_an_expired_session_never_reuses_its_part(redis_server):
    book = RedisSessions(redis_server.url, max_turns=2, ttl_s=0.3)
    assert [book.add("s", turn(f"t{n}", n))[0] for n in range(3)] == [1, 1, 2]
    assert book.add("s", turn("t0", 0))[0] == 1  # a repeated turn stays in its part
    time.sleep(0.5)  # the turns expire; the session's part counter does not
    part, turns = book.add("s", turn("t9", 9))
    assert (part, [t.turn_id for t in turns]) == (3, ["t9"])


def test_redis_down_one_clear_line_turns_kept_per_process_then_shared_again(redis_server, caplog):
    caplog.set_level(logging.INFO, logger="otel_context")
    book = RedisSessions(redis_server.url)
    shared = book.fold("s", turn("t1", 1))
    assert shared.id == session_thread_id("s")
    redis_server.stop()
    during = [book.fold("s", turn(f"t{n}", n)) for n in (2, 3)]
    assert {t.id for t in during} == {session_thread_id("s", scope=book._fallback.scope)} != {shared.id}
    assert book.current(during[0].id) is None  # a per-process thread goes out as it is
    with pytest.raises(SessionStoreUnavailable):
        book.current(shared.id)  # a shared one waits for the book: never a stale overwrite
    lines = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(lines) == 1 and redis_server.url in lines[0], lines
    redis_server.start()
    time.sleep(1.1)  # the book tries Redis again once a second
    after = book.fold("s", turn("t4", 4))
    assert after.id == shared.id and [m.text for m in after.messages] == ["t1", "t4"]
    assert any("reachable again" in r.getMessage() for r in caplog.records)
