"""`otel-context local-api`: the local Context API in the foreground, for demos and end-to-end tests.

Only argument wiring lives here (`add_arguments`, `main`), so the main CLI can mount it as a subcommand and
`python -m otel_context.local_api` can run it alone.
"""

from __future__ import annotations

import argparse

from .faults import FaultPlan, FaultSpecError
from .server import DEFAULT_HOST, DEFAULT_PORT, run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to listen on, 0 for any free one (default {DEFAULT_PORT})"
    )
    parser.add_argument("--db", default=":memory:", help="SQLite file keeping the threads (default: in memory)")
    parser.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' (default: no auth)")
    faults = parser.add_argument_group("fault injection (only /api routes)")
    faults.add_argument("--latency", type=float, default=None, metavar="S", help="delay every API answer by S seconds")
    faults.add_argument("--fail-status", type=int, default=None, metavar="CODE", help="answer every write with CODE")
    faults.add_argument("--fail-for", type=float, default=None, metavar="S", help="only for the first S seconds")
    faults.add_argument("--retry-after", type=float, default=None, metavar="S", help="Retry-After with 429/503")


def fault_plan(args: argparse.Namespace) -> FaultPlan:
    """The startup faults from the flags, through the same parser as `POST /_admin/faults`."""
    spec = {
        "latency_s": args.latency,
        "status": args.fail_status,
        "duration_s": args.fail_for,
        "retry_after": args.retry_after,
    }
    return FaultPlan.from_spec({k: v for k, v in spec.items() if v is not None})


def main(args: argparse.Namespace) -> int:
    try:
        faults = fault_plan(args)
    except FaultSpecError as exc:
        raise SystemExit(f"otel-context local-api: {exc}") from None
    try:
        run(host=args.host, port=args.port, db=args.db, token=args.token, faults=faults)
    except OSError as exc:  # port taken, address not local, database not writable
        raise SystemExit(
            f"otel-context local-api: cannot serve on {args.host}:{args.port} with {args.db}: {exc}"
        ) from None
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m otel_context.local_api", description="Run a local Context-compatible API."
    )
    add_arguments(parser)
    return parser
