"""Every environment variable of otel-context, one constant each, as the OTel SDK's `environment_variables`.

Modules read variables through these names (`config.read_env`), never through string literals, and the
settings tables of docs/configuration.md list exactly these names (a test compares them). Durations are
milliseconds, as the OTel specification defines timeouts; an empty variable counts as unset; a malformed value
logs one warning and the default is used (the defaults themselves live in `config`). OTel's own variables
(`OTEL_TRACES_EXPORTER`, ...) are named by OTel's modules. This module imports nothing, so every part of the
package may import it; `startup` does not all the same, to load nothing but `os` in every interpreter.
"""

# The exporter: `ContextSpanExporter(...)`, `OTEL_TRACES_EXPORTER=context`, and the sidecar's delivery.

OTEL_EXPORTER_CONTEXT_TOKEN = "OTEL_EXPORTER_CONTEXT_TOKEN"
"""Context API token (never logged); else `CONTEXT_API_TOKEN`, else `CONTEXT_TOKEN`. Default: none."""

CONTEXT_API_TOKEN = "CONTEXT_API_TOKEN"
"""Context API token, read when `OTEL_EXPORTER_CONTEXT_TOKEN` is unset. Default: none."""

CONTEXT_TOKEN = "CONTEXT_TOKEN"
"""Context API token of the old `ContextCallbackHandler`, read last. Default: none."""

OTEL_EXPORTER_CONTEXT_ENDPOINT = "OTEL_EXPORTER_CONTEXT_ENDPOINT"
"""Context API base URL; plain http only on loopback or with `..._INSECURE`. Default: `https://api.context.ai`."""

OTEL_EXPORTER_CONTEXT_INSECURE = "OTEL_EXPORTER_CONTEXT_INSECURE"
"""Allow sending the token over plain http to a host that is not loopback. Default: false."""

OTEL_EXPORTER_CONTEXT_TIMEOUT = "OTEL_EXPORTER_CONTEXT_TIMEOUT"
"""Per-request timeout of an upload, in ms. Default: 10000."""

OTEL_EXPORTER_CONTEXT_TENANT_ID = "OTEL_EXPORTER_CONTEXT_TENANT_ID"
"""`tenant_id` query parameter of the upload. Default: none."""

OTEL_EXPORTER_CONTEXT_MAX_PENDING_TRACES = "OTEL_EXPORTER_CONTEXT_MAX_PENDING_TRACES"
"""Traces held while their root is awaited; the oldest beyond it are evicted. Default: 10000."""

OTEL_EXPORTER_CONTEXT_PENDING_TTL = "OTEL_EXPORTER_CONTEXT_PENDING_TTL"
"""Age (ms) after which a held trace without its root is evicted. Default: 600000."""

OTEL_EXPORTER_CONTEXT_MAX_SPANS_PER_TRACE = "OTEL_EXPORTER_CONTEXT_MAX_SPANS_PER_TRACE"
"""Spans held for one trace while its root is awaited; the oldest beyond it are evicted. Default: 10000."""

OTEL_EXPORTER_CONTEXT_MAX_MESSAGE_CHARS = "OTEL_EXPORTER_CONTEXT_MAX_MESSAGE_CHARS"
"""Longest message text; longer text is cut with a marker. Default: 65536."""

OTEL_EXPORTER_CONTEXT_QUEUE_SIZE = "OTEL_EXPORTER_CONTEXT_QUEUE_SIZE"
"""Threads waiting for upload in memory. Default: 10000."""

OTEL_EXPORTER_CONTEXT_CONCURRENCY = "OTEL_EXPORTER_CONTEXT_CONCURRENCY"
"""Upload workers. Default: 4."""

OTEL_EXPORTER_CONTEXT_BATCH_SIZE = "OTEL_EXPORTER_CONTEXT_BATCH_SIZE"
"""Uploads a worker takes from the queue at once (sent one after another on its connection, each awaiting
its answer: appends are never pipelined). Default: 32."""

OTEL_EXPORTER_CONTEXT_AT_LEAST_ONCE = "OTEL_EXPORTER_CONTEXT_AT_LEAST_ONCE"
"""`true`: an upload whose earlier try may have been stored is sent again without reading the thread back
first (it may then be stored twice). Default: false (read back; never sent twice)."""

OTEL_EXPORTER_CONTEXT_MAX_ELAPSED = "OTEL_EXPORTER_CONTEXT_MAX_ELAPSED"
"""Total time (ms) spent retrying one thread. Default: 300000."""

OTEL_EXPORTER_CONTEXT_RETRY_INITIAL_BACKOFF = "OTEL_EXPORTER_CONTEXT_RETRY_INITIAL_BACKOFF"
"""First retry delay (ms), doubled at each retry. Default: 500."""

OTEL_EXPORTER_CONTEXT_RETRY_MAX_BACKOFF = "OTEL_EXPORTER_CONTEXT_RETRY_MAX_BACKOFF"
"""Longest delay (ms) between two tries; a longer `Retry-After` wins. Default: 30000."""

OTEL_EXPORTER_CONTEXT_SPOOL_DIR = "OTEL_EXPORTER_CONTEXT_SPOOL_DIR"
"""Directory of the durable spool (SQLite). Default: none, threads live in memory."""

OTEL_EXPORTER_CONTEXT_SPOOL_MAX_BYTES = "OTEL_EXPORTER_CONTEXT_SPOOL_MAX_BYTES"
"""Size bound of the spool directory, shared by the processes using it. Default: 268435456."""

OTEL_EXPORTER_CONTEXT_SPOOL_RETRY_INTERVAL = "OTEL_EXPORTER_CONTEXT_SPOOL_RETRY_INTERVAL"
"""How long (ms) a spooled thread whose retries ran out waits before it is tried again (sooner when another
upload succeeds). Default: 30000."""

OTEL_EXPORTER_CONTEXT_SHUTDOWN_TIMEOUT = "OTEL_EXPORTER_CONTEXT_SHUTDOWN_TIMEOUT"
"""Longest time (ms) `shutdown()` spends delivering what is queued. Default: 5000."""

OTEL_EXPORTER_CONTEXT_DELIVERY = "OTEL_EXPORTER_CONTEXT_DELIVERY"
"""Where uploads run: `thread` (workers in the app's process) or `process` (a helper process). Default: thread."""

OTEL_EXPORTER_CONTEXT_ROOT_WAIT = "OTEL_EXPORTER_CONTEXT_ROOT_WAIT"
"""How long (ms) a span that may or may not be a root waits for its parent. Default: 10000."""

OTEL_EXPORTER_CONTEXT_INCLUDE_TOOLS = "OTEL_EXPORTER_CONTEXT_INCLUDE_TOOLS"
"""Add a chain's tool runs as `type: tool` messages. Default: false."""

OTEL_EXPORTER_CONTEXT_REDACT = "OTEL_EXPORTER_CONTEXT_REDACT"
"""Built-in redaction patterns: `email`, `phone`, `card`, `api_key`, or `all`. Default: none."""

OTEL_EXPORTER_CONTEXT_INCLUDE_WORKFLOWS = "OTEL_EXPORTER_CONTEXT_INCLUDE_WORKFLOWS"
"""Comma-separated shell patterns: only chains of these names are sent. Default: all."""

OTEL_EXPORTER_CONTEXT_EXCLUDE_WORKFLOWS = "OTEL_EXPORTER_CONTEXT_EXCLUDE_WORKFLOWS"
"""Comma-separated shell patterns: chains of these names are not sent. Default: none."""

OTEL_EXPORTER_CONTEXT_SAMPLE_RATIO = "OTEL_EXPORTER_CONTEXT_SAMPLE_RATIO"
"""Share of threads sent, decided per session (or trace). Default: 1.0."""

OTEL_EXPORTER_CONTEXT_ASSOCIATION_PREFIX = "OTEL_EXPORTER_CONTEXT_ASSOCIATION_PREFIX"
"""The instrumentation's metadata attribute prefix. Default: `traceloop.association.properties.`."""

OTEL_EXPORTER_CONTEXT_SESSIONS = "OTEL_EXPORTER_CONTEXT_SESSIONS"
"""Fold the turns of a session into one thread. Default: true."""

OTEL_EXPORTER_CONTEXT_SESSION_DB = "OTEL_EXPORTER_CONTEXT_SESSION_DB"
"""The session book: a SQLite file or a `redis://` URL. Default: in memory, or beside the spool."""

OTEL_EXPORTER_CONTEXT_SESSION_TTL = "OTEL_EXPORTER_CONTEXT_SESSION_TTL"
"""A session idle this long (ms) is forgotten. Default: 86400000."""

OTEL_EXPORTER_CONTEXT_SESSION_MAX_TURNS = "OTEL_EXPORTER_CONTEXT_SESSION_MAX_TURNS"
"""Turns per thread; the session continues in a new thread part. Default: 200."""

OTEL_EXPORTER_CONTEXT_MODEL_ALIASES = "OTEL_EXPORTER_CONTEXT_MODEL_ALIASES"
"""Comma-separated `name=model`: names priced as a known model. Default: none."""

OTEL_EXPORTER_CONTEXT_EVAL_RATINGS = "OTEL_EXPORTER_CONTEXT_EVAL_RATINGS"
"""Rules turning evaluation results into ratings (`relevance>=0.7`, `verdict:good=1,bad=-1`). Default: none."""

OTEL_EXPORTER_CONTEXT_PSEUDONYMIZE = "OTEL_EXPORTER_CONTEXT_PSEUDONYMIZE"
"""Metadata keys and built-in patterns replaced by keyed pseudonyms. Default: none."""

OTEL_EXPORTER_CONTEXT_PSEUDONYM_KEY = "OTEL_EXPORTER_CONTEXT_PSEUDONYM_KEY"
"""HMAC secret of the pseudonyms (never logged); without it the values are redacted. Default: none."""

# The sidecar: `otel-context serve` (its flags win).

OTEL_CONTEXT_SERVE_HOST = "OTEL_CONTEXT_SERVE_HOST"
"""Listen address (`--host`). Default: 127.0.0.1."""

OTEL_CONTEXT_SERVE_PORT = "OTEL_CONTEXT_SERVE_PORT"
"""OTLP/HTTP port (`--port`). Default: 4319."""

OTEL_CONTEXT_SERVE_GRPC_PORT = "OTEL_CONTEXT_SERVE_GRPC_PORT"
"""OTLP/gRPC port (`--grpc-port`), -1 for none. Default: 4320."""

OTEL_CONTEXT_SERVE_TOKEN = "OTEL_CONTEXT_SERVE_TOKEN"
"""Bearer token the Collector must send (`--token`). Default: none, no token required."""

OTEL_CONTEXT_SERVE_TOKEN_FILE = "OTEL_CONTEXT_SERVE_TOKEN_FILE"
"""File whose content is that bearer token (`--token-file`). Default: none."""

OTEL_CONTEXT_SERVE_MAX_BODY_BYTES = "OTEL_CONTEXT_SERVE_MAX_BODY_BYTES"
"""Largest request body (`--max-body-bytes`). Default: 16777216."""

OTEL_CONTEXT_SERVE_MAX_DECOMPRESSED_BYTES = "OTEL_CONTEXT_SERVE_MAX_DECOMPRESSED_BYTES"
"""Largest decompressed request body, also gRPC's message limit. Default: 67108864."""

OTEL_CONTEXT_SERVE_MAX_SPANS = "OTEL_CONTEXT_SERVE_MAX_SPANS"
"""Most spans (and ResourceSpans, ScopeSpans, events, links) in one request. Default: 65536."""

OTEL_CONTEXT_SERVE_MAX_ATTRIBUTES = "OTEL_CONTEXT_SERVE_MAX_ATTRIBUTES"
"""Most attributes and array values in one request. Default: 524288."""

OTEL_CONTEXT_SERVE_MAX_IN_PROGRESS = "OTEL_CONTEXT_SERVE_MAX_IN_PROGRESS"
"""Requests decoding at once per process; beyond, 503 / UNAVAILABLE. Default: 4."""

OTEL_CONTEXT_SERVE_MAX_CONNECTIONS = "OTEL_CONTEXT_SERVE_MAX_CONNECTIONS"
"""Open HTTP connections per process, lowered to the open-files limit. Default: 1000."""

OTEL_CONTEXT_SERVE_HEADER_TIMEOUT = "OTEL_CONTEXT_SERVE_HEADER_TIMEOUT"
"""Time (ms) to send complete request headers; also the idle keep-alive time. Default: 10000."""

OTEL_CONTEXT_SERVE_BODY_TIMEOUT = "OTEL_CONTEXT_SERVE_BODY_TIMEOUT"
"""Time (ms) to send a request body. Default: 30000."""

OTEL_CONTEXT_SERVE_SETTLE = "OTEL_CONTEXT_SERVE_SETTLE"
"""How long (ms) a root waits for late spans (`--settle-ms`). Default: 2000."""

OTEL_CONTEXT_SERVE_STATE_DIR = "OTEL_CONTEXT_SERVE_STATE_DIR"
"""Where sessions are kept (`--state-dir`). Default: `otel-context-state`."""

OTEL_CONTEXT_SERVE_WORKERS = "OTEL_CONTEXT_SERVE_WORKERS"
"""Worker processes sharing the ports, spool and sessions (`--workers`). Default: 1."""

OTEL_CONTEXT_SERVE_TRACE_ROUTING = "OTEL_CONTEXT_SERVE_TRACE_ROUTING"
"""With several workers, send each trace's spans to the worker owning its trace id. Default: true."""

OTEL_CONTEXT_SERVE_WORKER = "OTEL_CONTEXT_SERVE_WORKER"
"""Not a setting: set by the supervisor of `--workers` for each worker (`<index>:<ready fd>:<count>:<dir>`)."""

# The local Context API: `otel-context local-api` (its flags win).

OTEL_CONTEXT_LOCAL_API_TOKEN = "OTEL_CONTEXT_LOCAL_API_TOKEN"
"""Bearer token the local API requires (`--token`). Default: none, no auth."""

OTEL_CONTEXT_LOCAL_API_TOKEN_FILE = "OTEL_CONTEXT_LOCAL_API_TOKEN_FILE"
"""File whose content is that bearer token (`--token-file`); wins over the token variable. Default: none."""
