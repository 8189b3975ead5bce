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
from .delivery import Delivery, DeliveryQueue
from .delivery.helper_main import serve
from .delivery.item import QueueItem
from .delivery.sender import ContextSender


def open_delivery(
    settings: ExporterSettings, counters: Counters, on_settled: Callable[[QueueItem], None]
) -> tuple[Delivery, Callable[[float], int]]:
    """The helper's queue (`on_settled(item)` once each item is settled and counted), and how to stop it:
    deliver within a timeout, then what was left."""
    sender = ContextSender(settings)
    delivery = DeliveryQueue(sender, settings, counters, on_settled=on_settled)

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
