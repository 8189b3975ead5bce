"""Settings of the exporter and the sidecar, resolved once: keyword argument, else environment, else default.

Environment variables follow the OTel exporter naming (`OTEL_EXPORTER_CONTEXT_*`, named in
`environment_variables`); durations are milliseconds as the OTel specification defines timeouts. An empty
variable counts as unset. Every typed variable is read by `read_env` with one of the parsers below, so a
malformed value is handled the same everywhere: one warning, then the default. A bad keyword argument raises.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .conventions.keys import ASSOCIATION_PREFIX
from .environment_variables import (
    CONTEXT_API_TOKEN,
    CONTEXT_TOKEN,
    OTEL_CONTEXT_SERVE_BODY_TIMEOUT,
    OTEL_CONTEXT_SERVE_GRPC_PORT,
    OTEL_CONTEXT_SERVE_HEADER_TIMEOUT,
    OTEL_CONTEXT_SERVE_HOST,
    OTEL_CONTEXT_SERVE_MAX_ATTRIBUTES,
    OTEL_CONTEXT_SERVE_MAX_BODY_BYTES,
    OTEL_CONTEXT_SERVE_MAX_CONNECTIONS,
    OTEL_CONTEXT_SERVE_MAX_DECOMPRESSED_BYTES,
    OTEL_CONTEXT_SERVE_MAX_IN_PROGRESS,
    OTEL_CONTEXT_SERVE_MAX_SPANS,
    OTEL_CONTEXT_SERVE_PORT,
    OTEL_CONTEXT_SERVE_SETTLE,
    OTEL_CONTEXT_SERVE_STATE_DIR,
    OTEL_CONTEXT_SERVE_TOKEN,
    OTEL_CONTEXT_SERVE_TOKEN_FILE,
    OTEL_EXPORTER_CONTEXT_ASSOCIATION_PREFIX,
    OTEL_EXPORTER_CONTEXT_AT_LEAST_ONCE,
    OTEL_EXPORTER_CONTEXT_BATCH_SIZE,
    OTEL_EXPORTER_CONTEXT_CONCURRENCY,
    OTEL_EXPORTER_CONTEXT_DELIVERY,
    OTEL_EXPORTER_CONTEXT_ENDPOINT,
    OTEL_EXPORTER_CONTEXT_EVAL_RATINGS,
    OTEL_EXPORTER_CONTEXT_EXCLUDE_WORKFLOWS,
    OTEL_EXPORTER_CONTEXT_INCLUDE_TOOLS,
    OTEL_EXPORTER_CONTEXT_INCLUDE_WORKFLOWS,
    OTEL_EXPORTER_CONTEXT_INSECURE,
    OTEL_EXPORTER_CONTEXT_MAX_ELAPSED,
    OTEL_EXPORTER_CONTEXT_MAX_MESSAGE_CHARS,
    OTEL_EXPORTER_CONTEXT_MAX_PENDING_TRACES,
    OTEL_EXPORTER_CONTEXT_MAX_SPANS_PER_TRACE,
    OTEL_EXPORTER_CONTEXT_MODEL_ALIASES,
    OTEL_EXPORTER_CONTEXT_PENDING_TTL,
    OTEL_EXPORTER_CONTEXT_PSEUDONYM_KEY,
    OTEL_EXPORTER_CONTEXT_PSEUDONYMIZE,
    OTEL_EXPORTER_CONTEXT_QUEUE_SIZE,
    OTEL_EXPORTER_CONTEXT_REDACT,
    OTEL_EXPORTER_CONTEXT_RETRY_INITIAL_BACKOFF,
    OTEL_EXPORTER_CONTEXT_RETRY_MAX_BACKOFF,
    OTEL_EXPORTER_CONTEXT_ROOT_WAIT,
    OTEL_EXPORTER_CONTEXT_SAMPLE_RATIO,
    OTEL_EXPORTER_CONTEXT_SESSION_DB,
    OTEL_EXPORTER_CONTEXT_SESSION_MAX_TURNS,
    OTEL_EXPORTER_CONTEXT_SESSION_TTL,
    OTEL_EXPORTER_CONTEXT_SESSIONS,
    OTEL_EXPORTER_CONTEXT_SHUTDOWN_TIMEOUT,
    OTEL_EXPORTER_CONTEXT_SPOOL_DIR,
    OTEL_EXPORTER_CONTEXT_SPOOL_MAX_BYTES,
    OTEL_EXPORTER_CONTEXT_SPOOL_RETRY_INTERVAL,
    OTEL_EXPORTER_CONTEXT_TENANT_ID,
    OTEL_EXPORTER_CONTEXT_TIMEOUT,
    OTEL_EXPORTER_CONTEXT_TOKEN,
)

DEFAULT_ENDPOINT = "https://api.context.ai"
DEFAULT_TIMEOUT_MS = 10_000
TOKEN_VARIABLES = (OTEL_EXPORTER_CONTEXT_TOKEN, CONTEXT_API_TOKEN, CONTEXT_TOKEN)  # the first set wins
DEFAULT_SHUTDOWN_TIMEOUT_MS = 5_000

_logger = logging.getLogger(__name__)
T = TypeVar("T")


class ConfigError(ValueError):
    """A setting that cannot work; the message names the variable and what to do."""


def env(name: str) -> str | None:
    """The variable's raw value; None when unset, empty or blank."""
    value = os.environ.get(name)
    return value if value not in (None, "") and value.strip() else None


def read_env(name: str, parse: Callable[[str], T], default: T) -> T:
    """The variable parsed, else `default`: the one reader of typed settings.

    `parse` gets the stripped value and raises ValueError saying what was expected ("an integer"). A bad
    value in the environment must never stop tracing: one warning naming the variable, then the default.
    """
    raw = env(name)
    if raw is None:
        return default
    try:
        return parse(raw.strip())
    except ValueError as expected:
        _logger.warning("otel-context: %s=%r is not %s; using the default %r", name, raw, expected, default)
        return default


# Parsers for `read_env`: each takes the stripped value and raises ValueError saying what it expected.


def integer(minimum: int = 1) -> Callable[[str], int]:
    """A parser of whole numbers of at least `minimum` (durations are integer milliseconds)."""

    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError("an integer") from None
        if value < minimum:
            raise ValueError(f"an integer of at least {minimum}")
        return value

    return parse


def boolean(raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("a boolean (true or false)")


def ratio(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise ValueError("a number between 0 and 1")
    return value


DELIVERY_MODES = ("thread", "process")


def delivery_mode(raw: str) -> str:
    """`thread` (uploads on workers in the app's process) or `process` (a delivery helper process)."""
    value = raw.lower()
    if value not in DELIVERY_MODES:
        raise ValueError(" or ".join(DELIVERY_MODES))
    return value


def comma_list(raw: str) -> tuple[str, ...]:
    """A comma-separated list; empty items are dropped."""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def api_url(insecure: bool) -> Callable[[str], str]:
    """A parser of API URLs that refuses to send the token in clear text unless `insecure`."""

    def parse(raw: str) -> str:
        problem = _endpoint_problem(raw, insecure)
        if problem:
            raise ValueError(problem)
        return raw

    return parse


def model_aliases(raw: str) -> dict[str, str]:
    from .conversion.cost import parse_aliases

    try:
        return parse_aliases(raw)
    except ValueError as error:
        raise ValueError(f"a comma-separated list of name=model ({error})") from None


def rating_rules(raw: str) -> tuple[Any, ...]:
    from .conversion.evaluations import parse_rules

    try:
        return parse_rules(raw)
    except ValueError as error:
        raise ValueError(f"a list of rating rules ({error})") from None


def _redaction_patterns(name: str) -> tuple[str, ...]:
    """The list in `name`, less the patterns that do not exist: ignored with one warning, the others still apply."""
    from .preparation.redaction import PATTERNS

    chosen = read_env(name, comma_list, ())
    unknown = sorted(set(chosen) - set(PATTERNS) - {"all"})
    if unknown:
        _logger.warning(
            "otel-context: %s names unknown pattern(s) %s (choose from %s or all); they are ignored",
            name,
            ", ".join(unknown),
            ", ".join(PATTERNS),
        )
    return tuple(n for n in chosen if n not in unknown)


def _endpoint_problem(endpoint: str, insecure: bool) -> str | None:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"an http(s) URL (expected something like {DEFAULT_ENDPOINT})"
    if parts.scheme == "http" and not is_loopback(parts.hostname) and not insecure:
        return (
            "an https or loopback URL: the Context token is never sent in clear text to another host "
            f"unless {OTEL_EXPORTER_CONTEXT_INSECURE}=true"
        )
    return None


def resolve_token(explicit: str | None = None) -> str | None:
    if explicit:
        return explicit
    for name in TOKEN_VARIABLES:
        value = env(name)
        if value is not None:
            return value.strip()
    return None


def read_token_file(path: str, name: str = "--token-file") -> str:
    """A token kept in a file (a mounted secret), so it never shows in `ps` or a shell history."""
    try:
        with open(path, encoding="utf-8") as file:
            token = file.read().strip()
    except OSError as error:
        raise ConfigError(f"{name}: cannot read {path}: {error.strerror}") from None
    if not token:
        raise ConfigError(f"{name}: {path} is empty")
    return token


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ExporterSettings:
    """Everything the exporter needs; `repr` never shows the token."""

    token: str | None = field(default=None, repr=False)
    endpoint: str = DEFAULT_ENDPOINT
    timeout_s: float = DEFAULT_TIMEOUT_MS / 1000
    insecure: bool = False
    tenant_id: str | None = None
    max_pending_traces: int = 10_000
    pending_ttl_s: float = 600.0
    max_spans_per_trace: int = 10_000
    max_message_chars: int = 65_536
    queue_size: int = 10_000
    concurrency: int = 4
    batch_size: int = 32
    at_least_once: bool = False
    max_elapsed_s: float = 300.0
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    spool_dir: str | None = None
    spool_max_bytes: int = 256 * 1024 * 1024
    root_wait_s: float = 10.0
    include_tools: bool = False
    redact: tuple[str, ...] = ()
    redact_hook: Callable[[str], str] | None = field(default=None, repr=False)
    include_workflows: tuple[str, ...] = ()
    exclude_workflows: tuple[str, ...] = ()
    sample_ratio: float = 1.0
    association_prefix: str = ASSOCIATION_PREFIX
    sessions: bool = True
    session_db: str | None = None
    session_ttl_s: float = 86_400.0
    session_max_turns: int = 200
    spool_retry_s: float = 30.0
    shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_MS / 1000
    model_aliases: dict[str, str] = field(default_factory=dict)
    eval_ratings: tuple[Any, ...] = ()  # evaluations.RatingRule
    pseudonymize: tuple[str, ...] = ()  # metadata keys and built-in patterns replaced by keyed pseudonyms
    pseudonym_key: str | None = field(default=None, repr=False)
    delivery: str = "thread"  # or "process": uploads in a helper process (delivery/helper.py)

    @property
    def plain_http(self) -> bool:
        return urlsplit(self.endpoint).scheme == "http"

    @property
    def loopback(self) -> bool:
        return is_loopback(urlsplit(self.endpoint).hostname)

    def describe(self) -> dict[str, object]:
        """The settings as a dict for logs and `stats`: secrets replaced by whether they are set, and URLs
        without their passwords (a Redis URL's, in its user info or its query)."""
        from .preparation.session_redis import redact_url

        hidden = ("token", "redact_hook", "pseudonym_key")
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in hidden}
        out["token"] = "set" if self.token else "missing"
        out["pseudonym_key"] = "set" if self.pseudonym_key else None
        out["eval_ratings"] = [str(rule) for rule in self.eval_ratings]  # JSON for `GET /stats`
        out["redact_hook"] = "set" if self.redact_hook else None
        out["endpoint"] = redact_url(self.endpoint)
        out["session_db"] = redact_url(self.session_db) if self.session_db else None
        return out


def resolve_settings(**overrides: object) -> ExporterSettings:
    """Keyword arguments (None means not given) over `OTEL_EXPORTER_CONTEXT_*` over defaults."""
    given = {k: v for k, v in overrides.items() if v is not None}
    timeout_ms = read_env(OTEL_EXPORTER_CONTEXT_TIMEOUT, integer(), DEFAULT_TIMEOUT_MS)
    insecure = read_env(OTEL_EXPORTER_CONTEXT_INSECURE, boolean, False)
    resolved: dict[str, Any] = {
        "token": resolve_token(given.pop("token", None)),  # type: ignore[arg-type]
        "endpoint": given.get("endpoint")
        or read_env(OTEL_EXPORTER_CONTEXT_ENDPOINT, api_url(insecure), DEFAULT_ENDPOINT),
        "timeout_s": timeout_ms / 1000,
        "insecure": insecure,
        "tenant_id": env(OTEL_EXPORTER_CONTEXT_TENANT_ID),
        "max_pending_traces": read_env(OTEL_EXPORTER_CONTEXT_MAX_PENDING_TRACES, integer(), 10_000),
        "pending_ttl_s": read_env(OTEL_EXPORTER_CONTEXT_PENDING_TTL, integer(), 600_000) / 1000,
        "max_spans_per_trace": read_env(OTEL_EXPORTER_CONTEXT_MAX_SPANS_PER_TRACE, integer(), 10_000),
        "max_message_chars": read_env(OTEL_EXPORTER_CONTEXT_MAX_MESSAGE_CHARS, integer(), 65_536),
        "queue_size": read_env(OTEL_EXPORTER_CONTEXT_QUEUE_SIZE, integer(), 10_000),
        "concurrency": read_env(OTEL_EXPORTER_CONTEXT_CONCURRENCY, integer(), 4),
        "batch_size": read_env(OTEL_EXPORTER_CONTEXT_BATCH_SIZE, integer(), 32),
        "at_least_once": read_env(OTEL_EXPORTER_CONTEXT_AT_LEAST_ONCE, boolean, False),
        "max_elapsed_s": read_env(OTEL_EXPORTER_CONTEXT_MAX_ELAPSED, integer(0), 300_000) / 1000,
        "retry_initial_s": read_env(OTEL_EXPORTER_CONTEXT_RETRY_INITIAL_BACKOFF, integer(0), 500) / 1000,
        "retry_max_s": read_env(OTEL_EXPORTER_CONTEXT_RETRY_MAX_BACKOFF, integer(0), 30_000) / 1000,
        "spool_dir": env(OTEL_EXPORTER_CONTEXT_SPOOL_DIR),
        "spool_max_bytes": read_env(OTEL_EXPORTER_CONTEXT_SPOOL_MAX_BYTES, integer(), 256 * 1024 * 1024),
        "spool_retry_s": read_env(OTEL_EXPORTER_CONTEXT_SPOOL_RETRY_INTERVAL, integer(), 30_000) / 1000,
        "shutdown_timeout_s": read_env(OTEL_EXPORTER_CONTEXT_SHUTDOWN_TIMEOUT, integer(0), DEFAULT_SHUTDOWN_TIMEOUT_MS)
        / 1000,
        "root_wait_s": read_env(OTEL_EXPORTER_CONTEXT_ROOT_WAIT, integer(0), 10_000) / 1000,
        "include_tools": read_env(OTEL_EXPORTER_CONTEXT_INCLUDE_TOOLS, boolean, False),
        "redact": _redaction_patterns(OTEL_EXPORTER_CONTEXT_REDACT),
        "include_workflows": read_env(OTEL_EXPORTER_CONTEXT_INCLUDE_WORKFLOWS, comma_list, ()),
        "exclude_workflows": read_env(OTEL_EXPORTER_CONTEXT_EXCLUDE_WORKFLOWS, comma_list, ()),
        "sample_ratio": read_env(OTEL_EXPORTER_CONTEXT_SAMPLE_RATIO, ratio, 1.0),
        "association_prefix": env(OTEL_EXPORTER_CONTEXT_ASSOCIATION_PREFIX) or ASSOCIATION_PREFIX,
        "sessions": read_env(OTEL_EXPORTER_CONTEXT_SESSIONS, boolean, True),
        "session_db": env(OTEL_EXPORTER_CONTEXT_SESSION_DB),
        "session_ttl_s": read_env(OTEL_EXPORTER_CONTEXT_SESSION_TTL, integer(), 86_400_000) / 1000,
        "session_max_turns": read_env(OTEL_EXPORTER_CONTEXT_SESSION_MAX_TURNS, integer(), 200),
        "model_aliases": read_env(OTEL_EXPORTER_CONTEXT_MODEL_ALIASES, model_aliases, {}),
        "eval_ratings": read_env(OTEL_EXPORTER_CONTEXT_EVAL_RATINGS, rating_rules, ()),
        "pseudonymize": read_env(OTEL_EXPORTER_CONTEXT_PSEUDONYMIZE, comma_list, ()),
        "pseudonym_key": env(OTEL_EXPORTER_CONTEXT_PSEUDONYM_KEY),
        "delivery": read_env(OTEL_EXPORTER_CONTEXT_DELIVERY, delivery_mode, "thread"),
    }
    if resolved["pseudonymize"] and not resolved["pseudonym_key"] and not given.get("pseudonym_key"):
        _logger.warning(
            "otel-context: %s is set without %s; the values it names are redacted instead",
            OTEL_EXPORTER_CONTEXT_PSEUDONYMIZE,
            OTEL_EXPORTER_CONTEXT_PSEUDONYM_KEY,
        )
    if isinstance(given.get("pseudonymize"), str):
        given["pseudonymize"] = comma_list(given["pseudonymize"])  # type: ignore[arg-type]
    elif given.get("pseudonymize") is not None:
        given["pseudonymize"] = tuple(given["pseudonymize"])  # type: ignore[arg-type]
    if given.get("pseudonymize") and not (given.get("pseudonym_key") or resolved["pseudonym_key"]):
        raise ConfigError(f"pseudonymize needs a secret: pseudonym_key= or {OTEL_EXPORTER_CONTEXT_PSEUDONYM_KEY}")
    rules = given.pop("eval_ratings", None)
    if rules is not None:
        from .conversion.evaluations import parse_rules

        try:
            resolved["eval_ratings"] = parse_rules(rules)  # type: ignore[arg-type]
        except ValueError as error:
            raise ConfigError(f"eval_ratings: {error}") from None
    aliases = given.pop("model_aliases", None)
    if isinstance(aliases, str):
        try:
            from .conversion.cost import parse_aliases

            resolved["model_aliases"] = parse_aliases(aliases)
        except ValueError as error:
            raise ConfigError(f"model_aliases: {error}; expected name=model,name=model") from None
    elif aliases is not None:
        resolved["model_aliases"] = dict(aliases)  # type: ignore[call-overload]
    redact = given.pop("redact", None)
    if callable(redact):  # `redact=callable`: a hook applied after the built-in patterns
        resolved["redact_hook"] = redact
    elif redact is not None:
        resolved["redact"] = comma_list(redact) if isinstance(redact, str) else tuple(redact)  # type: ignore[arg-type]
    if "timeout" in given:  # keyword `timeout` is in seconds, like the OTLP exporters' constructors
        resolved["timeout_s"] = float(given.pop("timeout"))  # type: ignore[arg-type]
    resolved.update(given)
    settings = ExporterSettings(**resolved)
    validate(settings)
    return settings


def validate(settings: ExporterSettings) -> None:
    """Checks keyword arguments (the environment's values were checked as they were read)."""
    problem = _endpoint_problem(settings.endpoint, settings.insecure)
    if problem:
        raise ConfigError(f"endpoint={settings.endpoint!r} must be {problem}")
    if not 0.0 <= settings.sample_ratio <= 1.0:
        raise ConfigError(f"{OTEL_EXPORTER_CONTEXT_SAMPLE_RATIO} must be between 0 and 1, got {settings.sample_ratio}")
    from .preparation.redaction import PATTERNS

    unknown = sorted(set(settings.redact) - set(PATTERNS) - {"all"})
    if unknown:
        raise ConfigError(
            f"{OTEL_EXPORTER_CONTEXT_REDACT} names unknown pattern(s) {', '.join(unknown)}; "
            f"choose from {', '.join(PATTERNS)} or all"
        )
    if settings.delivery not in DELIVERY_MODES:
        raise ConfigError(f"delivery must be {' or '.join(DELIVERY_MODES)}, got {settings.delivery!r}")
    for name in ("timeout_s", "max_pending_traces", "max_spans_per_trace", "queue_size", "concurrency", "batch_size"):
        if getattr(settings, name) <= 0:
            raise ConfigError(f"{name} must be positive, got {getattr(settings, name)!r}")


@dataclass(frozen=True)
class ReceiverSettings:
    """The sidecar's listening side: `otel-context serve` flags, else `OTEL_CONTEXT_SERVE_*`, else defaults."""

    host: str = "127.0.0.1"
    port: int = 4319
    grpc_port: int | None = 4320  # None: no gRPC listener
    token: str | None = field(default=None, repr=False)
    max_body_bytes: int = 16 * 1024 * 1024
    max_decompressed_bytes: int = 64 * 1024 * 1024
    settle_s: float = 2.0
    retry_after_s: int = 2
    state_dir: str = "otel-context-state"  # sessions.db: a session's turns survive restarts
    # The work bound per request (see otel_context/spans/otlp_limits.py) and the load bound per process.
    max_spans: int = 65_536
    max_attributes: int = 524_288
    max_in_progress: int = 4  # requests decoding at once; beyond, 503 / UNAVAILABLE with a retry delay
    max_connections: int = 1000  # lowered to the open-files limit minus a headroom at start
    header_timeout_s: float = 10.0  # also the idle keep-alive timeout
    body_timeout_s: float = 30.0


def resolve_receiver_settings(**overrides: object) -> ReceiverSettings:
    """`token_file` (or `OTEL_CONTEXT_SERVE_TOKEN_FILE`) is read here; a token given directly wins."""
    given = {k: v for k, v in overrides.items() if v is not None}
    token_file = given.pop("token_file", None) or env(OTEL_CONTEXT_SERVE_TOKEN_FILE)
    grpc_port = read_env(OTEL_CONTEXT_SERVE_GRPC_PORT, integer(-1), 4320)
    resolved: dict[str, Any] = {
        "host": env(OTEL_CONTEXT_SERVE_HOST) or "127.0.0.1",
        "port": read_env(OTEL_CONTEXT_SERVE_PORT, integer(0), 4319),
        "grpc_port": grpc_port if grpc_port >= 0 else None,
        "token": env(OTEL_CONTEXT_SERVE_TOKEN),
        "max_spans": read_env(OTEL_CONTEXT_SERVE_MAX_SPANS, integer(), 65_536),
        "max_attributes": read_env(OTEL_CONTEXT_SERVE_MAX_ATTRIBUTES, integer(), 524_288),
        "max_in_progress": read_env(OTEL_CONTEXT_SERVE_MAX_IN_PROGRESS, integer(), 4),
        "max_connections": read_env(OTEL_CONTEXT_SERVE_MAX_CONNECTIONS, integer(), 1000),
        "header_timeout_s": read_env(OTEL_CONTEXT_SERVE_HEADER_TIMEOUT, integer(), 10_000) / 1000,
        "body_timeout_s": read_env(OTEL_CONTEXT_SERVE_BODY_TIMEOUT, integer(), 30_000) / 1000,
        "max_body_bytes": read_env(OTEL_CONTEXT_SERVE_MAX_BODY_BYTES, integer(), 16 * 1024 * 1024),
        "max_decompressed_bytes": read_env(OTEL_CONTEXT_SERVE_MAX_DECOMPRESSED_BYTES, integer(), 64 * 1024 * 1024),
        "settle_s": read_env(OTEL_CONTEXT_SERVE_SETTLE, integer(0), 2000) / 1000,
        "state_dir": env(OTEL_CONTEXT_SERVE_STATE_DIR) or "otel-context-state",
    }
    resolved.update(given)
    if token_file and not given.get("token"):
        resolved["token"] = read_token_file(str(token_file))
    if resolved.get("grpc_port") is not None and int(resolved["grpc_port"]) < 0:
        resolved["grpc_port"] = None
    return ReceiverSettings(**resolved)
