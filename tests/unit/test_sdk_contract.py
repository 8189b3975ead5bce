"""What otel-context relies on in the OTel SDK, all public; a release that changes it fails here, loudly.

`ContextSpanProcessor.force_flush()` waits for delivery because `BatchSpanProcessor.force_flush()` hands
every span ended so far to the exporter before it returns; `OTEL_TRACES_EXPORTER=context` installs it
through the configurator's `export_span_processor` argument. Nothing reads the SDK's frames or locals.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from otel_context import ContextSpanExporter, ContextSpanProcessor, exporter
from otel_context.autoconfig import takes_export_span_processor
from otel_context.exporter import export_processor

HOUR_MS = 3_600_000  # the processor's own schedule never fires within a test


class Recording(ContextSpanExporter):
    """A `ContextSpanExporter` that only notes what it is given and when it is flushed."""

    def __init__(self) -> None:  # no pipeline: nothing to deliver
        self.spans: list[str] = []
        self.flushes: list[tuple[int, int]] = []  # (spans exported by then, timeout given)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += [span.name for span in spans]
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        self.flushes.append((len(self.spans), timeout_millis))
        return True

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        pass


class Plain(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[str] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += [span.name for span in spans]
        return SpanExportResult.SUCCESS


def test_the_sdk_batch_processor_exports_every_ended_span_before_its_force_flush_returns():
    plain = Plain()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(plain, schedule_delay_millis=HOUR_MS))
    for n in range(700):  # more than one export batch (512)
        provider.get_tracer("t").start_span(f"span {n}").end()
    assert provider.force_flush(10_000)
    assert len(plain.spans) == 700, "BatchSpanProcessor.force_flush no longer exports before it returns"
    provider.shutdown()


def test_our_processor_flushes_the_exporter_after_the_spans_are_exported_within_one_timeout():
    recording = Recording()
    processor = ContextSpanProcessor(recording, schedule_delay_millis=HOUR_MS)
    assert isinstance(processor, BatchSpanProcessor)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    for n in range(3):
        provider.get_tracer("t").start_span(f"span {n}").end()
    assert provider.force_flush(5_000)
    ((exported, timeout_ms),) = recording.flushes
    assert exported == 3 and 0 < timeout_ms <= 5_000
    assert processor.force_flush() and recording.flushes[-1][1] > 25_000  # no timeout: the SDK's 30 s
    provider.shutdown()


def test_the_configurator_can_choose_our_processor_for_our_exporter_only():
    assert takes_export_span_processor(), (
        "the SDK's configurator no longer takes export_span_processor: OTEL_TRACES_EXPORTER=context would get "
        "a plain BatchSpanProcessor, whose force_flush does not wait for delivery"
    )
    assert type(export_processor(Recording())) is ContextSpanProcessor
    assert type(export_processor(Plain())) is BatchSpanProcessor


def test_opentelemetry_instrument_s_configurator_installs_our_processor(tmp_path):
    script = textwrap.dedent(
        """
        import os
        os.environ["OTEL_TRACES_EXPORTER"] = "context"
        os.environ["OTEL_EXPORTER_CONTEXT_ENDPOINT"] = "http://127.0.0.1:9"
        os.environ["OTEL_EXPORTER_CONTEXT_TOKEN"] = "t"
        from otel_context import exporter
        made = []
        class Watched(exporter.ContextSpanProcessor):
            def __init__(self, *args, **kwargs):
                made.append(self)
                super().__init__(*args, **kwargs)
        exporter.ContextSpanProcessor = Watched
        from otel_context.autoconfig import ContextConfigurator
        ContextConfigurator().configure()
        from opentelemetry import trace
        trace.get_tracer("t").start_span("one").end()
        assert len(made) == 1, made
        assert trace.get_tracer_provider().force_flush(2_000) is not None
        print("installed", made[0].exporter.stats()["spans_received"])
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "installed 1" in done.stdout, done.stdout + done.stderr


def test_the_exporter_reads_no_frames():
    source = inspect.getsource(exporter)
    assert "_getframe" not in source and "f_locals" not in source
