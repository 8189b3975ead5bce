"""Settings of the exporter and the sidecar, resolved once: keyword argument, else environment, else default.

Environment variables follow the OTel exporter naming (`OTEL_EXPORTER_CONTEXT_*`); durations are
milliseconds as the OTel specification defines timeouts. An empty variable counts as unset.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

DEFAULT_ENDPOINT = "https://api.context.ai"
DEFAULT_TIMEOUT_MS = 10_000
TOKEN_VARIABLES = ("OTEL_EXPORTER_CONTEXT_TOKEN", "CONTEXT_API_TOKEN", "CONTEXT_TOKEN")
DEFAULT_SHUTDOWN_TIMEOUT_MS = 5_000

_logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A setting that cannot work; the message names the variable and what to do."""


def env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") and value.strip() else None


def _malformed(name: str, raw: str, expected: str, default: object) -> None:
    """A bad value in the environment must never stop tracing: one warning, then the default."""
    _logger.warning("otel-context: %s=%r is not %s; using the default %r", name, raw, expected, default)


def _int_env(name: str, default: int, *, minimum: int = 1) -> int:
    raw = env(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        _malformed(name, raw, "an integer", default)
        return default
    if value < minimum:
        _malformed(name, raw, f"an integer of at least {minimum}", default)
        return default
    return value


def _bool_env(name: str, default: bool) -> bool:
    raw = env(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    _malformed(name, raw, "a boolean (true or false)", default)
    return default


def _split(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _list_env(name: str) -> tuple[str, ...]:
    raw = env(name)
    return _split(raw) if raw else ()


def _ratio_env(name: str, default: float) -> float:
    raw = env(name)
    if raw is None:
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        _malformed(name, raw, "a number between 0 and 1", default)
        return default
    return value


def _endpoint_env(name: str, insecure: bool) -> str:
    raw = env(name)
    if raw is None:
        return DEFAULT_ENDPOINT
    problem = _endpoint_problem(raw.strip(), insecure)
    if problem:
        _malformed(name, raw, problem, DEFAULT_ENDPOINT)
        return DEFAULT_ENDPOINT
    return raw.strip()


def _redact_env(name: str) -> tuple[str, ...]:
    from .preparation.redaction import PATTERNS

    names = _list_env(name)
    unknown = sorted(set(names) - set(PATTERNS) - {"all"})
    if unknown:
        _logger.warning(
            "otel-context: %s names unknown pattern(s) %s (choose from %s or all); they are ignored",
            name,
            ", ".join(unknown),
            ", ".join(PATTERNS),
        )
    return tuple(n for n in names if n not in unknown)


def _parse_aliases(raw: str) -> dict[str, str]:
    from .conversion.cost import parse_aliases

    return parse_aliases(raw)


def _aliases_env(name: str) -> dict[str, str]:
    raw = env(name)
    if raw is None:
        return {}
    try:
        return _parse_aliases(raw)
    except ValueError as error:
        _malformed(name, raw, f"a comma-separated list of name=model ({error})", {})
        return {}


def _eval_rules_env(name: str) -> tuple[Any, ...]:
    from .conversion.evaluations import parse_rules

    raw = env(name)
    if raw is None:
        return ()
    try:
        return parse_rules(raw)
    except ValueError as error:
        _malformed(name, raw, f"a list of rating rules ({error})", ())
        return ()


def _endpoint_problem(endpoint: str, insecure: bool) -> str | None:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"an http(s) URL (expected something like {DEFAULT_ENDPOINT})"
    if parts.scheme == "http" and not is_loopback(parts.hostname) and not insecure:
        return (
            "an https or loopback URL: the Context token is never sent in clear text to another host "
            "unless OTEL_EXPORTER_CONTEXT_INSECURE=true"
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
    max_message_chars: int = 65_536
    queue_size: int = 10_000
    concurrency: int = 4
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
    association_prefix: str = "traceloop.association.properties."
    sessions: bool = True
    session_db: str | None = None
    session_ttl_s: float = 86_400.0
    session_max_turns: int = 200
    spool_retry_s: float = 60.0
    shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_MS / 1000
    model_aliases: dict[str, str] = field(default_factory=dict)
    eval_ratings: tuple[Any, ...] = ()  # evaluations.RatingRule
    pseudonymize: tuple[str, ...] = ()  # metadata keys and built-in patterns replaced by keyed pseudonyms
    pseudonym_key: str | None = field(default=None, repr=False)

    @property
    def plain_http(self) -> bool:
        return urlsplit(self.endpoint).scheme == "http"

    @property
    def loopback(self) -> bool:
        return is_loopback(urlsplit(self.endpoint).hostname)

    def describe(self) -> dict[str, object]:
        """The settings as a dict for logs and `stats`, the token replaced by whether it is set."""
        hidden = ("token", "redact_hook", "pseudonym_key")
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in hidden}
        out["token"] = "set" if self.token else "missing"
        out["pseudonym_key"] = "set" if self.pseudonym_key else None
        out["eval_ratings"] = [str(rule) for rule in self.eval_ratings]  # JSON for `GET /stats`
        out["redact_hook"] = "set" if self.redact_hook else None
        return out


def resolve_settings(**overrides: object) -> ExporterSettings:
    """Keyword arguments (None means not given) over `OTEL_EXPORTER_CONTEXT_*` over defaults."""
    given = {k: v for k, v in overrides.items() if v is not None}
    timeout_ms = _int_env("OTEL_EXPORTER_CONTEXT_TIMEOUT", DEFAULT_TIMEOUT_MS)
    insecure = _bool_env("OTEL_EXPORTER_CONTEXT_INSECURE", False)
    resolved: dict[str, Any] = {
        "token": resolve_token(given.pop("token", None)),  # type: ignore[arg-type]
        "endpoint": given.get("endpoint") or _endpoint_env("OTEL_EXPORTER_CONTEXT_ENDPOINT", insecure),
        "timeout_s": timeout_ms / 1000,
        "insecure": insecure,
        "tenant_id": env("OTEL_EXPORTER_CONTEXT_TENANT_ID"),
        "max_pending_traces": _int_env("OTEL_EXPORTER_CONTEXT_MAX_PENDING_TRACES", 10_000),
        "pending_ttl_s": _int_env("OTEL_EXPORTER_CONTEXT_PENDING_TTL", 600_000) / 1000,
        "max_message_chars": _int_env("OTEL_EXPORTER_CONTEXT_MAX_MESSAGE_CHARS", 65_536),
        "queue_size": _int_env("OTEL_EXPORTER_CONTEXT_QUEUE_SIZE", 10_000),
        "concurrency": _int_env("OTEL_EXPORTER_CONTEXT_CONCURRENCY", 4),
        "max_elapsed_s": _int_env("OTEL_EXPORTER_CONTEXT_MAX_ELAPSED", 300_000, minimum=0) / 1000,
        "retry_initial_s": _int_env("OTEL_EXPORTER_CONTEXT_RETRY_INITIAL_BACKOFF", 500, minimum=0) / 1000,
        "retry_max_s": _int_env("OTEL_EXPORTER_CONTEXT_RETRY_MAX_BACKOFF", 30_000, minimum=0) / 1000,
        "spool_dir": env("OTEL_EXPORTER_CONTEXT_SPOOL_DIR"),
        "spool_max_bytes": _int_env("OTEL_EXPORTER_CONTEXT_SPOOL_MAX_BYTES", 256 * 1024 * 1024),
        "spool_retry_s": _int_env("OTEL_EXPORTER_CONTEXT_SPOOL_RETRY_INTERVAL", 60_000) / 1000,
        "shutdown_timeout_s": _int_env("OTEL_EXPORTER_CONTEXT_SHUTDOWN_TIMEOUT", DEFAULT_SHUTDOWN_TIMEOUT_MS, minimum=0)
        / 1000,
        "root_wait_s": _int_env("OTEL_EXPORTER_CONTEXT_ROOT_WAIT", 10_000, minimum=0) / 1000,
        "include_tools": _bool_env("OTEL_EXPORTER_CONTEXT_INCLUDE_TOOLS", False),
        "redact": _redact_env("OTEL_EXPORTER_CONTEXT_REDACT"),
        "include_workflows": _list_env("OTEL_EXPORTER_CONTEXT_INCLUDE_WORKFLOWS"),
        "exclude_workflows": _list_env("OTEL_EXPORTER_CONTEXT_EXCLUDE_WORKFLOWS"),
        "sample_ratio": _ratio_env("OTEL_EXPORTER_CONTEXT_SAMPLE_RATIO", 1.0),
        "association_prefix": env("OTEL_EXPORTER_CONTEXT_ASSOCIATION_PREFIX") or "traceloop.association.properties.",
        "sessions": _bool_env("OTEL_EXPORTER_CONTEXT_SESSIONS", True),
        "session_db": env("OTEL_EXPORTER_CONTEXT_SESSION_DB"),
        "session_ttl_s": _int_env("OTEL_EXPORTER_CONTEXT_SESSION_TTL", 86_400_000) / 1000,
        "session_max_turns": _int_env("OTEL_EXPORTER_CONTEXT_SESSION_MAX_TURNS", 200),
        "model_aliases": _aliases_env("OTEL_EXPORTER_CONTEXT_MODEL_ALIASES"),
        "eval_ratings": _eval_rules_env("OTEL_EXPORTER_CONTEXT_EVAL_RATINGS"),
        "pseudonymize": _list_env("OTEL_EXPORTER_CONTEXT_PSEUDONYMIZE"),
        "pseudonym_key": env("OTEL_EXPORTER_CONTEXT_PSEUDONYM_KEY"),
    }
    if resolved["pseudonymize"] and not resolved["pseudonym_key"] and not given.get("pseudonym_key"):
        _logger.warning(
            "otel-context: OTEL_EXPORTER_CONTEXT_PSEUDONYMIZE is set without OTEL_EXPORTER_CONTEXT_PSEUDONYM_KEY; "
            "the values it names are redacted instead"
        )
    if isinstance(given.get("pseudonymize"), str):
        given["pseudonymize"] = _split(given["pseudonymize"])  # type: ignore[arg-type]
    elif given.get("pseudonymize") is not None:
        given["pseudonymize"] = tuple(given["pseudonymize"])  # type: ignore[arg-type]
    if given.get("pseudonymize") and not (given.get("pseudonym_key") or resolved["pseudonym_key"]):
        raise ConfigError("pseudonymize needs a secret: pseudonym_key= or OTEL_EXPORTER_CONTEXT_PSEUDONYM_KEY")
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
            resolved["model_aliases"] = _parse_aliases(aliases)
        except ValueError as error:
            raise ConfigError(f"model_aliases: {error}; expected name=model,name=model") from None
    elif aliases is not None:
        resolved["model_aliases"] = dict(aliases)  # type: ignore[call-overload]
    redact = given.pop("redact", None)
    if callable(redact):  # `redact=callable`: a hook applied after the built-in patterns
        resolved["redact_hook"] = redact
    elif redact is not None:
        resolved["redact"] = _split(redact) if isinstance(redact, str) else tuple(redact)  # type: ignore[arg-type]
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
        raise ConfigError(f"OTEL_EXPORTER_CONTEXT_SAMPLE_RATIO must be between 0 and 1, got {settings.sample_ratio}")
    from .preparation.redaction import PATTERNS

    unknown = sorted(set(settings.redact) - set(PATTERNS) - {"all"})
    if unknown:
        raise ConfigError(
            f"OTEL_EXPORTER_CONTEXT_REDACT names unknown pattern(s) {', '.join(unknown)}; "
            f"choose from {', '.join(PATTERNS)} or all"
        )
    for name in ("timeout_s", "max_pending_traces", "queue_size", "concurrency"):
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
    token_file = given.pop("token_file", None) or env("OTEL_CONTEXT_SERVE_TOKEN_FILE")
    grpc_port = _int_env("OTEL_CONTEXT_SERVE_GRPC_PORT", 4320, minimum=-1)
    resolved: dict[str, Any] = {
        "host": env("OTEL_CONTEXT_SERVE_HOST") or "127.0.0.1",
        "port": _int_env("OTEL_CONTEXT_SERVE_PORT", 4319, minimum=0),
        "grpc_port": grpc_port if grpc_port >= 0 else None,
        "token": env("OTEL_CONTEXT_SERVE_TOKEN"),
        "max_spans": _int_env("OTEL_CONTEXT_SERVE_MAX_SPANS", 65_536),
        "max_attributes": _int_env("OTEL_CONTEXT_SERVE_MAX_ATTRIBUTES", 524_288),
        "max_in_progress": _int_env("OTEL_CONTEXT_SERVE_MAX_IN_PROGRESS", 4),
        "max_connections": _int_env("OTEL_CONTEXT_SERVE_MAX_CONNECTIONS", 1000),
        "header_timeout_s": _int_env("OTEL_CONTEXT_SERVE_HEADER_TIMEOUT", 10_000) / 1000,
        "body_timeout_s": _int_env("OTEL_CONTEXT_SERVE_BODY_TIMEOUT", 30_000) / 1000,
        "max_body_bytes": _int_env("OTEL_CONTEXT_SERVE_MAX_BODY_BYTES", 16 * 1024 * 1024),
        "max_decompressed_bytes": _int_env("OTEL_CONTEXT_SERVE_MAX_DECOMPRESSED_BYTES", 64 * 1024 * 1024),
        "settle_s": _int_env("OTEL_CONTEXT_SERVE_SETTLE", 2000, minimum=0) / 1000,
        "state_dir": env("OTEL_CONTEXT_SERVE_STATE_DIR") or "otel-context-state",
    }
    resolved.update(given)
    if token_file and not given.get("token"):
        resolved["token"] = read_token_file(str(token_file))
    if resolved.get("grpc_port") is not None and int(resolved["grpc_port"]) < 0:
        resolved["grpc_port"] = None
    return ReceiverSettings(**resolved)
