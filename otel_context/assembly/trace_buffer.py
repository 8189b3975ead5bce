"""Trace assembly: hold what a root will need until the root arrives, bounded in traces, spans per trace and age.

Children end before their parents, so a trace reaches us over several batches, the root last. For
every GenAI span that is not a root we keep only a compact `Contribution` (models, usage, tool run,
rating); when a root arrives its descendants are collected and the thread is built.

The root of a run is its outermost GenAI span: a GenAI span under another one is a step, whatever its
convention calls it (LangGraph's `LangGraph.workflow`, a root chain to OpenLLMetry, runs under a
contentless `invoke_agent LangGraph` span). Whether a span with a parent is a root is known only when
the parent comes, so such a span (a chain of any convention, a model call that may be a provider's, a
tool run) is a *candidate*: it becomes a contribution when its parent turns out to be a GenAI span,
and a root when the parent is something else (an HTTP server span), when it has no parent, or when no
parent has come within `root_wait_s`. The receiver, where spans of a trace come from many services in
any order, sets `settle_s` so a root also waits briefly for stragglers.

A trace holds at most `max_spans_per_trace` spans waiting for their root (a Langfuse trace of ~10k
observations already crashes its ingestion); beyond, the oldest are evicted and counted. Children end,
and so arrive, before their parents: the newest spans are those nearest the root, so what is kept
still hangs from the root when it comes. The root itself is never held, so it is always used.

Two LangChain instrumentations at once (OpenLLMetry's and the official GenAI one) describe every run
twice: the GenAI span of a run that an OpenLLMetry (or OpenInference) span describes too is dropped and
counted (`spans_twinned`), its children re-homed under the span kept (see `twins`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from ..conventions import CONVENTIONS, Convention, SpanClass, convention_for
from ..conventions.keys import SERVICE_INSTANCE_ID, SERVICE_NAME
from ..conversion.evaluations import Evaluation
from ..conversion.threads import (
    DEFAULT_OPTIONS,
    Contribution,
    ContributionKind,
    ConversionOptions,
    contribution,
    convert_root,
    descendants_of,
)
from ..counters import Counters
from ..environment_variables import OTEL_EXPORTER_CONTEXT_MAX_SPANS_PER_TRACE
from ..model import ConversationThread, SpanRecord
from .twins import Described, TwinIndex, described, family

_logger = logging.getLogger(__name__)
# Tuples, not sets: membership by identity, without `Enum.__hash__` (Python code) on every span.
ROOT_CLASSES = (SpanClass.CHAIN_ROOT, SpanClass.LLM_STANDALONE)
CANDIDATE_CLASSES = (SpanClass.CHAIN, SpanClass.LLM, SpanClass.TOOL)
SAME_PROCESS_KEYS = (SERVICE_INSTANCE_ID, SERVICE_NAME)  # resource keys two spans of one process share
Key = tuple[int, int | None]  # (trace id, span id); a parent key may name no span
TWIN_MEMORY = 5_000  # spans remembered for twin matching, per index (about 1 MB at the bound): twins end
# within 10 ms of each other and are exported together, so a few thousand runs of lag is plenty
BUILT_MEMORY = 50_000  # spans of built runs remembered, once evaluations come as log records (about 8 MB)
# Built roots remembered (and recent foreign and evicted spans), so that a span which comes again is not
# made into a second thread: the sidecar's Collector resends a request whose answer was lost, for up to
# 300 s of retries. In process nothing resends spans: the pipeline passes its pending traces' bound instead.
REMEMBERED_ROOTS = 100_000
LOGGED_PER_TRACE = 1_000  # evaluation records held per trace while its run is awaited
Logged = tuple[int, int | None, Evaluation]  # an evaluation log record: trace id, span id (or None), evaluation


@dataclass(slots=True)
class _LoggedEntry:
    """Evaluations recorded as log records for a trace whose run is not built yet."""

    first_seen: float
    items: list[tuple[int | None, Evaluation]] = field(default_factory=list)


@dataclass(slots=True)
class _TraceEntry:
    first_seen: float
    items: list[Contribution] = field(default_factory=list)
    span_ids: set[int] = field(default_factory=set)  # a Collector retry may deliver a span twice


@dataclass(slots=True)
class _Waiting:
    """A span and how it is read; for a pending root `due` is when to build it, for a candidate when to give up."""

    due: float
    span: SpanRecord
    span_class: SpanClass
    convention: Convention


_Ready = tuple[_Waiting, list[Contribution], str | None, list[Evaluation]]  # a root to build, and what it needs


class _ByTrace(dict[Key, _Waiting]):
    """A dict of waiting spans that also counts them per trace, so `TraceBuffer.holds` is O(1)."""

    def __init__(self) -> None:
        super().__init__()
        self.traces: dict[int, int] = {}

    def __setitem__(self, key: Key, value: _Waiting) -> None:
        if key not in self:
            self.traces[key[0]] = self.traces.get(key[0], 0) + 1
        super().__setitem__(key, value)

    def pop(self, key: Key, *default: Any) -> Any:
        if key in self:
            left = self.traces[key[0]] - 1
            if left:
                self.traces[key[0]] = left
            else:
                del self.traces[key[0]]
        return super().pop(key, *default)


class _Recent:
    """A bounded set of keys, the oldest forgotten first: at least `size // 2` of the latest are remembered.

    Two generations of plain sets of packed ints (trace id and span id in one int; a span id is never 0, so
    0 stands for "no span"), not an ordered dict of tuples: about a third of the memory per key (some 80
    bytes at the bound instead of 220), and an app's RSS that levels off sooner and lower.
    """

    __slots__ = ("_current", "_half", "_previous")

    def __init__(self, size: int) -> None:
        self._current: set[int] = set()
        self._previous: set[int] = set()
        self._half = max(1, size // 2)

    def add(self, key: Key) -> None:
        current = self._current
        current.add(key[0] << 64 | (key[1] or 0))
        if len(current) >= self._half:
            self._previous, self._current = current, set()

    def __contains__(self, key: object) -> bool:
        packed = key[0] << 64 | (key[1] or 0)  # type: ignore[index]
        return packed in self._current or packed in self._previous


class _RecentRuns:
    """Trace id -> the span id of its last run built, bounded like `_Recent` (two generations of dicts)."""

    __slots__ = ("_current", "_half", "_previous")

    def __init__(self, size: int) -> None:
        self._current: dict[int, int] = {}
        self._previous: dict[int, int] = {}
        self._half = max(1, size // 2)

    def __setitem__(self, trace_id: int, span_id: int) -> None:
        current = self._current
        current[trace_id] = span_id
        if len(current) >= self._half:
            self._previous, self._current = current, {}

    def get(self, trace_id: int) -> int | None:
        found = self._current.get(trace_id)
        return found if found is not None else self._previous.get(trace_id)


class TraceBuffer:
    """Turns batches of spans into threads; safe to call from many threads at once."""

    def __init__(
        self,
        *,
        max_traces: int = 10_000,
        max_age_s: float = 600.0,
        max_spans_per_trace: int = 10_000,
        settle_s: float = 0.0,
        root_wait_s: float = 10.0,
        options: ConversionOptions = DEFAULT_OPTIONS,
        counters: Counters | None = None,
        clock: Callable[[], float] = time.monotonic,
        remember_roots: int = REMEMBERED_ROOTS,
        conventions: tuple[Convention, ...] = CONVENTIONS,
    ) -> None:
        self.conventions = conventions
        self.max_traces = max_traces
        self.max_age_s = max_age_s
        self.max_spans_per_trace = max_spans_per_trace
        self.settle_s = settle_s
        self.root_wait_s = root_wait_s
        self.options = options
        self.counters = counters or Counters()
        self._clock = clock
        self._lock = threading.Lock()
        self._traces: OrderedDict[int, _TraceEntry] = OrderedDict()
        self._held = 0
        self._pending = _ByTrace()
        self._candidates = _ByTrace()
        self._waiting_on: dict[Key, list[Key]] = {}  # parent key -> candidates waiting to learn what it is
        self._providers: set[Key] = set()  # candidates that are provider model calls (matched by time)
        self._guests: dict[int, int] = {}  # a provider call's own trace -> the trace it was re-homed into
        self._done = _Recent(remember_roots)
        self._ends: OrderedDict[Key, int] = OrderedDict()  # built roots and dropped twins: when they ended
        self._foreign = _Recent(remember_roots)  # recent non-GenAI spans: possible parents of candidates
        self._evicted = _Recent(remember_roots)  # traces that lost held spans: a root built later is incomplete
        self._crowded: set[int] = set()  # traces past max_spans_per_trace in the batch being added
        # Twins arrive close together (one export batch apart at most): the most recent spans are enough.
        self._langchain_runs = TwinIndex(TWIN_MEMORY)  # recent spans of LangChain instrumentations' conventions
        self._genai_waiting = TwinIndex(TWIN_MEMORY)  # recent GenAI spans, dropped if a twin comes while held
        self._genai_homes: dict[Key, int] = {}  # a re-homed GenAI span's trace (a provider call's host)
        self._twins: OrderedDict[Key, Key] = OrderedDict()  # a dropped GenAI span -> the twin kept
        self._last_run: dict[tuple[object, ...], Described] = {}  # per process: the last LangChain-run span seen
        self._run_parents = _Recent(TWIN_MEMORY)  # parents of LangChain-run spans: GenAI wrappers, never twins
        self._warned_crowded = False
        # Evaluations recorded as log records (`add_evaluations`): those awaiting their run, and, once any
        # came, which built run each recent span was part of, so a late one rates the right answer.
        self._logged: OrderedDict[int, _LoggedEntry] = OrderedDict()
        self._built: OrderedDict[Key, int] | None = None  # (trace, span) -> root span id; None until one came
        # trace -> its last built root's span id, for evaluation records of a run already sent; they come with
        # the run or one export batch later, so twice the held traces is plenty (it was 10x: 12 MB to fill)
        self._built_traces = _RecentRuns(2 * max_traces)
        self.counters.gauge("spans_held", lambda: self._held + len(self._candidates))

    def add(self, spans: Iterable[SpanRecord]) -> list[ConversationThread]:
        """Take a batch; return the threads of the roots it completes (and of roots now due)."""
        now = self._clock()
        received = ignored = 0
        with self._lock:
            for span in spans:
                received += 1
                key = (span.trace_id, span.span_id)
                found = convention_for(span.attributes, self.conventions)
                if found is not None:
                    if span.parent_id is not None and self._left_current(span):
                        span = replace(span, parent_id=None)  # a parent that ended before it: no container
                    kept = self._twin_check(span, *found, now)
                    if kept is None:
                        continue
                    span = kept
                self._resolve_waiters(key, is_genai=found is not None, now=now)
                if found is None:
                    ignored += 1
                    self._foreign.add(key)
                    continue
                if key in self._done or key in self._pending or key in self._candidates:
                    self.counters.add("duplicates")
                    continue
                self._place(span, *found, now)
            self._trim_crowded()
            ready = self._take_due(now)
            self._evict(now)
        self.counters.add("spans_received", received)
        self.counters.add("spans_ignored", ignored)
        return self._convert(ready)

    def due(self) -> list[ConversationThread]:
        """Threads of roots whose settle time has passed (the receiver calls this on a timer)."""
        now = self._clock()
        with self._lock:
            ready = self._take_due(now)
            self._evict(now)
        return self._convert(ready)

    def drain(self) -> list[ConversationThread]:
        """At shutdown: build every pending root and candidate now; held spans without a root are evicted."""
        with self._lock:
            ready = self._take_due(float("inf"))
            self._evict(float("inf"))
        return self._convert(ready)

    @property
    def held_spans(self) -> int:
        return self._held + len(self._candidates)

    @property
    def waiting(self) -> bool:
        """Whether roots or candidates wait for time to pass (settle, or a parent that may never come)."""
        return bool(self._pending or self._candidates)

    @property
    def pending_roots(self) -> int:
        """Roots waiting out their settle time: threads about to be queued."""
        return len(self._pending)

    @property
    def held_traces(self) -> int:
        return len(self._traces)

    def holds(self, trace_id: int) -> bool:
        """Whether spans of this trace still wait here: until then its threads are not built or dropped.

        The sidecar's write-ahead log keeps a request until none of its traces is held any more.
        """
        with self._lock:
            if trace_id in self._traces or trace_id in self._pending.traces or trace_id in self._candidates.traces:
                return True
            host = self._guests.pop(trace_id, None)
            if host is not None and host in self._traces:
                self._guests[trace_id] = host
                return True
            return False

    def add_evaluations(self, logged: Iterable[Logged]) -> list[Logged]:
        """Evaluations recorded as log records, each with the trace and span (None: unknown) it is about.

        One of a run not built yet (its spans held here, or not come yet) waits and joins the run's thread
        (metadata and rating) when it is built. Returned: those of a run already built, as (trace id, the
        run's root span id, evaluation), for a rating of its answer. One that names no span, or a span of no
        run (an HTTP span), or a span not remembered, belongs to the trace: to its run still held (or to come,
        when none was built yet), else to its last run built.
        """
        now = self._clock()
        late: list[Logged] = []
        with self._lock:
            if self._built is None:
                self._built = OrderedDict()
            for trace_id, span_id, evaluation in logged:
                self.counters.add("evaluations_received")
                if span_id is not None:
                    root = self._built.get((trace_id, span_id))
                    if root is not None:
                        late.append((trace_id, root, evaluation))
                        continue
                    if (trace_id, span_id) in self._foreign:
                        span_id = None
                last_run = self._built_traces.get(trace_id)
                if last_run is not None and not self._holds_trace(trace_id):
                    # no span of the trace waits: a span of no run, or of a run built before such records came
                    # (its spans not remembered): the trace's last run built
                    late.append((trace_id, last_run, evaluation))
                    continue
                entry = self._logged.get(trace_id)
                if entry is None:
                    entry = self._logged[trace_id] = _LoggedEntry(now)
                if len(entry.items) < LOGGED_PER_TRACE:
                    entry.items.append((span_id, evaluation))
                else:
                    self.counters.add("evaluations_unmatched")
            self._evict(now)
        return late

    def _holds_trace(self, trace_id: int) -> bool:
        return trace_id in self._traces or trace_id in self._pending.traces or trace_id in self._candidates.traces

    def _logged_for(self, root: SpanRecord, found: list[Contribution]) -> list[Evaluation]:
        """The evaluation records waiting for this run: those naming one of its spans, or only its trace."""
        entry = self._logged.get(root.trace_id)
        if entry is None:
            return []
        spans = {root.span_id, *(item.span_id for item in found)}
        taken = [evaluation for span_id, evaluation in entry.items if span_id is None or span_id in spans]
        if taken:
            entry.items = [(s, e) for s, e in entry.items if s is not None and s not in spans]
            if not entry.items:
                del self._logged[root.trace_id]
        return taken

    def _remember_built(self, root: SpanRecord, found: list[Contribution]) -> None:
        """Which run the spans of a built one belonged to (kept once evaluations come as log records)."""
        self._built_traces[root.trace_id] = root.span_id
        built = self._built
        if built is None:
            return
        built[(root.trace_id, root.span_id)] = root.span_id
        for item in found:
            built[(root.trace_id, item.span_id)] = root.span_id
        while len(built) > BUILT_MEMORY:
            built.popitem(last=False)

    # -- twins: one run described by two LangChain instrumentations --------------------------------
    def _twin_check(
        self, span: SpanRecord, convention: Convention, span_class: SpanClass, now: float
    ) -> SpanRecord | None:
        """Index a span for twin matching; None when it is a GenAI span whose twin is kept instead (dropped).

        A LangChain instrumentation's span drops the GenAI twins already waiting here (and takes the place
        of a GenAI twin it runs under); a GenAI span is dropped when such a twin came before it (or is its
        parent). The span returned is the one to place: its parent changed when it took a twin's place.
        """
        key = (span.trace_id, span.span_id)
        process = _process(span)
        kind = family(span_class)
        this = described(span)
        parent = (span.trace_id, span.parent_id)
        if convention.records_langchain_runs:
            outer = self._genai_waiting.get(parent) if span.parent_id is not None else None
            if outer is not None and outer[0] == kind and outer[1].twin_of_child(this):
                # The GenAI span around it describes the same run (its handler made it current): this
                # span takes its place, under its parent.
                self._retract(outer[1], key, now)
                span = replace(span, parent_id=outer[1].parent_id)
                this = described(span)
            else:
                # A GenAI span with a LangChain instrumentation's span under it otherwise wraps that run
                # (OpenLLMetry's `invoke_agent LangGraph`): never a twin.
                self._run_parents.add(parent)
                self._genai_waiting.discard(parent)
            self._langchain_runs.add(process, kind, this)
            self._last_run[process] = this
            if len(self._last_run) > 1_024:
                del self._last_run[next(iter(self._last_run))]
            if len(self._genai_waiting):
                for twin in self._genai_waiting.twins(process, kind, this):
                    self._retract(twin, key, now)
            return span
        if key in self._twins:
            self.counters.add("duplicates")
            return None
        if key in self._run_parents:
            return span
        kept = []
        if len(self._langchain_runs):
            outer = self._langchain_runs.get(parent) if span.parent_id is not None else None
            if outer is not None and outer[0] == kind and outer[1].twin_of_child(this):
                kept = [outer[1]]  # the LangChain instrumentation's span of this run is its parent
            else:
                kept = self._langchain_runs.twins(process, kind, this)
        if not kept:
            self._genai_waiting.add(process, kind, this)
            return span
        self._twins[key] = kept[0].key
        if len(self._twins) > self.max_traces:
            self._twins.popitem(last=False)
        self._remember_end(key, span.end_ns)
        self.counters.add("spans_twinned")
        self._rehome_children(key, kept[0].key, now)
        return None

    def _retract(self, twin: Described, kept: Key, now: float) -> None:
        """A GenAI span waiting here turned out to be a twin: take it out, its children under the span kept."""
        key = twin.key
        self._genai_waiting.discard(key)
        if key in self._candidates:
            self._forget_candidate(key)
        elif key in self._pending:
            self._pending.pop(key)
        else:
            home = self._genai_homes.pop(key, key[0])
            entry = self._traces.get(home)
            if entry is None or key[1] not in entry.span_ids:
                return  # already part of a thread
            entry.items = [item for item in entry.items if item.span_id != key[1]]
            entry.span_ids.discard(key[1])  # type: ignore[arg-type]
            self._held -= 1
        self._twins[key] = kept
        if len(self._twins) > self.max_traces:
            self._twins.popitem(last=False)
        self._remember_end(key, twin.end_ns)
        self.counters.add("spans_twinned")
        self._rehome_children(key, kept, now)

    def _remember_end(self, key: Key, end_ns: int) -> None:
        """When a span no longer held ended (a built root, a dropped twin): a later span naming it as its
        parent was not run inside it (`_left_current`)."""
        self._ends[key] = end_ns
        if len(self._ends) > self.max_traces:
            self._ends.popitem(last=False)

    def _left_current(self, span: SpanRecord) -> bool:
        """Whether the span's parent is a model call or a dropped twin that ended before it started: an
        instrumentation left that span current after it ended (OpenLLMetry 0.44-0.58 a lone model call's;
        OpenTelemetry's up to 1.2b0, beside OpenLLMetry's, every run's, and those are twins), so every later
        run of that thread of execution names it. A real parent encloses its children. Only spans known
        without a search (built, dropped, waiting as roots) are asked; a run's own span that ended (a judge's
        call made in its context afterwards) is left to the other rules."""
        parent = (span.trace_id, span.parent_id)
        end = self._ends.get(parent)
        if end is None:
            waiting = self._pending.get(parent) or self._candidates.get(parent)
            if waiting is None or not waiting.span_class.is_llm:
                return False
            end = waiting.span.end_ns
        return 0 < end <= span.start_ns

    def _rehome_children(self, key: Key, kept: Key, now: float) -> None:
        """Spans under a dropped twin (waiting for it, or held under it) go under the span kept."""
        for child in self._waiting_on.pop(key, ()):
            self._providers.discard(child)
            waiting = self._candidates.pop(child, None)
            if waiting is not None:
                span, convention, span_class = waiting.span, waiting.convention, waiting.span_class
                self._hold(span, convention, span_class, now, parent_id=kept[1], trace_id=kept[0])
        entry = self._traces.get(key[0])
        moved = [item for item in entry.items if item.parent_id == key[1]] if entry is not None else []
        if not moved or entry is None:
            return
        entry.items = [item for item in entry.items if item.parent_id != key[1]]
        entry.span_ids.difference_update(item.span_id for item in moved)
        target = self._traces.get(kept[0])
        if target is None:
            target = self._traces[kept[0]] = _TraceEntry(now)
        for item in moved:
            item.parent_id = kept[1]
            target.items.append(item)
            target.span_ids.add(item.span_id)
        if not entry.items:
            del self._traces[key[0]]

    def _awaits_twin(self, span: SpanRecord, convention: Convention) -> bool:
        """Whether a GenAI root may still get a twin: a LangChain instrumentation of its process described,
        last, a span inside its time (the children of the twin to come) of another trace, or of this one
        under a span not seen yet (the twin, under this span when its handler made this one current)."""
        if convention.records_langchain_runs or not self._last_run:
            return False
        last = self._last_run.get(_process(span))
        return (
            last is not None
            and span.start_ns <= last.start_ns
            and last.end_ns <= span.end_ns
            and (
                last.key[0] != span.trace_id
                or (last.parent_id != span.span_id and not self._is_genai((span.trace_id, last.parent_id)))
            )
        )

    # -- placing spans ----------------------------------------------------------------------------
    def _place(self, span: SpanRecord, convention: Convention, span_class: SpanClass, now: float) -> None:
        twin = self._twins.get((span.trace_id, span.parent_id)) if self._twins else None
        if twin is not None:  # under a dropped twin: under the span kept
            self._hold(span, convention, span_class, now, parent_id=twin[1], trace_id=twin[0])
            return
        if span_class is SpanClass.LLM and convention.describes_provider_calls:
            self._place_provider_call(span, convention, now)
            return
        if span_class.is_llm:
            self._claim_provider_calls(span, now)
        parent = (span.trace_id, span.parent_id)
        if span_class is SpanClass.LLM_STANDALONE and (not self._is_genai(parent) or self._ended_before(parent, span)):
            self._make_root(span, span_class, convention, now)
        elif span_class in CANDIDATE_CLASSES or span_class in ROOT_CLASSES:
            if span.parent_id is None or parent in self._foreign or self._ended_before(parent, span):
                self._make_root(span, span_class, convention, now)
            elif self._is_genai(parent):
                self._hold(span, convention, span_class, now)
            else:  # the parent has not come yet: wait to learn what it is
                self._candidates[(span.trace_id, span.span_id)] = _Waiting(
                    now + self.root_wait_s, span, span_class, convention
                )
                self._waiting_on.setdefault(parent, []).append((span.trace_id, span.span_id))
        else:
            self._hold(span, convention, span_class, now)

    def _place_provider_call(self, span: SpanRecord, convention: Convention, now: float) -> None:
        """A provider's model span: the same call as a LangChain model span around it, if there is one.

        Provider instrumentations do not see the LangChain model span as their parent (LangChain does
        not make it current), so the two overlap in time instead: the provider span is a sibling in
        the chain's trace, or alone in a trace of its own for a standalone call. It waits as a
        candidate until a model span that contains it claims it, or becomes a root of its own.
        """
        key = (span.trace_id, span.span_id)
        host = self._containing_llm(span)
        if host is not None:
            self._hold(span, convention, SpanClass.LLM, now, parent_id=host[1], trace_id=host[0])
            return
        if span.parent_id is not None and self._is_genai((span.trace_id, span.parent_id)):
            self._hold(span, convention, SpanClass.LLM, now)  # e.g. a model call of a GenAI agent span
            return
        self._candidates[key] = _Waiting(now + self.root_wait_s, span, SpanClass.LLM, convention)
        self._providers.add(key)
        if span.parent_id is not None:
            self._waiting_on.setdefault((span.trace_id, span.parent_id), []).append(key)

    def _containing_llm(self, span: SpanRecord) -> Key | None:
        """A model span already seen whose time contains this provider span (spans may come in any order)."""
        for waiting in self._pending.values():
            if waiting.span_class.is_llm and _contains(waiting.span, span):
                return waiting.span.trace_id, waiting.span.span_id
        entry = self._traces.get(span.trace_id)
        for item in entry.items if entry is not None else ():
            if item.kind is ContributionKind.LLM and item.start_ns <= span.start_ns and span.end_ns <= item.end_ns:
                return span.trace_id, item.span_id
        return None

    def _claim_provider_calls(self, host: SpanRecord, now: float) -> None:
        """Waiting provider spans inside this model span's time are its own call: steps under it."""
        for key in [k for k in self._providers if _contains(host, self._candidates[k].span)]:
            waiting = self._forget_candidate(key)
            self._hold(
                waiting.span, waiting.convention, SpanClass.LLM, now, parent_id=host.span_id, trace_id=host.trace_id
            )

    def _forget_candidate(self, key: Key) -> _Waiting:
        """Take a candidate out of every index (a parent that never comes must not keep it listed)."""
        waiting = self._candidates.pop(key)
        self._providers.discard(key)
        parent = (key[0], waiting.span.parent_id)
        waiters = self._waiting_on.get(parent)
        if waiters is not None and key in waiters:
            waiters.remove(key)
            if not waiters:
                del self._waiting_on[parent]
        return waiting

    def _is_genai(self, key: Key) -> bool:
        """Whether this span was seen and is a GenAI span (a pending root, a candidate or a held step)."""
        if key in self._pending or key in self._candidates:
            return True
        entry = self._traces.get(key[0])
        return entry is not None and key[1] in entry.span_ids

    def _ended_before(self, parent: Key, span: SpanRecord) -> bool:
        """Whether the parent is a model call (or a dropped twin) that ended before this span started: not
        its container.

        OpenLLMetry 0.44-0.58 leave a lone model call's span current after it ends, and OpenTelemetry's
        instrumentation up to 1.2b0 (beside OpenLLMetry's) every run's, so every later run of the process
        names it as its parent; a real parent always encloses its children.
        """
        waiting = self._pending.get(parent) or self._candidates.get(parent)
        if waiting is not None:
            return waiting.span_class.is_llm and 0 < waiting.span.end_ns <= span.start_ns
        entry = self._traces.get(parent[0])
        if entry is not None and parent[1] in entry.span_ids:
            for item in entry.items:
                if item.span_id == parent[1]:
                    return item.kind is ContributionKind.LLM and 0 < item.end_ns <= span.start_ns
        return parent in self._ends and 0 < self._ends[parent] <= span.start_ns

    def _resolve_waiters(self, parent: Key, *, is_genai: bool, now: float) -> None:
        """The parent of waiting candidates arrived: they are steps under it, or roots under a foreign span."""
        for key in self._waiting_on.pop(parent, ()):
            if key in self._providers:
                if not is_genai:  # a provider call under an HTTP span: still maybe LangChain's own call
                    continue
                self._providers.discard(key)
            waiting = self._candidates.pop(key, None)
            if waiting is None:
                continue
            if is_genai and not self._ended_before(parent, waiting.span):
                self._hold(waiting.span, waiting.convention, waiting.span_class, now)
            else:
                self._make_root(waiting.span, waiting.span_class, waiting.convention, now)

    def _make_root(self, span: SpanRecord, span_class: SpanClass, convention: Convention, now: float) -> None:
        key = (span.trace_id, span.span_id)
        if self._awaits_twin(span, convention) and key not in self._candidates:
            self._candidates[key] = _Waiting(now + self.root_wait_s, span, span_class, convention)
            return
        self._pending[key] = _Waiting(now + self.settle_s, span, span_class, convention)

    def _hold(
        self,
        span: SpanRecord,
        convention: Convention,
        span_class: SpanClass,
        now: float,
        *,
        parent_id: int | None = None,
        trace_id: int | None = None,
    ) -> None:
        """Keep a step's contribution until its root comes; `parent_id`/`trace_id` re-home a provider call."""
        trace_id = span.trace_id if trace_id is None else trace_id
        parent_id = span.parent_id if parent_id is None else parent_id
        if (trace_id, parent_id) in self._done:
            self.counters.add("spans_late")  # its root's thread is already built
            return
        entry = self._traces.get(trace_id)
        if entry is None:
            entry = self._traces[trace_id] = _TraceEntry(now)
        elif span.span_id in entry.span_ids:
            self.counters.add("duplicates")
            return
        entry.span_ids.add(span.span_id)
        if trace_id != span.trace_id and not convention.records_langchain_runs:
            self._genai_homes[(span.trace_id, span.span_id)] = trace_id
            if len(self._genai_homes) > TWIN_MEMORY:
                del self._genai_homes[next(iter(self._genai_homes))]
        if trace_id != span.trace_id:
            self._guests[span.trace_id] = trace_id
            if len(self._guests) > 10 * self.max_traces:  # bounded: forget the oldest re-homings
                del self._guests[next(iter(self._guests))]
        item = contribution(span, convention, span_class, self.options.include_tools)
        item.parent_id = parent_id
        entry.items.append(item)
        self._held += 1
        if len(entry.items) > self.max_spans_per_trace:
            self._crowded.add(trace_id)  # trimmed once per batch: one list shift, not one per span

    def _trim_crowded(self) -> None:
        """Keep the newest `max_spans_per_trace` held spans of each trace that passed it; count the others."""
        for trace_id in self._crowded:
            entry = self._traces.get(trace_id)
            excess = len(entry.items) - self.max_spans_per_trace if entry is not None else 0
            if entry is None or excess <= 0:
                continue
            entry.span_ids.difference_update(item.span_id for item in entry.items[:excess])
            del entry.items[:excess]
            self._held -= excess
            self._evicted.add((trace_id, None))  # its thread will say incomplete_reason=evicted
            self.counters.add("spans_evicted", excess)
            if not self._warned_crowded:
                self._warned_crowded = True
                _logger.warning(
                    "otel-context: a trace passed %d spans waiting for their root (%s); its oldest are evicted"
                    " (logged once; spans_evicted counts every one)",
                    self.max_spans_per_trace,
                    OTEL_EXPORTER_CONTEXT_MAX_SPANS_PER_TRACE,
                )
        self._crowded.clear()

    # -- releasing roots --------------------------------------------------------------------------
    def _take_due(self, now: float) -> list[_Ready]:
        for key in [k for k, c in self._candidates.items() if c.due <= now]:
            waiting = self._forget_candidate(key)  # no parent (or twin) came in time: a root after all
            due = min(now, waiting.due) + self.settle_s
            self._pending[key] = _Waiting(due, waiting.span, waiting.span_class, waiting.convention)
        if not self._pending:
            return []
        ready = []
        for key in [k for k, p in self._pending.items() if p.due <= now]:
            pending = self._pending.pop(key)
            found = self._collect(pending.span)
            logged = self._logged_for(pending.span, found) if self._logged else []
            ready.append((pending, found, self._incomplete(pending.span), logged))
            self._remember_built(pending.span, found)
            self._done.add(key)
            if pending.span_class.is_llm:
                self._remember_end(key, pending.span.end_ns)
        return ready

    def _collect(self, root: SpanRecord) -> list[Contribution]:
        """Remove and return the held contributions under `root`."""
        entry = self._traces.get(root.trace_id)
        if entry is None:
            return []
        found = descendants_of(root.span_id, entry.items)
        if found:
            taken = {item.span_id for item in found}
            entry.items = [item for item in entry.items if item.span_id not in taken]
            entry.span_ids -= taken
            self._held -= len(found)
        if not entry.items:
            del self._traces[root.trace_id]
        return found

    def _incomplete(self, root: SpanRecord) -> str | None:
        """Why this root's trace is known to be incomplete: spans of it were evicted, or a held span inside
        the root's time waits for a parent that never came (the root is built without that branch)."""
        key = (root.trace_id, None)
        if key in self._evicted:
            return "evicted"
        entry = self._traces.get(root.trace_id)
        for item in entry.items if entry is not None else ():
            parent = (root.trace_id, item.parent_id)
            if (
                root.start_ns <= item.start_ns
                and item.end_ns <= root.end_ns
                and item.parent_id not in entry.span_ids  # type: ignore[union-attr]
                and parent not in self._pending
                and parent not in self._candidates
                and parent not in self._done
            ):
                return "missing_parent"
        return None

    def _evict(self, now: float) -> None:
        """Drop the oldest traces beyond the count bound or past the age bound, counting them."""
        traces = self._traces
        while traces:
            trace_id, entry = next(iter(traces.items()))
            if len(traces) <= self.max_traces and now - entry.first_seen <= self.max_age_s:
                break
            del traces[trace_id]
            self._evicted.add((trace_id, None))
            self._held -= len(entry.items)
            self.counters.add("traces_evicted")
            self.counters.add("spans_evicted", len(entry.items))
        logged = self._logged
        while logged:  # evaluation records whose run never came (in time, or at all)
            trace_id, waiting = next(iter(logged.items()))
            if len(logged) <= self.max_traces and now - waiting.first_seen <= self.max_age_s:
                break
            del logged[trace_id]
            self.counters.add("evaluations_unmatched", len(waiting.items))

    def _convert(self, ready: list[_Ready]) -> list[ConversationThread]:
        threads = []
        for pending, descendants, incomplete, logged in ready:
            try:
                thread = convert_root(
                    pending.span, pending.span_class, pending.convention, descendants, self.options, logged
                )
            except Exception:  # a reader bug must cost one thread, never the batch or the host app
                self.counters.add("conversion_errors")
                _logger.exception("otel-context could not convert root span %s", pending.span.span_hex)
                continue
            if thread is None:
                self.counters.add("roots_empty")  # a wrapper whose run became a thread without it
                continue
            if incomplete is not None:
                thread.metadata["incomplete"] = "true"
                thread.metadata["incomplete_reason"] = incomplete
                self.counters.add("threads_incomplete")
            if "cost_unpriced_models" in thread.metadata:
                self.counters.add("threads_unpriced")  # counted, never priced by a guess
            threads.append(thread)
        self.counters.add("threads_converted", len(threads))
        return threads


def _process(span: SpanRecord) -> tuple[object, ...]:
    """What tells a span's process apart from another's (the resource keys two spans of one process share)."""
    resource = span.resource
    return tuple(resource.get(k) for k in SAME_PROCESS_KEYS)


def _contains(host: SpanRecord, inner: SpanRecord) -> bool:
    """Whether `inner` ran within `host`, in the same process (a provider call inside a model call)."""
    if not (host.start_ns <= inner.start_ns and inner.end_ns <= host.end_ns):
        return False
    return all(host.resource.get(k) == inner.resource.get(k) for k in SAME_PROCESS_KEYS)
