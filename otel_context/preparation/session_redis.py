"""The Redis session book: shared by every process of every host (sidecar replicas behind a load balancer),
one Lua script per turn (placed atomically, each turn once)."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from urllib.parse import unquote

from ..environment_variables import OTEL_EXPORTER_CONTEXT_SESSION_DB
from .sessions import INHERITED_HANDLES, MemorySessions, Placement, SessionStoreUnavailable, Turn, session_thread_id

_logger = logging.getLogger(__name__)

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_KEEP_FACTOR = 10  # a session's part number outlives its turns: a session resumed after the TTL gets a new part
_RETRY_S = 1.0  # while Redis fails, how often it is tried again (never a connect timeout per turn)

# Atomic place: a known turn where it was; else the session's part (the next when full or forgotten),
# the turn's offset, the part's counters raised. Returns {repeat, part, offset, fixed metadata}.
_PLACE = """
local S, T = KEYS[1], KEYS[2]
local turn_id, proposed = ARGV[1], ARGV[2]
local count, answer = tonumber(ARGV[3]), tonumber(ARGV[4])
local max_turns, ttl_ms, keep_ms = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local known = redis.call('HGET', T, turn_id)
local s = redis.call('HMGET', S, 'part', 'turns', 'messages', 'metadata', 'touched')
if known then
  local part, offset = string.match(known, '^(%d+) (%d+)$')
  return {1, part, offset, s[4] or proposed}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local part, turns, messages, metadata = tonumber(s[1] or 0), tonumber(s[2] or 0), tonumber(s[3] or 0), s[4]
if part == 0 or turns >= max_turns or now - tonumber(s[5] or 0) > ttl_ms then
  part, turns, messages, metadata = part + 1, 0, 0, proposed
  if part > 1 then
    local fixed = cjson.decode(proposed)
    fixed['session_part'] = tostring(part)
    metadata = cjson.encode(fixed)
  end
end
redis.call('HSET', S, 'part', part, 'turns', turns + 1, 'messages', messages + count, 'metadata', metadata,
  'touched', now)
if answer >= 0 then redis.call('HSET', S, 'answer', part .. ' ' .. (messages + answer)) end
redis.call('PEXPIRE', S, keep_ms)
redis.call('HSET', T, turn_id, part .. ' ' .. messages)
redis.call('PEXPIRE', T, ttl_ms)
return {0, part, messages, metadata}
"""


class RedisSessions:
    """Sessions in Redis, shared by every replica and worker: `OTEL_EXPORTER_CONTEXT_SESSION_DB=redis://host:port/db`.

    Each place is one Lua script, so turns of one session placed at the same moment on two hosts get
    distinct offsets. Idle sessions go by key expiry. Any Redis error (unreachable, timed out, `OOM
    command not allowed`, `READONLY` from a replica after a failover) makes the book unusable for a
    moment. With `fallback` (in process: the app never waits on it), turns then go to an in-memory book
    scoped to this process (threads of its own: nothing lost) until Redis answers again; without it
    (the sidecar), `place_all` raises `SessionStoreUnavailable`: the turn waits in the pipeline, its
    request stays in the write-ahead log, and new requests are pushed back until Redis answers.
    """

    scope = ""
    shared = True

    def __init__(
        self,
        url: str,
        max_turns: int = 200,
        ttl_s: float = 86_400.0,
        *,
        prefix: str = "otel-context:",
        fallback: bool = True,
    ) -> None:
        try:
            import redis
        except ImportError:
            from ..config import ConfigError

            raise ConfigError(
                f"{OTEL_EXPORTER_CONTEXT_SESSION_DB}={redact_url(url)} needs the Redis client: "
                "pip install 'otel-context[redis]'"
            ) from None
        self._redis_module = redis
        self.url, self.max_turns, self.ttl_s, self.prefix = url, max_turns, ttl_s, prefix
        self.fallback = fallback
        self._open()

    def _open(self) -> None:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # One immediate retry (a pooled connection Redis closed when it restarted), never a backoff.
        # Retrying a place is safe: a known turn id is answered where it was.
        self._client = self._redis_module.Redis.from_url(
            self.url,
            socket_connect_timeout=0.5,
            socket_timeout=2.0,
            health_check_interval=10,
            retry=Retry(NoBackoff(), 1),
        )
        self._place = self._client.register_script(_PLACE)
        self._state = threading.Lock()
        self._down_until = 0.0  # monotonic instant before which Redis is not tried again
        self._down = False
        self._local = MemorySessions(max_turns=self.max_turns, ttl_s=self.ttl_s)
        self._local_sessions: set[str] = set()  # sessions whose latest turn went to the local book

    def reset_after_fork(self) -> None:
        """A forked child opens its own connections (a socket must not be shared with the parent)."""
        INHERITED_HANDLES.append(self._client)
        self._open()

    def _keys(self, session: str) -> list[str]:
        """A hash tag per session: its keys share one Redis Cluster slot, whatever the session id holds."""
        tag = hashlib.sha1(session.encode()).hexdigest()[:20]
        return [f"{self.prefix}{{{tag}}}:session", f"{self.prefix}{{{tag}}}:turns"]

    # -- outages -----------------------------------------------------------------------------------
    def _available(self) -> bool:
        return not self._down or time.monotonic() >= self._down_until

    def _failed(self, error: Exception) -> SessionStoreUnavailable:
        with self._state:
            self._down_until = time.monotonic() + _RETRY_S
            if not self._down:
                self._down = True
                then = "new turns go to this process's own session threads" if self.fallback else "turns wait"
                _logger.error(
                    "otel-context: session store %s failed (%s: %s); %s until it answers again",
                    redact_url(self.url),
                    type(error).__name__,
                    _reason(error),
                    then,
                )
        return SessionStoreUnavailable(f"session store {redact_url(self.url)} failed: {type(error).__name__}")

    def _answered(self) -> None:
        if self._down:
            with self._state:
                if self._down:
                    self._down = False
                    _logger.warning(
                        "otel-context: session store %s answers again; sessions continue in their shared threads",
                        redact_url(self.url),
                    )

    def _errors(self) -> tuple[type[Exception], ...]:
        # Every error Redis can answer or raise (connection, timeout, OOM, READONLY, BUSY, ...): none of
        # them is known to be permanent, so the turn is retried, never dropped.
        return (self._redis_module.exceptions.RedisError, OSError)

    # -- the book ------------------------------------------------------------------------------------
    def place_all(self, turns: list[Turn]) -> list[Placement]:
        """All turns of a batch in one pipelined round trip (each its own atomic script)."""
        if not turns:
            return []
        if self._available():
            try:
                pipe = self._client.pipeline(transaction=False)
                for turn in turns:
                    self._place(keys=self._keys(turn.session), args=self._args(turn), client=pipe)
                answers = pipe.execute()
            except self._errors() as error:
                unusable = self._failed(error)
            else:
                self._answered()
                for turn in turns:
                    self._local_sessions.discard(turn.session)
                return [_placement(turn, answer) for turn, answer in zip(turns, answers, strict=True)]
        else:
            unusable = SessionStoreUnavailable(f"session store {redact_url(self.url)} failed moments ago")
        if not self.fallback:
            raise unusable
        self._local_sessions.update(turn.session for turn in turns)
        return self._local.place_all(turns)

    def _args(self, turn: Turn) -> list[object]:
        return [
            turn.turn_id,
            json.dumps(turn.metadata, sort_keys=True),
            turn.messages,
            turn.answer,
            self.max_turns,
            int(self.ttl_s * 1000),
            int(self.ttl_s * 1000 * _KEEP_FACTOR),
        ]

    def latest_answer(self, session: str) -> tuple[str, int] | None:
        if session in self._local_sessions:
            return self._local.latest_answer(session)
        if not self._available():
            return None
        try:
            found = self._client.hget(self._keys(session)[0], "answer")
        except self._errors() as error:
            self._failed(error)
            return None
        self._answered()
        if not found:
            return None
        part, index = found.split()
        return session_thread_id(session, int(part)), int(index)

    def close(self) -> None:
        self._client.close()


def _reason(error: Exception) -> str:
    """What Redis said, without the command that failed (a pipeline error quotes it, with session ids)."""
    text = str(error)
    return text.rsplit("caused error: ", 1)[-1].split(". script:", 1)[0][:200]


def _placement(turn: Turn, answer: list) -> Placement:
    repeat, part, offset, fixed = answer
    metadata = json.loads(fixed)
    return Placement(session_thread_id(turn.session, int(part)), metadata, int(offset), repeat=bool(int(repeat)))


def redact_url(url: str) -> str:
    """A store URL fit for a log line or `/stats`: every password it may hold replaced by `***`.

    redis-py reads one from the user info (`redis://user:pw@host`, `redis://:pw@host`) and from the
    query (`?password=pw`, and `ssl_password=`: it passes any query key on to the connection). When
    in doubt more is hidden: a user info without a colon (often a password missing its colon), all
    of it up to the last `@` (a password with an unencoded `/`, `?` or `#`), any fragment.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:  # a file path (the SQLite book): nothing secret in it
        return url
    userinfo, at, location = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        shown = f"{user}:***" if colon and not set(user) & set("/?#") else "***"
        rest = f"{shown}@{location}"
    before, question, query = rest.partition("?")
    if question:
        query, hash_, _ = query.partition("#")
        rest = f"{before}?{_redact_query(query)}" + ("#***" if hash_ else "")
    elif "#" in rest:
        rest = rest.partition("#")[0] + "#***"
    return f"{scheme}://{rest}"


_SECRET_KEYS = ("pass", "secret", "token")  # password, ssl_password, passwd: any query key naming one


def _redact_query(query: str) -> str:
    """`a=1&password=pw` as `a=1&password=***`; keys are compared decoded, as redis-py reads them."""
    pairs = []
    for pair in query.split("&"):
        key, equals, _ = pair.partition("=")
        secret = equals and any(word in unquote(key).lower() for word in _SECRET_KEYS)
        pairs.append(f"{key}=***" if secret else pair)
    return "&".join(pairs)


def is_redis_url(value: str | None) -> bool:
    return bool(value) and value.startswith(REDIS_SCHEMES)  # type: ignore[union-attr]
