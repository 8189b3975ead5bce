"""Delivery: a bounded queue, background workers, retries, an optional durable spool. Knows nothing of spans."""

from .item import QueueItem
from .pipeline import DeliveryQueue
from .sender import ContextSender, SendOutcome

__all__ = ["ContextSender", "DeliveryQueue", "QueueItem", "SendOutcome"]
