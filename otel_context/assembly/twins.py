"""Two LangChain instrumentations describing one run: which spans are twins.

OpenLLMetry's `opentelemetry-instrumentation-langchain` (a dependency of otel-context) and OpenTelemetry's
own `opentelemetry-instrumentation-genai-langchain` are both LangChain callback handlers: with both
instrumented (`opentelemetry-instrument` loads both entry points named `langchain`), every LangChain run
is described twice, in two trees, often in two traces. The two spans of one run start within a moment
of each other (the time the first handler takes) and end likewise, in the same process. Of such twins
the span of the LangChain instrumentation's own convention (`records_langchain_runs`: OpenLLMetry,
OpenInference) is kept and the GenAI-semconv one dropped: one run, one thread, whichever instrumentations
are installed.

Twins are of one family (model calls with model calls, tool runs with tool runs, chains and agents with
chains, tasks and agents), overlap, and never nest: a span inside another is its descendant (OpenLLMetry's
own `invoke_agent LangGraph` wrapper is a GenAI span around its `LangGraph.workflow`) or a provider's call
(OpenAI, ...) inside a LangChain model call, which assembly matches to it by containment. A span right
under another one is its twin only when it outlives it (`twin_of_child`): OpenTelemetry's instrumentation
up to 1.2b0 makes its span current, so OpenLLMetry's span of the same run is its child (or the reverse),
started and ended a moment after it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from ..conventions import SpanClass
from ..model import SpanRecord

# Both handlers run on the same callback, one after the other: measured 0.1-0.3 ms apart (a handler
# serialising a large state takes longer). Unrelated runs of one process rarely start *and* end this
# close, and both of them would be described twice anyway.
TWIN_TOLERANCE_NS = 10_000_000
_BUCKET_NS = TWIN_TOLERANCE_NS
Key = tuple[int, int | None]
Process = tuple[object, ...]


def family(span_class: SpanClass) -> str:
    """Which spans may be twins: model calls, tool runs, and runs of anything else."""
    if span_class.is_llm:
        return "llm"
    return "tool" if span_class is SpanClass.TOOL else "run"


@dataclass(slots=True, frozen=True)
class Described:
    """A span as the twin index keeps it: who it is, when it ran, under whom."""

    key: Key
    parent_id: int | None
    start_ns: int
    end_ns: int

    def twin_of(self, other: Described) -> bool:
        """Whether the two spans describe one run: they overlap, each starts and ends within the tolerance of
        the other, neither is the other's parent, and neither contains the other.

        Two callback handlers are called in the same order when a run starts and when it ends, so twins
        never nest; a span inside another one is its descendant (OpenLLMetry's own `invoke_agent LangGraph`
        wrapper around its `LangGraph.workflow`), or a provider's call inside a LangChain model call.
        """
        return (
            abs(self.start_ns - other.start_ns) <= TWIN_TOLERANCE_NS
            and abs(self.end_ns - other.end_ns) <= TWIN_TOLERANCE_NS
            and max(self.start_ns, other.start_ns) < min(self.end_ns, other.end_ns)
            and self.parent_id != other.key[1]
            and other.parent_id != self.key[1]
            and not self.nests(other)
            and not other.nests(self)
        )

    def twin_of_child(self, child: Described) -> bool:
        """Whether `child`, a span right under this one, is this span's twin.

        A handler that makes its span current (OpenTelemetry's own LangChain instrumentation up to 1.2b0)
        puts the other handler's span of the same run under its own: the child then starts within the
        tolerance after this span and, the handler called second at a run's start being called second at
        its end, ends after it, within the tolerance. A real child ends before its parent (OpenLLMetry's
        `invoke_agent LangGraph` wrapper contains its `LangGraph.workflow`).
        """
        return (
            child.key[0] == self.key[0]
            and child.parent_id == self.key[1]
            and 0 <= child.start_ns - self.start_ns <= TWIN_TOLERANCE_NS
            and 0 < child.end_ns - self.end_ns <= TWIN_TOLERANCE_NS
        )

    def nests(self, other: Described) -> bool:
        """Whether `other` ran within this span (at the same instant at one end, too)."""
        return (
            self.start_ns <= other.start_ns
            and other.end_ns <= self.end_ns
            and (self.start_ns, self.end_ns) != (other.start_ns, other.end_ns)
        )

    def distance(self, other: Described) -> int:
        return abs(self.start_ns - other.start_ns) + abs(self.end_ns - other.end_ns)


class TwinIndex:
    """Recent spans by process, family and start time, bounded: finds a span's twin in O(1)."""

    def __init__(self, size: int) -> None:
        self._size = size
        # each bucket keyed by span: a discard is O(1) however many spans share a 10 ms bucket (replayed
        # or synthetic spans often share one start time)
        self._buckets: dict[tuple[Process, str, int], dict[Key, Described]] = {}
        self._order: OrderedDict[Key, tuple[Process, str, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._order)

    def add(self, process: Process, kind: str, described: Described) -> None:
        if described.key in self._order:
            return
        bucket = (process, kind, described.start_ns // _BUCKET_NS)
        self._buckets.setdefault(bucket, {})[described.key] = described
        self._order[described.key] = bucket
        if len(self._order) > self._size:
            self.discard(next(iter(self._order)))

    def discard(self, key: Key) -> None:
        bucket = self._order.pop(key, None)
        if bucket is None:
            return
        spans = self._buckets[bucket]
        del spans[key]
        if not spans:
            del self._buckets[bucket]

    def get(self, key: Key) -> tuple[str, Described] | None:
        """An indexed span by key, with its family."""
        bucket = self._order.get(key)
        if bucket is None:
            return None
        found = self._buckets[bucket].get(key)
        return (bucket[1], found) if found is not None else None

    def twins(self, process: Process, kind: str, described: Described) -> list[Described]:
        """Indexed spans of this process and family that describe the same run as `described`, closest first."""
        middle = described.start_ns // _BUCKET_NS
        found = []
        for at in (middle - 1, middle, middle + 1):
            for other in self._buckets.get((process, kind, at), {}).values():
                if other.key != described.key and other.twin_of(described):
                    found.append(other)
        return sorted(found, key=described.distance)


def described(span: SpanRecord) -> Described:
    return Described((span.trace_id, span.span_id), span.parent_id, span.start_ns, span.end_ns)
