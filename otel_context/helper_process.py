"""The delivery helper process (`OTEL_EXPORTER_CONTEXT_DELIVERY=process`): `python -m otel_context.helper_process`.

An entry point beside the exporter: the app converts and prepares (sessions placed, appends built), the
helper only delivers, on the queue of `delivery.helper_main` over a sender of its own. Started by
`delivery.helper`, never by hand.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from .config import ExporterSettings
from .counters import Counters
from .delivery.helper_main import AckingDeliveryQueue, serve
from .delivery.sender import ContextSender


def open_delivery(settings: ExporterSettings, counters: Counters) -> tuple[AckingDeliveryQueue, Callable[[float], int]]:
    """The helper's queue, and how to stop it: deliver within a timeout, then what was left."""
    sender = ContextSender(settings)
    delivery = AckingDeliveryQueue(sender, settings, counters)

    def close(timeout_s: float) -> int:
        try:
            return delivery.shutdown(timeout_s)
        finally:
            sender.close()

    return delivery, close


def main() -> int:
    return serve(open_delivery)


if __name__ == "__main__":
    sys.exit(main())
