"""The `otel-context` command: demo, local-api, serve, stats, convert."""

from __future__ import annotations

import argparse
import json
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-context", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run a small LangChain app and show the threads it becomes")
    demo.set_defaults(func=_demo)

    from .local_api import cli as local_api_cli

    local = commands.add_parser("local-api", help="run the local Context-compatible API (SQLite)")
    local_api_cli.add_arguments(local)
    local.set_defaults(func=local_api_cli.main)

    convert = commands.add_parser("convert", help="print the threads that span dumps (to_json) convert to")
    convert.add_argument("files", nargs="+")
    convert.set_defaults(func=_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
