"""Turns of one session, from this process: `sessions.py SESSION LABEL...`, each turn flushed.

With `--wait-for PATH`, it waits until PATH exists before starting (two live processes then take turns
at the same moment).
"""

from __future__ import annotations

import argparse
import os
import time

from tests.apps.common import chain, setup

parser = argparse.ArgumentParser()
parser.add_argument("session")
parser.add_argument("labels", nargs="+")
parser.add_argument("--wait-for")
args = parser.parse_args()
provider, exporter = setup(schedule_delay_millis=20)
if args.wait_for:
    while not os.path.exists(args.wait_for):
        time.sleep(0.005)
for label in args.labels:
    chain(f"answer {label}").invoke(
        {"question": f"question {label}"}, config={"metadata": {"session_id": args.session}}
    )
    provider.force_flush(10_000)
provider.shutdown()
print(exporter.stats()["threads_uploaded"], flush=True)
