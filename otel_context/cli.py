"""The `otel-context` command: demo, local-api, serve, stats, convert."""

from __future__ import annotations

import argparse
import json
import os
import sys


def _demo(args: argparse.Namespace) -> int:
    from .demo import main

    return main()


def _convert(args: argparse.Namespace) -> int:
    """Dev tool: what threads would these spans (a `ReadableSpan.to_json()` dump) become?"""
    from .assembly import TraceBuffer
    from .spans.sdk_json import load_json_file

    buffer = TraceBuffer()
    threads = []
    for path in args.files:
        threads += buffer.add(load_json_file(path))
    threads += buffer.drain()
    json.dump([t.to_wire() for t in threads], sys.stdout, ensure_ascii=False, indent=2)
    print()
    return 0


_WORKER_OPTIONS = ("host", "token", "max_body_bytes", "settle_ms", "state_dir", "endpoint", "spool_dir")


def _serve(args: argparse.Namespace) -> int:
    from .config import ConfigError, _int_env, resolve_receiver_settings, resolve_settings
    from .receiver.service import run

    workers = args.workers if args.workers is not None else _int_env("OTEL_CONTEXT_SERVE_WORKERS", 1)
    if workers < 1:
        print("otel-context serve: --workers must be at least 1", file=sys.stderr)
        return 2

    receiver = resolve_receiver_settings(
        host=args.host,
        port=args.port,
        grpc_port=args.grpc_port,
        token=args.token,
        max_body_bytes=args.max_body_bytes,
        settle_s=args.settle_ms / 1000 if args.settle_ms is not None else None,
        state_dir=args.state_dir,
    )
    delivery = resolve_settings(endpoint=args.endpoint, spool_dir=args.spool_dir)
    worker_args = []  # the options given here, for each worker of --workers (ports are the supervisor's)
    for name in _WORKER_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            worker_args += [f"--{name.replace('_', '-')}", str(value)]
    try:
        return run(receiver, delivery, workers=workers, worker_args=worker_args)
    except ConfigError as error:  # e.g. a redis:// session store without the redis client
        print(f"otel-context serve: {error}", file=sys.stderr)
        return 2


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
    import urllib.request

    request = urllib.request.Request(args.url.rstrip("/") + "/stats")
    token = args.token or os.environ.get("OTEL_CONTEXT_SERVE_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        print(json.dumps(json.load(response), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-context", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run a small LangChain app and show the threads it becomes")
    demo.set_defaults(func=_demo)

    from .local_api import cli as local_api_cli

    local = commands.add_parser("local-api", help="run the local Context-compatible API (SQLite)")
    local_api_cli.add_arguments(local)
    local.set_defaults(func=local_api_cli.main)

    serve = commands.add_parser("serve", help="the Collector sidecar: receive OTLP, deliver threads to Context")
    serve.add_argument("--host", help="listen address (default 127.0.0.1; $OTEL_CONTEXT_SERVE_HOST)")
    serve.add_argument("--port", type=int, help="OTLP/HTTP port (default 4319; $OTEL_CONTEXT_SERVE_PORT)")
    serve.add_argument("--grpc-port", type=int, help="OTLP/gRPC port, -1 for none (default 4320)")
    serve.add_argument("--token", help="bearer token the Collector must send ($OTEL_CONTEXT_SERVE_TOKEN)")
    serve.add_argument("--max-body-bytes", type=int, help="request size limit (default 16 MiB)")
    serve.add_argument("--settle-ms", type=int, help="how long a root waits for late spans (default 2000)")
    serve.add_argument("--state-dir", help="where sessions are kept (default ./otel-context-state)")
    serve.add_argument("--endpoint", help="Context API ($OTEL_EXPORTER_CONTEXT_ENDPOINT)")
    serve.add_argument("--spool-dir", help="durable spool ($OTEL_EXPORTER_CONTEXT_SPOOL_DIR)")
    serve.add_argument(
        "--workers",
        type=int,
        help="worker processes sharing the ports, spool and sessions (default 1; $OTEL_CONTEXT_SERVE_WORKERS)",
    )
    serve.set_defaults(func=_serve)

    stats = commands.add_parser("stats", help="show delivery counters of a running sidecar, or a spool's backlog")
    stats.add_argument("--url", default="http://127.0.0.1:4319", help="the sidecar's HTTP address")
    stats.add_argument("--token", help="bearer token the sidecar requires (default: $OTEL_CONTEXT_SERVE_TOKEN)")
    stats.add_argument("--spool", help="a spool directory (OTEL_EXPORTER_CONTEXT_SPOOL_DIR) to inspect instead")
    stats.set_defaults(func=_stats)

    convert = commands.add_parser("convert", help="print the threads that span dumps (to_json) convert to")
    convert.add_argument("files", nargs="+")
    convert.set_defaults(func=_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `otel-context demo | head`: the reader left; stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
