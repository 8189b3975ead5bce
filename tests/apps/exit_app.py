"""Runs a few chains and exits, leaving the upload to the SDK's shutdown at exit (atexit)."""

from __future__ import annotations

import sys

from tests.apps.common import chain, setup

provider, exporter = setup()
for n in range(int(sys.argv[1])):
    chain(f"answer {n}").invoke({"question": f"question {n}"})
provider.force_flush(50)  # hand the spans over; the threads are queued, the API cannot be reached
print("ran", flush=True)
