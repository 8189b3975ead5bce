"""`os.fork()` after the exporter has worked: the child delivers its own runs, the parent's queue stays its own.

The parent runs "parent 0" and leaves "parent 1" queued (the API is slow), forks, and the child runs
"child 0", flushes and exits; then the parent flushes. Prints the pids and both processes' stats.
"""

from __future__ import annotations

import json
import os
import sys

from tests.apps.common import chain, setup

provider, exporter = setup(schedule_delay_millis=20)
chain("answer").invoke({"question": "parent 0"})
provider.force_flush(10_000)  # delivered before the fork
chain("answer").invoke({"question": "parent 1"})
provider.force_flush(100)  # handed over, still queued or in flight when the fork comes
pid = os.fork()
if pid == 0:
    chain("answer").invoke({"question": "child 0"})
    flushed = provider.force_flush(20_000)
    provider.shutdown()
    print("child", flushed, json.dumps(exporter.stats()), flush=True)
    os._exit(0)
_, status = os.waitpid(pid, 0)
flushed = provider.force_flush(20_000)
provider.shutdown()
print("parent", flushed, json.dumps(exporter.stats()), flush=True)
sys.exit(os.waitstatus_to_exitcode(status))
