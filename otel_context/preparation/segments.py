"""What one POST appends: a run's messages, marked so that a read-back can tell whether they are stored.

Context appends every thread POST's messages and asks that every POST of a thread carry the same
thread metadata. So:
- a standalone run is one POST to a thread of its own: its thread metadata keeps every run fact (Context's
  metadata filters find them), as it is sent once;
- a session turn is one POST of only its messages to the session's thread, with the thread metadata its
  part's first turn fixed (all but `sessions.RUN_FACTS`); the run's own facts (trace, latency, model,
  usage, cost, `io_source`, `incomplete`, evaluations, ...), and any session value that differs from
  the fixed one, go on the metadata of its last message, so that summing them over a thread's messages
  counts each run once.
Every message of a run carries its segment key, `trace_id` and `span_id` of the run's root, in its
metadata: an upload whose outcome is unknown is looked for in the thread read back before it is sent
again (`delivery/readback.py`).
"""

from __future__ import annotations

from dataclasses import replace

from ..model import SEGMENT_KEYS, ConversationThread
from .sessions import Placement, is_run_fact


def segment_key(thread: ConversationThread) -> str:
    """The key a run's messages carry: its trace and root span (unique per run)."""
    return f"{thread.metadata.get('trace_id', '')}/{thread.metadata.get('span_id', '')}"


def standalone(thread: ConversationThread) -> ConversationThread:
    """A run sent alone: its messages marked with the segment key; its thread metadata as converted."""
    mark = {key: thread.metadata[key] for key in SEGMENT_KEYS if key in thread.metadata}
    return replace(thread, messages=[m.with_metadata(mark) for m in thread.messages], segment=segment_key(thread))


def session_append(thread: ConversationThread, placement: Placement) -> ConversationThread:
    """A session turn as the append to its session's thread: only its messages, the part's fixed metadata."""
    mark = {key: thread.metadata[key] for key in SEGMENT_KEYS if key in thread.metadata}
    fixed = placement.metadata
    facts = {k: v for k, v in thread.metadata.items() if is_run_fact(k) or (k in fixed and fixed[k] != v)}
    messages = [m.with_metadata(mark) for m in thread.messages]
    if messages:
        messages[-1] = messages[-1].with_metadata(facts)
    return replace(
        thread,
        id=placement.thread_id,
        messages=messages,
        metadata=dict(placement.metadata),
        segment=segment_key(thread),
    )
