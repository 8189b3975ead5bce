"""The pipeline both entry points share: span records in -> assembled traces -> threads -> delivery.

The in-process exporter feeds it SDK spans; the sidecar feeds it OTLP. One conversion, one delivery.
Fork-safe: everything that owns a thread, a lock, a socket or a file is renewed in a forked child,
which starts fresh and delivers its own runs (the parent's held spans and queued work stay the parent's).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import weakref
from collections.abc import Iterable

from .assembly.trace_buffer import REMEMBERED_ROOTS, TraceBuffer
from .config import TOKEN_VARIABLES, ConfigError, ExporterSettings
from .conventions import default_conventions
from .conventions.feedback import SESSION_TARGET, feedback_target, span_rating
from .conversion.cost import Pricing
from .conversion.evaluations import Evaluation, event_evaluation
from .conversion.threads import ConversionOptions
from .counters import Counters
from .delivery import ContextSender, Delivery, DeliveryQueue
from .delivery.helper import HelperDelivery
from .model import ConversationThread, LogEvent, SpanRecord
from .preparation.appends import Appends
from .preparation.feedback import RecentAnswers
from .preparation.redaction import Pseudonyms, Redactor
from .preparation.selection import ThreadSelection
from .preparation.session_redis import RedisSessions, is_redis_url
from .preparation.session_sqlite import SqliteSessions
from .preparation.sessions import MemorySessions, SessionStore, SessionStoreUnavailable
from .private_files import private_directory

_logger = logging.getLogger(__name__)


class Pipeline:
    """Holds the trace buffer, the delivery queue and the counters of one exporter or sidecar."""

    def __init__(
        self,
        settings: ExporterSettings,
        counters: Counters | None = None,
        *,
        settle_s: float = 0.0,
        push_back: bool = False,
        session_db: str | None = None,
    ):
        """`push_back=True` (the sidecar): callers check `backlog_full()` and refuse work instead of dropping."""
        self.settings = settings = settings if push_back else _without_refused_spool(settings)
        self.push_back = push_back
        self.counters = counters or Counters()
        self._settle_s = settle_s
        self.buffer = self._make_buffer()
        self._sender = ContextSender(settings)
        self.sessions = _session_store(settings, session_db, strict=push_back) if settings.sessions else None
        self.delivery: Delivery = self._make_delivery()
        key = settings.pseudonym_key.encode("utf-8") if settings.pseudonym_key else None
        self.redactor = Redactor(list(settings.redact), settings.redact_hook, Pseudonyms(settings.pseudonymize, key))
        self.selection = ThreadSelection(settings.include_workflows, settings.exclude_workflows, settings.sample_ratio)
        self._reset_state()
        _renew_after_fork(self)

    def _make_delivery(self) -> Delivery:
        """Uploads on workers of this process, or (`delivery="process"`, not the sidecar) in a helper process."""
        queue = lambda: DeliveryQueue(self._sender, self.settings, self.counters)  # noqa: E731
        if self.settings.delivery == "process" and not self.push_back:
            return HelperDelivery(self.settings, self.counters, fallback=queue)
        return queue()

    def _make_buffer(self) -> TraceBuffer:
        settings = self.settings
        return TraceBuffer(
            # in process a late child comes an export batch or two after its root: the pending traces' bound
            # is plenty, and an app's RSS levels off after 10,000 runs, not 100,000 (about 8 MB less)
            remember_roots=REMEMBERED_ROOTS if self.push_back else max(1, settings.max_pending_traces),
            max_traces=settings.max_pending_traces,
            max_age_s=settings.pending_ttl_s,
            max_spans_per_trace=settings.max_spans_per_trace,
            settle_s=self._settle_s,
            root_wait_s=settings.root_wait_s,
            options=ConversionOptions(
                max_message_chars=settings.max_message_chars,
                include_tools=settings.include_tools,
                pricing=Pricing.available(settings.model_aliases),
                eval_rules=settings.eval_ratings,
            ),
            counters=self.counters,
            conventions=default_conventions(settings.association_prefix),
        )

    def _reset_state(self) -> None:
        self.recent = RecentAnswers()  # where recent runs' answers are: for feedback and evaluations that come later
        # Runs converted but not placed in their session yet (the shared book failed) wait in `appends`:
        # retried at each tick; their traces count as held (the write-ahead log keeps their requests).
        self.appends = Appends(
            self.sessions, self.settings.max_pending_traces, repeats_recognised=self.delivery.spooled
        )
        self._warned_token = False
        self._ticker: threading.Thread | None = None
        self._stopped = threading.Event()

    def renew_after_fork(self) -> None:
        """In a forked child: empty buffer, counters from zero, own connections, spool owner and sessions."""
        ticking = self._ticker is not None and not self._stopped.is_set()
        self.counters.reset_after_fork()
        self.buffer = self._make_buffer()
        self._sender.reset_after_fork()
        if self.sessions is not None:
            self.sessions.reset_after_fork()
        self.delivery.reset_after_fork()
        self._reset_state()
        if ticking:
            self.start_ticker()

    def start_ticker(self, interval_s: float = 1.0) -> None:
        """In process, nothing else wakes the buffer: a daemon thread releases roots that waited long enough
        (a provider call with no LangChain span around it, a chain whose parent never came)."""
        if self._ticker is not None:
            return

        def run() -> None:
            while not self._stopped.wait(interval_s):
                if self.buffer.waiting or self.appends.waiting:
                    try:
                        self.tick()
                    except Exception:
                        _logger.exception("otel-context: releasing waiting roots failed")

        self._ticker = threading.Thread(target=run, name="otel-context-ticker", daemon=True)
        self._ticker.start()

    @property
    def can_send(self) -> bool:
        """A token is needed except for a loopback endpoint (the local Context API may run without one)."""
        return bool(self.settings.token) or self.settings.loopback

    def accept(self, records: Iterable[SpanRecord]) -> bool:
        """Convert what these spans complete and queue it; False if any thread was dropped (a flush waits
        through `flush`, which `ContextSpanProcessor.force_flush` calls)."""
        records = list(records)
        ok = self._submit(self.buffer.add(records))
        for span in records:  # feedback given later, in a trace of its own, names what it rates
            target = feedback_target(span)
            rating = span_rating(span) if target is not None else None
            if target is not None and rating is not None:
                self._rate(*target, rating)
        return ok

    def accept_events(self, events: Iterable[LogEvent]) -> None:
        """Events recorded as log records (the sidecar's OTLP logs, or `ContextLogExporter` in process):
        evaluation results join their run's thread when it is not built yet (metadata and rating), else
        rate its answer with a PATCH, as later feedback does. Other log records are ignored."""
        logged = []
        for event in events:
            evaluation = event_evaluation(event)
            if evaluation is None:
                continue
            if event.trace_id is None:  # emitted outside any span: nothing names its run
                self.counters.add("evaluations_unmatched")
                continue
            logged.append((event.trace_id, event.span_id, evaluation))
        if logged:
            for trace_id, root_id, evaluation in self.buffer.add_evaluations(logged):
                self._rate_late(trace_id, root_id, evaluation)

    def _rate_late(self, trace_id: int, root_id: int | None, evaluation: Evaluation) -> None:
        """An evaluation of a run whose thread was sent: with rating rules, a PATCH of the answer's rating
        (the lowest of the evaluators' ratings; never over the user's own). Thread metadata is fixed once sent."""
        self.counters.add("evaluations_late")
        rules = self.settings.eval_ratings
        if not rules:
            return
        root_span = format(root_id, "016x") if root_id is not None else None
        found, rating = self.recent.judge(format(trace_id, "032x"), root_span, evaluation, rules)
        if found is None:
            self.counters.add("evaluations_unmatched")
            return
        if rating is not None and self.can_send:
            self.delivery.submit_rating(found[0], found[1], rating)
            self.counters.add("ratings_sent")

    def tick(self) -> bool:
        """Queue the roots whose settle time has passed (the sidecar calls this on a timer), and the runs
        that wait for the session book."""
        return self._submit(self.buffer.due())

    def backlog_full(self) -> bool:
        """True when new threads would be dropped, or the session book fails: the sidecar then asks its
        Collector to retry later."""
        return self.appends.waiting or self.delivery.backlog_full(coming=self.buffer.pending_roots)

    def backlog_reason(self) -> str:
        """Why `backlog_full()` is true, for the answer that pushes back."""
        if self.appends.waiting:
            return "cannot use its session store (runs wait for it)"
        return "has a full delivery queue"

    def holds(self, trace_id: int) -> bool:
        """Whether spans or a converted run of this trace still wait here (the buffer, or the session book)."""
        return self.buffer.holds(trace_id) or self.appends.holds(format(trace_id, "032x"))

    def flush(self, timeout_s: float) -> bool:
        self._submit(self.buffer.due())
        return self.delivery.flush(timeout_s)

    def shutdown(self, timeout_s: float) -> int:
        """Build every pending root, deliver within `timeout_s`; the number of threads left undelivered.

        Ends within about `timeout_s` whatever the API does (uploads still in flight are cut short),
        and says in one line what was not delivered, with the same number `stats()` shows.
        """
        self._stopped.set()
        try:
            self._submit(self.buffer.drain())
        except KeyboardInterrupt:  # Ctrl-C while the last runs are built: stop at once, not after `timeout_s`
            timeout_s = 0.0
            raise
        finally:
            left = self.delivery.shutdown(timeout_s)
            self._sender.close()
            if self.sessions is not None:
                self.sessions.close()
        if left and self.delivery.spooled:
            _logger.warning(
                "otel-context: %d thread(s) not delivered at shutdown stay in the spool for the next start", left
            )
        elif left and self.counters.get("threads_unconfirmed"):
            _logger.warning(
                "otel-context: %d thread(s) not delivered at shutdown (threads_dropped=%d; threads_unconfirmed=%d: "
                "an earlier try may have stored them, so they are not sent again)",
                left,
                self.counters.get("threads_dropped"),
                self.counters.get("threads_unconfirmed"),
            )
        elif left:
            _logger.warning(
                "otel-context: %d thread(s) not delivered at shutdown were dropped (threads_dropped=%d)",
                left,
                self.counters.get("threads_dropped"),
            )
        return left

    def _prepare(self, threads: list[ConversationThread]) -> list[ConversationThread]:
        """Filter, sample, redact, and turn each run into what one POST appends (`Appends`: a thread of its
        own, or its session's thread; runs the session store cannot place yet wait there)."""
        kept: list[ConversationThread] = []
        for thread in threads:
            skipped = self.selection.verdict(thread, thread.name)
            if skipped is not None:
                self.counters.add(skipped)
                continue
            kept.append(self.redactor.thread(thread) if self.redactor else thread)
        built = self.appends.build(kept)
        if built.dropped:
            self.counters.add("threads_dropped", built.dropped)
        if built.repeated:
            self.counters.add("turns_repeated", built.repeated)
        for append in built.appends:
            self.recent.remember(append)
        return [append.sent for append in built.appends]

    def _rate(self, key: str, value: str, rating: int) -> None:
        """Feedback from a later trace: PATCH the rating onto the answer it names, at its index in the
        appended thread."""
        found: tuple[str, int] | None = None
        if key == SESSION_TARGET and self.sessions is not None:
            value = self.redactor.metadata("session_id", value)  # the book holds sessions as they left
            try:
                found = self.sessions.latest_answer(value)
            except SessionStoreUnavailable:
                found = None
        else:
            found = self.recent.find(value)
        if found is None or not self.can_send:
            self.counters.add("ratings_unmatched")
            _logger.info("otel-context: feedback for %s=%s matches no recent thread", key, value)
            return
        thread_id, index = found
        self.recent.rated_by_user(found)
        self.delivery.submit_rating(thread_id, index, rating)
        self.counters.add("ratings_sent")

    def _submit(self, threads: list[ConversationThread]) -> bool:
        """Prepare and queue threads; False if any was dropped."""
        if not threads and not self.appends.waiting:
            return True
        if not self.can_send:
            self._warn_missing_token()
            self.counters.add("threads_dropped", len(threads))
            return False
        prepared = self._prepare(threads)
        return self.delivery.submit(prepared, admitted=self.push_back) == len(prepared)

    def _warn_missing_token(self) -> None:
        if not self._warned_token:
            self._warned_token = True
            _logger.error(
                "otel-context: no Context API token is set (%s); threads are dropped and counted in "
                "threads_dropped until one is configured.",
                ", ".join(TOKEN_VARIABLES),
            )


def _renew_after_fork(pipeline: Pipeline) -> None:
    """Renew `pipeline` in a forked child, as the SDK's BatchProcessor does (without keeping it alive)."""
    if not hasattr(os, "register_at_fork"):
        return
    ref = weakref.ref(pipeline)

    def renew() -> None:
        target = ref()
        if target is not None:
            target.renew_after_fork()

    os.register_at_fork(after_in_child=renew)


def _without_refused_spool(settings: ExporterSettings) -> ExporterSettings:
    """In process, a spool directory that cannot be ours (`private_directory`) never stops tracing: one
    error line, and threads stay in memory. The sidecar refuses to start instead (`otel-context serve`)."""
    if settings.spool_dir:
        try:
            private_directory(settings.spool_dir)
        except OSError as error:
            _logger.error("otel-context: %s; threads stay in this process's memory (no spool)", error)
            return dataclasses.replace(settings, spool_dir=None)
    return settings


def _session_store(settings: ExporterSettings, session_db: str | None, *, strict: bool) -> SessionStore:
    """Sessions in Redis for a `redis://` URL, in SQLite for a path (or beside the spool), else in memory.

    `strict` (the sidecar) lets a Redis URL without the `redis` client stop the start; in process, a
    setting of ours never stops tracing: one error line, and the in-memory book.
    """
    path = session_db or settings.session_db
    if is_redis_url(path):
        assert path is not None
        try:
            return RedisSessions(path, settings.session_max_turns, settings.session_ttl_s, fallback=not strict)
        except ConfigError as error:
            if strict:
                raise
            _logger.error("otel-context: %s; sessions stay in this process's memory", error)
            return MemorySessions(max_turns=settings.session_max_turns, ttl_s=settings.session_ttl_s)
    if path is None and settings.spool_dir:
        path = os.path.join(settings.spool_dir, "otel-context-sessions.db")
    if path:
        try:
            return SqliteSessions(path, settings.session_max_turns, settings.session_ttl_s)
        except OSError as error:  # NotPrivate: a directory or file another user could write, or a symlink
            if strict:
                raise
            _logger.error("otel-context: %s; sessions stay in this process's memory", error)
    return MemorySessions(max_turns=settings.session_max_turns, ttl_s=settings.session_ttl_s)
