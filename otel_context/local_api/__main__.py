"""`python -m otel_context.local_api`: the local Context API without the main CLI."""

from __future__ import annotations

import sys

from .cli import build_parser, main

if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
