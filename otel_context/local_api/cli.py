"""`otel-context local-api`: the local Context API in the foreground, for demos and end-to-end tests.

Only argument wiring lives here (`add_arguments`, `main`), so the main CLI can mount it as a subcommand and
`python -m otel_context.local_api` can run it alone.
"""

from __future__ import annotations

import argparse

from ..config import ConfigError, env, read_token_file
from ..environment_variables import OTEL_CONTEXT_LOCAL_API_TOKEN, OTEL_CONTEXT_LOCAL_API_TOKEN_FILE
from ..extras import MissingExtra, require
from .defaults import DEFAULT_HOST, DEFAULT_PORT
from .faults import FaultPlan, FaultSpecError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to listen on, 0 for any free one (default {DEFAULT_PORT})"
    )
    parser.add_argument("--db", default=":memory:", help="SQLite file keeping the threads (default: in memory)")
    parser.add_argument(
        "--token",
        default=None,
        help=f"require 'Authorization: Bearer TOKEN' (default: ${OTEL_CONTEXT_LOCAL_API_TOKEN}, else no auth); "
        "visible in ps, prefer the variable or --token-file",
    )
    parser.add_argument(
        "--token-file", default=None, help=f"read the token from this file (${OTEL_CONTEXT_LOCAL_API_TOKEN_FILE})"
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests whose Host header is NAME (a container or host name); repeatable",
    )
    faults = parser.add_argument_group("fault injection (only /api routes)")
    faults.add_argument(
        "--fault-injection", action="store_true", help="serve POST /_admin/faults (implied by any flag below)"
    )
    faults.add_argument("--latency", type=float, default=None, metavar="S", help="delay every API answer by S seconds")
    faults.add_argument("--fail-status", type=int, default=None, metavar="CODE", help="answer every write with CODE")
    faults.add_argument("--fail-for", type=float, default=None, metavar="S", help="only for the first S seconds")
    faults.add_argument("--retry-after", type=float, default=None, metavar="S", help="Retry-After with 429/503")


def resolve_token(args: argparse.Namespace) -> str | None:
    """`--token`, else `--token-file`, else the variables: a token never needs to be on the command line."""
    if args.token:
        return str(args.token)
    path = args.token_file or env(OTEL_CONTEXT_LOCAL_API_TOKEN_FILE)
    if path:
        return read_token_file(path)
    token = env(OTEL_CONTEXT_LOCAL_API_TOKEN)
    return token.strip() if token else None


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
        require("local", "otel-context local-api")
    except MissingExtra as exc:
        raise SystemExit(str(exc)) from None
    from .server import run

    try:
        faults = fault_plan(args)
        token = resolve_token(args)
    except (FaultSpecError, ConfigError) as exc:
        raise SystemExit(f"otel-context local-api: {exc}") from None
    injecting = args.fault_injection or any(
        value is not None for value in (args.latency, args.fail_status, args.fail_for, args.retry_after)
    )
    try:
        run(
            host=args.host,
            port=args.port,
            db=args.db,
            token=token,
            faults=faults,
            fault_injection=injecting,
            allowed_hosts=tuple(args.allow_host),
        )
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
