"""The `otel-context` command: demo, local-api, serve, stats, threads, convert.

Expected failures (a port in use, a sidecar that wants a token, nothing listening, a missing file, an
extra that is not installed) end in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import socket
import sys
from typing import Any

from .environment_variables import (
    CONTEXT_API_TOKEN,
    OTEL_CONTEXT_SERVE_HOST,
    OTEL_CONTEXT_SERVE_PORT,
    OTEL_CONTEXT_SERVE_TOKEN,
    OTEL_CONTEXT_SERVE_TOKEN_FILE,
    OTEL_CONTEXT_SERVE_WORKER,
    OTEL_CONTEXT_SERVE_WORKERS,
    OTEL_EXPORTER_CONTEXT_ENDPOINT,
    OTEL_EXPORTER_CONTEXT_SPOOL_DIR,
    OTEL_EXPORTER_CONTEXT_TOKEN,
)
from .extras import MissingExtra, require


class CommandError(Exception):
    """A failure the user can fix: printed as one line, exit status 1."""


def _demo(args: argparse.Namespace) -> int:
    from .demo import main

    return main()


def _convert(args: argparse.Namespace) -> int:
    """Dev tool: what threads would these spans (a `ReadableSpan.to_json()` dump) become?"""
    from .assembly.trace_buffer import TraceBuffer
    from .spans.sdk_json import load_json_file

    buffer = TraceBuffer()
    threads = []
    for path in args.files:
        try:
            spans = load_json_file(path)
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
        except ValueError as exc:  # JSON or span format
            raise CommandError(f"{path} is not a span dump (ReadableSpan.to_json() objects): {exc}") from None
        threads += buffer.add(spans)
    threads += buffer.drain()
    json.dump([t.to_wire() for t in threads], sys.stdout, ensure_ascii=False, indent=2)
    print()
    return 0


# Options of `serve` that its workers do not get as given: the supervisor gives each worker its own
# ports and `--workers 1`, and hands over the token it resolved in their environment (see below).
# Every other option reaches every worker as it was given (`worker_arguments`).
SUPERVISOR_ONLY = frozenset({"port", "grpc_port", "workers"})
SECRET_OPTIONS = frozenset({"token", "token_file"})


def _serve(args: argparse.Namespace) -> int:
    require("sidecar", "otel-context serve")
    from .config import ConfigError, integer, read_env, resolve_receiver_settings, resolve_settings
    from .private_files import NotPrivate, private_directory
    from .receiver.service import run

    workers = args.workers if args.workers is not None else read_env(OTEL_CONTEXT_SERVE_WORKERS, integer(), 1)
    if workers < 1:
        print("otel-context serve: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        receiver = resolve_receiver_settings(
            host=args.host,
            port=args.port,
            grpc_port=args.grpc_port,
            token=args.token,
            token_file=args.token_file,
            max_body_bytes=args.max_body_bytes,
            settle_s=args.settle_ms / 1000 if args.settle_ms is not None else None,
            state_dir=args.state_dir,
        )
        delivery = resolve_settings(endpoint=args.endpoint, spool_dir=args.spool_dir)
    except ConfigError as error:  # e.g. a token file that cannot be read
        print(f"otel-context serve: {error}", file=sys.stderr)
        return 2
    # Checked before anything starts, so a port in use leaves no state directory behind (by the
    # supervisor of --workers; its workers share the ports on purpose).
    if not os.environ.get(OTEL_CONTEXT_SERVE_WORKER):
        _check_port_free(receiver.host, receiver.port, "OTLP/HTTP", "--port")
        if receiver.grpc_port is not None:
            _check_port_free(receiver.host, receiver.grpc_port, "OTLP/gRPC", "--grpc-port")
    if workers > 1:
        hand_token_to_workers(receiver.token)
    state_dir = receiver.state_dir if delivery.sessions and not delivery.session_db else None
    try:
        for directory in (delivery.spool_dir, state_dir):  # made 0700, or refused: before anything starts
            if directory:
                private_directory(directory)
        return run(receiver, delivery, workers=workers, worker_args=worker_arguments(args))
    except NotPrivate as error:  # another user owns or may write it, or a database is a symlink: never used
        raise CommandError(str(error)) from None
    except ConfigError as error:  # e.g. a redis:// session store without the redis client
        print(f"otel-context serve: {error}", file=sys.stderr)
        return 2
    except OSError as exc:  # lost a race for the port, or the state directory is not writable
        raise CommandError(f"cannot serve on {receiver.host}:{receiver.port}: {exc.strerror or exc}") from None


def worker_arguments(args: argparse.Namespace) -> list[str]:
    """The options given to `serve`, for each of its workers: derived from the parser, so a new option
    reaches the workers without a list to keep up to date (an option missing there was an auth bypass)."""
    out: list[str] = []
    for action in args.serve_options:
        value = getattr(args, action.dest)
        if action.dest in SUPERVISOR_ONLY | SECRET_OPTIONS or value is None or value == action.default:
            continue
        option = action.option_strings[-1]
        if action.nargs == 0:  # a flag
            out.append(option)
        elif isinstance(value, list):
            out += [option, *map(str, value)]
        else:
            out += [option, str(value)]
    return out


def hand_token_to_workers(token: str | None) -> None:
    """The token the supervisor resolved (flag, file or variable), for its workers: in the environment
    they inherit (readable by this user only), never on their command lines, which `ps` shows to all."""
    os.environ.pop(OTEL_CONTEXT_SERVE_TOKEN_FILE, None)  # read once, here: a worker uses the same token
    if token:
        os.environ[OTEL_CONTEXT_SERVE_TOKEN] = token
    else:
        os.environ.pop(OTEL_CONTEXT_SERVE_TOKEN, None)


def _check_port_free(host: str, port: int, what: str, flag: str) -> None:
    if not port:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CommandError(f"cannot listen on {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError as exc:
            raise CommandError(
                f"cannot listen on {host}:{port} ({what}): {exc.strerror or exc}; choose another with {flag}"
            ) from None


def _stats(args: argparse.Namespace) -> int:
    """Counters of a running sidecar (`--url`), or what waits in a spool directory (`--spool`)."""
    if args.spool:
        from .delivery.spool import SPOOL_FILE, backlog

        path = os.path.join(args.spool, SPOOL_FILE)
        if not os.path.exists(path):
            print(f"no spool at {path}", file=sys.stderr)
            return 1
        threads, size = backlog(args.spool)
        print(json.dumps({"spool": path, "threads": threads, "bytes": size}))
        return 0
    import urllib.error
    import urllib.request

    from .config import env

    url = args.url.rstrip("/") + "/stats"
    request = urllib.request.Request(url)
    token = args.token or env(OTEL_CONTEXT_SERVE_TOKEN)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            counters = json.load(response)
    except urllib.error.HTTPError as exc:
        hint = f" (the sidecar requires a token: --token or ${OTEL_CONTEXT_SERVE_TOKEN})" if exc.code == 401 else ""
        raise CommandError(f"{url}: HTTP {exc.code} {exc.reason}{hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        reason = getattr(reason, "strerror", None) or reason
        raise CommandError(f"cannot reach {url}: {reason} (is `otel-context serve` running there?)") from None
    except ValueError:
        raise CommandError(f"{url} did not answer JSON: is it an otel-context sidecar?") from None
    print(json.dumps(counters, indent=2))
    return 0


_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: dt.datetime | None = None) -> str:
    """`--since`: ISO 8601 (a date or a time) or a duration back from now (`30m`, `2h`, `7d`), as ISO 8601 UTC."""
    now = now or dt.datetime.now(dt.timezone.utc)
    match = _RELATIVE.match(text.strip())
    if match:
        moment = now - dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    else:
        try:
            moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise CommandError(
                f"--since {text!r}: expected ISO 8601 (2026-01-31, 2026-01-31T09:00Z) or 30m/2h/7d"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _threads(args: argparse.Namespace) -> int:
    """List threads (`--user`, `--session`, `--since`) or show one, from any Context-compatible API."""
    from urllib.parse import urlparse

    from azure.core.exceptions import (
        AzureError,
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
    )
    from getcontext import ContextAPI
    from getcontext.token import Credential

    from .config import DEFAULT_ENDPOINT, env, resolve_token

    endpoint = (args.endpoint or env(OTEL_EXPORTER_CONTEXT_ENDPOINT) or DEFAULT_ENDPOINT).rstrip("/")
    token = resolve_token(args.token)
    plain = urlparse(endpoint).scheme == "http"  # the local API: context-python refuses a token over http otherwise
    client = ContextAPI(credential=Credential(token or ""), endpoint=endpoint, retry_total=0)
    try:
        if args.id:
            threads = [client.conversation(args.id, enforce_https=not plain, cls=_raw_json)]
        else:
            threads = _list_threads(client, args, plain)
    except ClientAuthenticationError:
        hint = f"a token is needed: --token or ${CONTEXT_API_TOKEN}" if not token else "the token was refused"
        raise CommandError(f"{endpoint}: HTTP 401, {hint}") from None
    except ResourceNotFoundError:
        raise CommandError(f"{endpoint}: no thread {args.id}" if args.id else f"{endpoint}: HTTP 404") from None
    except ServiceRequestError as exc:
        raise CommandError(f"cannot reach {endpoint}: {_first_line(exc)}") from None
    except HttpResponseError as exc:
        raise CommandError(f"{endpoint}: HTTP {exc.status_code} {_first_line(exc)}") from None
    except AzureError as exc:  # a timeout or a reset while reading the answer
        raise CommandError(f"{endpoint}: {_first_line(exc)}") from None
    finally:
        client.close()
    if args.json:
        json.dump(threads[0] if args.id else threads, sys.stdout, ensure_ascii=False, indent=2)
        print()
    elif args.id:
        _print_thread(threads[0])
    else:
        _print_table(threads)
    return 0


def _list_threads(client: Any, args: argparse.Namespace, plain: bool) -> list[dict[str, Any]]:
    """Pages until `--limit` threads match; user and session are matched on the thread's metadata."""
    since = parse_since(args.since) if args.since else None
    wanted = {"user_id": args.user, "session_id": args.session}
    found: list[dict[str, Any]] = []
    page = 1
    while len(found) < args.limit:
        listing = client.conversations(
            start_time=since, page=page, per_page=100, enforce_https=not plain, cls=_raw_json
        )
        for thread in listing.get("conversations") or []:
            metadata = thread.get("metadata") or {}
            if all(value is None or str(metadata.get(key)) == value for key, value in wanted.items()):
                found.append(thread)
        next_page = (listing.get("pagination") or {}).get("next_page")
        if not next_page or next_page <= page:
            break
        page = next_page
    return found[: args.limit]


def _raw_json(pipeline_response: Any, deserialized: object, headers: object) -> Any:
    """The body as the API sent it: `context-python`'s models drop fields they do not know (tool steps)."""
    return pipeline_response.http_response.json()


def _first_line(exc: BaseException) -> str:
    """The useful part of a transport error: `[Errno 111] Connection refused` rather than urllib3's preamble."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return line[line.index("[Errno") :] if "[Errno" in line else line


def _shorten(text: object, width: int) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _print_table(threads: list[dict[str, Any]]) -> None:
    if not threads:
        print("no threads")
        return
    print(f"{'id':<36}  {'started':<19}  {'user':<12}  {'session':<14}  {'msgs':>4}  first message")
    for thread in threads:
        metadata = thread.get("metadata") or {}
        messages = thread.get("messages") or []
        first = next((m.get("message") for m in messages if m.get("role") == "user"), None)
        started = (metadata.get("started_at") or thread.get("created_at") or "")[:19]
        print(
            f"{thread.get('id', ''):<36}  {started:<19}  {_shorten(metadata.get('user_id'), 12):<12}  "
            f"{_shorten(metadata.get('session_id'), 14):<14}  {len(messages):>4}  {_shorten(first, 50)}"
        )


def _print_thread(thread: dict[str, Any]) -> None:
    print(f"thread {thread.get('id')}")
    for message in thread.get("messages") or []:
        kind = message.get("type") or "message"
        label = message.get("role") if kind == "message" else kind
        text = message.get("message")
        if kind == "tool":
            text = f"{message.get('name')}({message.get('input')}) -> {message.get('observation')}"
        print(f"  {label or '':<10} {text}")
    metadata = thread.get("metadata") or {}
    for key in sorted(metadata):
        print(f"  {key + ':':<16} {metadata[key]}")


def _see(page: str) -> str:
    """The page of docs/ that explains a command (tests/unit/test_docs_links.py checks it exists)."""
    return f"Explained in docs/{page}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-context",
        description=__doc__.split("\n\n")[0],
        epilog="Docs: README.md, then docs/ (every setting: docs/configuration.md).",
    )
    parser.add_argument("--version", action="version", version=f"otel-context {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="run a small LangChain app and show the threads it becomes", epilog=_see("threads.md")
    )
    demo.set_defaults(func=_demo)

    from .local_api import cli as local_api_cli

    local = commands.add_parser(
        "local-api", help="run the local Context-compatible API (SQLite)", epilog=_see("local-api.md")
    )
    local_api_cli.add_arguments(local)
    local.set_defaults(func=local_api_cli.main)

    serve = commands.add_parser(
        "serve", help="the Collector sidecar: receive OTLP, deliver threads to Context", epilog=_see("sidecar.md")
    )
    serve.set_defaults(func=_serve, serve_options=_add_serve_options(serve))

    stats = commands.add_parser(
        "stats",
        help="show delivery counters of a running sidecar, or a spool's backlog",
        epilog=_see("delivery.md#counters"),
    )
    stats.add_argument("--url", default="http://127.0.0.1:4319", help="the sidecar's HTTP address")
    stats.add_argument("--token", help=f"bearer token the sidecar requires (default: ${OTEL_CONTEXT_SERVE_TOKEN})")
    stats.add_argument("--spool", help=f"a spool directory ({OTEL_EXPORTER_CONTEXT_SPOOL_DIR}) to inspect instead")
    stats.set_defaults(func=_stats)

    threads = commands.add_parser(
        "threads",
        help="list threads, or show one, from a Context-compatible API (Context, the local API)",
        epilog=_see("local-api.md#reading-threads-back"),
    )
    threads.add_argument("id", nargs="?", help="show this thread (default: list threads)")
    threads.add_argument("--endpoint", help=f"API base URL (${OTEL_EXPORTER_CONTEXT_ENDPOINT}, else Context)")
    threads.add_argument("--token", help=f"API token (default: ${OTEL_EXPORTER_CONTEXT_TOKEN}, ${CONTEXT_API_TOKEN})")
    threads.add_argument("--user", help="only threads whose user_id is this")
    threads.add_argument("--session", help="only threads whose session_id is this")
    threads.add_argument("--since", help="only threads after this: ISO 8601, or 30m, 2h, 7d back from now")
    threads.add_argument("--limit", type=int, default=50, help="list at most this many (default 50)")
    threads.add_argument("--json", action="store_true", help="print JSON (the API's own shape) instead of a table")
    threads.set_defaults(func=_threads)

    convert = commands.add_parser(
        "convert", help="print the threads that span dumps (to_json) convert to", epilog=_see("threads.md")
    )
    convert.add_argument("files", nargs="+")
    convert.set_defaults(func=_convert)
    return parser


def _add_serve_options(serve: argparse.ArgumentParser) -> tuple[argparse.Action, ...]:
    """`serve`'s options; the workers of `--workers` get every one of them (`worker_arguments`)."""
    return (
        serve.add_argument("--host", help=f"listen address (default 127.0.0.1; ${OTEL_CONTEXT_SERVE_HOST})"),
        serve.add_argument("--port", type=int, help=f"OTLP/HTTP port (default 4319; ${OTEL_CONTEXT_SERVE_PORT})"),
        serve.add_argument("--grpc-port", type=int, help="OTLP/gRPC port, -1 for none (default 4320)"),
        serve.add_argument(
            "--token", help=f"bearer token the Collector must send (${OTEL_CONTEXT_SERVE_TOKEN}, shown by ps)"
        ),
        serve.add_argument(
            "--token-file", help=f"read the bearer token from this file (${OTEL_CONTEXT_SERVE_TOKEN_FILE})"
        ),
        serve.add_argument("--max-body-bytes", type=int, help="request size limit (default 16 MiB)"),
        serve.add_argument("--settle-ms", type=int, help="how long a root waits for late spans (default 2000)"),
        serve.add_argument("--state-dir", help="where sessions are kept (default ./otel-context-state)"),
        serve.add_argument("--endpoint", help=f"Context API (${OTEL_EXPORTER_CONTEXT_ENDPOINT})"),
        serve.add_argument("--spool-dir", help=f"durable spool (${OTEL_EXPORTER_CONTEXT_SPOOL_DIR})"),
        serve.add_argument(
            "--workers",
            type=int,
            help=f"worker processes sharing the ports, spool and sessions (default 1; ${OTEL_CONTEXT_SERVE_WORKERS})",
        ),
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("otel-context")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CommandError as exc:
        print(f"otel-context {args.command}: {exc}", file=sys.stderr)
        return 1
    except MissingExtra as exc:  # its message names the command, the extra and the pip command
        print(exc, file=sys.stderr)
        return 1
    except BrokenPipeError:  # `otel-context demo | head`: the reader left; stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
