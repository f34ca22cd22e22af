"""What a model call costs: a price table per model (USD per 1M input and output
tokens), and local models priced by the CPU seconds they measurably used.

Edit the table with ``FLYWHEEL_PRICES`` (JSON ``{"model": [input, output]}``) or
pass your own to ``PriceTable``. Prefix matches: ``gpt-4o`` prices
``gpt-4o-2024-08-06``; the longest matching prefix wins.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["DEFAULT_PRICES", "LOCAL_CPU_HOUR_USD", "PriceTable"]

DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "llama-3.1-70b": (0.88, 0.88),
    "llama-3.1-8b": (0.18, 0.18),
}

#: What one CPU core-hour costs (a typical on-demand cloud vCPU).
LOCAL_CPU_HOUR_USD = 0.05


class PriceTable:
    def __init__(
        self,
        prices: Mapping[str, tuple[float, float]] | None = None,
        *,
        cpu_hour_usd: float = LOCAL_CPU_HOUR_USD,
    ) -> None:
        self.prices = dict(DEFAULT_PRICES if prices is None else prices)
        self.cpu_hour_usd = cpu_hour_usd

    def cost(
        self, model: str, input_tokens: int, output_tokens: int, cpu_seconds: float | None = None
    ) -> float | None:
        """USD for one call; None when the model is neither priced nor measured."""
        if cpu_seconds is not None:
            return cpu_seconds * self.cpu_hour_usd / 3600
        matches = [name for name in self.prices if model.startswith(name)]
        if not matches:
            return None
        per_input, per_output = self.prices[max(matches, key=len)]
        return (input_tokens * per_input + output_tokens * per_output) / 1_000_000
