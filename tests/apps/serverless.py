"""A serverless handler loop: invoke, then `provider.force_flush()`, as AWS Lambda code does before it freezes.

After each flush it reads the API back and prints how many of its runs are stored. Every other round
waits first, so the processor's worker exports the spans itself and the flush finds its queue empty.
"""

from __future__ import annotations

import os
import sys
import time

from tests.apps.common import chain, setup, stored_questions

rounds = int(sys.argv[1])
provider, exporter = setup(schedule_delay_millis=20)
endpoint, token = os.environ["OTEL_EXPORTER_CONTEXT_ENDPOINT"], os.environ["OTEL_EXPORTER_CONTEXT_TOKEN"]
for n in range(rounds):
    chain(f"answer {n}").invoke({"question": f"question {n}"})
    if n % 2:
        time.sleep(0.1)  # the worker exports first; the flush then holds no spans of its own
    started = time.perf_counter()
    flushed = provider.force_flush(10_000)
    took = time.perf_counter() - started
    stored = stored_questions(endpoint, token)
    print(n, flushed, f"question {n}" in stored, len(stored), f"{took:.3f}", flush=True)
provider.shutdown()
