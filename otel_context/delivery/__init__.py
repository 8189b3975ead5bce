"""Delivery: a bounded queue, background workers, retries, an optional durable spool. Knows nothing of spans."""

from .base import Delivery
from .item import QueueItem
from .sender import ContextSender, SendOutcome
from .workers import DeliveryQueue

__all__ = ["ContextSender", "Delivery", "DeliveryQueue", "QueueItem", "SendOutcome"]
