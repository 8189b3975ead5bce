"""The Redis session book: shared by every process of every host (sidecar replicas behind a load balancer),
one Lua script per turn; while Redis is down, turns wait in an in-memory book of this process."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from urllib.parse import unquote

from ..conversion.threads import THREAD_NAMESPACE
from ..environment_variables import OTEL_EXPORTER_CONTEXT_SESSION_DB
from ..model import ConversationThread
from .sessions import (
    INHERITED_HANDLES,
    MemorySessions,
    SessionBook,
    SessionStoreUnavailable,
    Turn,
    merge,
)

_logger = logging.getLogger(__name__)

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_KEEP_FACTOR = 10  # a session's part counter outlives its turns: a session resumed after the TTL gets a new part
_RETRY_S = 1.0  # while Redis is down, how often it is tried again (never a connect timeout per turn)

# Atomic add: the turn's part (its old one if known, else the latest, or the next when that one is
# full or was forgotten), the turn stored, the part's version raised, and the part's thread id (the
# uuid5 of `session_thread_id`, from redis.sha1hex) mapped to it for `current`; returns part and turns.
_ADD = """
local function thread_id(session, part)
  local name = 'session/' .. session
  if part > 1 then name = name .. '#' .. part end
  local h = redis.sha1hex(ARGV[8] .. name)
  local variant = string.format('%x', tonumber(string.sub(h, 17, 17), 16) % 4 + 8)
  return string.sub(h, 1, 8) .. '-' .. string.sub(h, 9, 12) .. '-5' .. string.sub(h, 14, 16) .. '-'
    .. variant .. string.sub(h, 18, 20) .. '-' .. string.sub(h, 21, 32)
end
local S, tprefix = KEYS[1], ARGV[7]
local turn_id, max_turns = ARGV[2], tonumber(ARGV[4])
local part = tonumber(redis.call('HGET', S, 't:' .. turn_id) or 0)
if part == 0 then
  part = tonumber(redis.call('HGET', S, 'part') or 1)
  local held = redis.call('HLEN', tprefix .. part)
  if held >= max_turns or (held == 0 and redis.call('HEXISTS', S, 'v:' .. part) == 1) then
    part = part + 1
  end
  redis.call('HSET', S, 't:' .. turn_id, part)
end
if part > tonumber(redis.call('HGET', S, 'part') or 0) then redis.call('HSET', S, 'part', part) end
local T = tprefix .. part
redis.call('HSET', T, turn_id, ARGV[3])
redis.call('PEXPIRE', T, ARGV[5])
local version = redis.call('HINCRBY', S, 'v:' .. part, 1)
redis.call('PEXPIRE', S, ARGV[6])
redis.call('SET', ARGV[9] .. thread_id(ARGV[1], part), ARGV[10] .. '\\n' .. part .. '\\n' .. ARGV[1], 'PX', ARGV[6])
return {part, version, redis.call('HVALS', T)}
"""

# One read of a session part by thread id: version, and (ARGV[2] == '1') part, session and turns.
_READ = """
local m = redis.call('GET', KEYS[1])
if not m then return false end
local tag, part, session = string.match(m, '^([^\\n]*)\\n([^\\n]*)\\n(.*)$')
local base = ARGV[1] .. '{' .. tag .. '}:'
local v = redis.call('HGET', base .. 'session', 'v:' .. part)
if not v then return false end
if ARGV[2] == '0' then return {v} end
return {v, part, session, redis.call('HVALS', base .. 'turns:' .. part)}
"""

# The latest part of a session and its turns.
_LATEST = """
local part = redis.call('HGET', KEYS[1], 'part')
if not part then return false end
return {part, redis.call('HVALS', ARGV[1] .. part)}
"""


class RedisSessions(SessionBook):
    """Sessions in Redis, shared by every replica and worker: `OTEL_EXPORTER_CONTEXT_SESSION_DB=redis://host:port/db`.

    Each add is one Lua script, so turns of one session added at the same moment on two hosts both land
    and each raises the part's version. Idle sessions go by key expiry. When Redis cannot be reached,
    one line says so and turns go to an in-memory book scoped to this process (a thread of its own, as
    with the default book: nothing lost, nothing overwritten) until Redis answers again; uploads of
    shared threads wait (retried) rather than risk sending a stale version.
    """

    scope = ""
    shared = True

    def __init__(
        self, url: str, max_turns: int = 200, ttl_s: float = 86_400.0, *, prefix: str = "otel-context:"
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
        self._open()

    def _open(self) -> None:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # One immediate retry (a pooled connection Redis closed when it restarted), never a backoff:
        # the sidecar adds turns on its event loop. Retrying an add is safe: a known turn id is replaced.
        self._client = self._redis_module.Redis.from_url(
            self.url,
            socket_connect_timeout=0.5,
            socket_timeout=2.0,
            health_check_interval=10,
            retry=Retry(NoBackoff(), 1),
        )
        self._add = self._client.register_script(_ADD)
        self._read = self._client.register_script(_READ)
        self._latest = self._client.register_script(_LATEST)
        self._state = threading.Lock()
        self._down_until = 0.0  # monotonic instant before which Redis is not tried again
        self._down = False
        self._fallback = MemorySessions(max_turns=self.max_turns, ttl_s=self.ttl_s)
        self._local_ids: OrderedDict[str, None] = OrderedDict()  # fallback thread ids: sent as they are

    def reset_after_fork(self) -> None:
        """A forked child opens its own connections (a socket must not be shared with the parent)."""
        INHERITED_HANDLES.append(self._client)
        self._open()

    # -- keys --------------------------------------------------------------------------------------
    def _tag(self, session: str) -> str:
        """A hash tag per session: its keys share one Redis Cluster slot, whatever the session id holds."""
        return hashlib.sha1(session.encode()).hexdigest()[:20]

    def _base(self, tag: str) -> str:
        return f"{self.prefix}{{{tag}}}:"

    def _thread_key(self, thread_id: str) -> str:
        return f"{self.prefix}thread:{thread_id}"

    # -- outages -----------------------------------------------------------------------------------
    def _available(self) -> bool:
        return not self._down or time.monotonic() >= self._down_until

    def _failed(self, error: Exception) -> None:
        with self._state:
            self._down_until = time.monotonic() + _RETRY_S
            if not self._down:
                self._down = True
                _logger.error(
                    "otel-context: session store %s unreachable (%s); new turns go to this process's own "
                    "session threads until it answers again",
                    redact_url(self.url),
                    error,
                )

    def _answered(self) -> None:
        if self._down:
            with self._state:
                if self._down:
                    self._down = False
                    _logger.warning(
                        "otel-context: session store %s reachable again; sessions continue in their shared threads",
                        redact_url(self.url),
                    )

    def _errors(self) -> tuple[type[Exception], ...]:
        exceptions = self._redis_module.exceptions
        return (exceptions.ConnectionError, exceptions.TimeoutError, exceptions.BusyLoadingError, OSError)

    # -- the book ------------------------------------------------------------------------------------
    def add(self, session: str, turn: Turn) -> tuple[int, list[Turn]]:
        part, turns, _ = self._add_shared(session, turn)
        return part, turns

    def _add_shared(self, session: str, turn: Turn) -> tuple[int, list[Turn], int | None]:
        """The part and its turns, and the part's version: None when the turn went to the fallback book."""
        if self._available():
            tag = self._tag(session)
            base = self._base(tag)
            payload = json.dumps([turn.turn_id, turn.start_ns, turn.messages, turn.metadata])
            keep_ms = int(self.ttl_s * 1000 * _KEEP_FACTOR)
            try:
                part, version, payloads = self._add(
                    keys=[base + "session"],
                    args=[
                        session,
                        turn.turn_id,
                        payload,
                        self.max_turns,
                        int(self.ttl_s * 1000),
                        keep_ms,
                        base + "turns:",
                        THREAD_NAMESPACE.bytes,
                        self._thread_key(""),
                        tag,
                    ],
                )
                part = int(part)
            except self._errors() as error:
                self._failed(error)
            else:
                self._answered()
                return part, _decode(payloads), int(version)
        part, turns = self._fallback.add(session, turn)
        return part, turns, None

    def fold_all(self, turns: list[tuple[str, Turn]]) -> list[tuple[ConversationThread, int | None]]:
        return [self._fold(session, turn) for session, turn in turns]

    def _fold(self, session: str, turn: Turn) -> tuple[ConversationThread, int | None]:
        part, held, version = self._add_shared(session, turn)
        if version is not None:
            return merge(session, part, held), version
        thread = merge(session, part, held, self._fallback.scope)
        self._local_ids[thread.id] = None
        while len(self._local_ids) > 10_000:
            self._local_ids.popitem(last=False)
        return thread, None

    def turns(self, session: str) -> tuple[int, list[Turn]]:
        if self._available():
            tag = self._tag(session)
            try:
                found = self._latest(keys=[self._base(tag) + "session"], args=[self._base(tag) + "turns:"])
            except self._errors() as error:
                self._failed(error)
            else:
                self._answered()
                return (int(found[0]), _decode(found[1])) if found else (1, [])
        return 1, []

    def latest(self, session: str) -> ConversationThread | None:
        part, turns = self.turns(session)
        if turns:
            return merge(session, part, turns)
        part, turns = self._fallback.turns(session)
        return merge(session, part, turns, self._fallback.scope) if turns else None

    def current(self, thread_id: str) -> tuple[int, ConversationThread] | None:
        """Raises `SessionStoreUnavailable` when Redis is down: the upload is retried, never sent stale."""
        found = self._read_part(thread_id, with_turns=True)
        if found is None:
            return None
        version, part, session, payloads = found
        turns = _decode(payloads)
        return (int(version), merge(session.decode(), int(part), turns)) if turns else None

    def version(self, thread_id: str) -> int | None:
        found = self._read_part(thread_id, with_turns=False)
        return int(found[0]) if found is not None else None

    def versions(self, thread_ids: list[str]) -> dict[str, int]:
        """Every id's version in one round trip: the read script, pipelined (a batch of uploads asks once)."""
        asked = [thread_id for thread_id in thread_ids if thread_id not in self._local_ids]
        if not asked:
            return {}
        if not self._available():
            raise SessionStoreUnavailable(f"session store {redact_url(self.url)} unreachable")
        try:
            pipe = self._client.pipeline(transaction=False)
            for thread_id in asked:
                self._read(keys=[self._thread_key(thread_id)], args=[self.prefix, "0"], client=pipe)
            answers = pipe.execute()
        except self._errors() as error:
            self._failed(error)
            raise SessionStoreUnavailable(f"session store {redact_url(self.url)} unreachable: {error}") from error
        self._answered()
        return {thread_id: int(found[0]) for thread_id, found in zip(asked, answers, strict=True) if found}

    def _read_part(self, thread_id: str, *, with_turns: bool) -> list | None:
        if thread_id in self._local_ids:
            return None
        if not self._available():
            raise SessionStoreUnavailable(f"session store {redact_url(self.url)} unreachable")
        try:
            found = self._read(keys=[self._thread_key(thread_id)], args=[self.prefix, "1" if with_turns else "0"])
        except self._errors() as error:
            self._failed(error)
            raise SessionStoreUnavailable(f"session store {redact_url(self.url)} unreachable: {error}") from error
        self._answered()
        return found or None

    def close(self) -> None:
        self._client.close()


def _decode(payloads: list[bytes]) -> list[Turn]:
    out = []
    for payload in payloads:
        turn_id, start_ns, messages, metadata = json.loads(payload)
        out.append(Turn(turn_id, start_ns, messages, metadata))
    return out


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
