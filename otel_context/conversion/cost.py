"""What a thread's model calls cost, from the token usage they reported, priced by `genai-prices`.

`genai-prices` (MIT, by Pydantic) bundles a price table per release, with dated price changes, cached-token
and reasoning-token rates. Only that bundled table is read: its `UpdatePrices` background download is
never started, so pricing stays pure (no I/O) and the same spans always cost the same. Deployment and
custom model names are mapped to priced models by aliases (`azure/my-gpt4o-deploy=gpt-4o`); a model the
table does not know gets no price, never a guessed one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from ..conventions import Usage

_logger = logging.getLogger(__name__)
UNKNOWN_MODEL = "unknown"


def parse_aliases(raw: str) -> dict[str, str]:
    """`name=model,name=model` as a dict; raises ValueError on an entry without `=`."""
    aliases: dict[str, str] = {}
    for entry in raw.split(","):
        if not entry.strip():
            continue
        name, sep, model = entry.partition("=")
        if not sep or not name.strip() or not model.strip():
            raise ValueError(f"{entry.strip()!r} is not name=model")
        aliases[name.strip()] = model.strip()
    return aliases


@dataclass(frozen=True, slots=True)
class ThreadCost:
    """Per-model prices of one thread; `unpriced` names the models that had usage but no price."""

    by_model: dict[str, Decimal]
    unpriced: tuple[str, ...]
    source: str

    @property
    def total(self) -> Decimal | None:
        """The thread's cost, only when every model that used tokens was priced (never a partial sum)."""
        return sum(self.by_model.values(), Decimal(0)) if self.by_model and not self.unpriced else None


class Pricing:
    """Prices usage per model with the bundled `genai-prices` table, after mapping aliases."""

    def __init__(self, aliases: Mapping[str, str] | None = None) -> None:
        import genai_prices  # the optional `[cost]` extra; `Pricing.available()` checks first

        self._genai_prices: Any = genai_prices
        self.aliases = dict(aliases or {})
        self.source = f"genai-prices {genai_prices.__version__} (bundled prices)"

    @classmethod
    def available(cls, aliases: Mapping[str, str] | None = None) -> Pricing | None:
        """A `Pricing`, or None (and one log line) when `genai-prices` is not installed."""
        try:
            return cls(aliases)
        except ImportError:
            _logger.info("otel-context: no cost_usd on threads; install otel-context[cost] (genai-prices) to add it")
            return None

    def resolve(self, model: str) -> str:
        """A deployment or custom name as the model it runs; `azure/x=gpt-4o` matches `x` and `azure/x`."""
        if model in self.aliases:
            return self.aliases[model]
        for name, target in self.aliases.items():
            if "/" in name and name.split("/", 1)[1] == model:
                return target
        return model

    def price(self, model: str, usage: Usage, at_ns: int) -> Decimal | None:
        """The price of `usage` on `model` at that time, or None when the table does not know the model."""
        if model == UNKNOWN_MODEL:
            return None
        ref = self.resolve(model)
        provider, _, name = ref.rpartition("/") if "/" in ref else ("", "", ref)
        gp = self._genai_prices
        inputs = max(usage.input_tokens, usage.cache_read_tokens + usage.cache_write_tokens)
        counts = {
            "input_tokens": inputs,
            "output_tokens": max(usage.output_tokens, usage.reasoning_tokens),
            "cache_read_tokens": usage.cache_read_tokens or None,
            "cache_write_tokens": usage.cache_write_tokens or None,
            "output_reasoning_tokens": usage.reasoning_tokens or None,
        }
        try:
            found = gp.calc_price(
                gp.Usage(**counts),
                name,
                provider_id=provider or None,
                genai_request_timestamp=datetime.fromtimestamp(at_ns / 1e9, tz=timezone.utc),
            )
        except (LookupError, ValueError):
            return None
        return Decimal(found.total_price)

    def thread_cost(self, usage_by_model: Mapping[str, Usage], at_ns: int) -> ThreadCost | None:
        """Prices of the models that used tokens; None when none did."""
        used = {model: usage for model, usage in usage_by_model.items() if usage}
        if not used:
            return None
        by_model: dict[str, Decimal] = {}
        unpriced = []
        for model, usage in used.items():
            price = self.price(model, usage, at_ns)
            if price is None:
                unpriced.append(model)
            else:
                by_model[model] = price
        return ThreadCost(by_model, tuple(unpriced), self.source)


def usd(amount: Decimal) -> str:
    """Dollars as plain decimal text, to a millionth of a cent."""
    text = format(amount.quantize(Decimal("0.00000001")).normalize(), "f")
    return "0" if text in ("0", "-0") else text
