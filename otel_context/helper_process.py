"""The delivery helper process (`OTEL_EXPORTER_CONTEXT_DELIVERY=process`): `python -m otel_context.helper_process`.

An entry point beside the exporter: it sends as the app's pipeline would (`Pipeline._send_batch`: a session
thread of a shared book goes out as the book holds it then), on the queue of `delivery.helper_main`.
Started by `delivery.helper`, never by hand.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from .config import ExporterSettings
from .counters import Counters
from .delivery.helper_main import AckingDeliveryQueue, serve
from .pipeline import Pipeline


class HelperPipeline(Pipeline):
    """The pipeline as far as sending goes; conversion and preparation stay in the app."""

    def _make_delivery(self) -> AckingDeliveryQueue:
        return AckingDeliveryQueue(self._send_batch, self.settings, self.counters, abort=self._sender.abort)

    def close(self, timeout_s: float) -> int:
        """Deliver within `timeout_s` and stop; what was left (the app reports it, once)."""
        try:
            return self.delivery.shutdown(timeout_s)
        finally:
            self._sender.close()
            if self.sessions is not None:
                self.sessions.close()


def open_delivery(settings: ExporterSettings, counters: Counters) -> tuple[AckingDeliveryQueue, Callable[[float], int]]:
    pipeline = HelperPipeline(settings, counters)
    return pipeline.delivery, pipeline.close  # type: ignore[return-value]


def main() -> int:
    return serve(open_delivery)


if __name__ == "__main__":
    sys.exit(main())
