"""What a model call costs: a price table per model (USD per 1M input and output
tokens), and local models priced by the CPU seconds they measurably used.

The built-in table, ``DEFAULT_PRICES``, holds the providers' public list prices
as of ``PRICES_AS_OF`` (standard tier, text tokens, no caching or batch
discount). ``FLYWHEEL_PRICES`` names a JSON or YAML file whose entries override
it and add to it::

    {"gpt-4o-mini": {"input": 0.15, "output": 0.6}, "my-finetune": [0.3, 1.2]}

``PriceTable.from_file(settings.prices)`` builds the table the ingest path
prices every ``llm_call`` with; ``load_prices`` reads and checks such a file.

A model is priced by the longest table entry that is a prefix of its name and
ends at a word boundary (the end of the name, or ``-``, ``_``, ``:``, ``@``):
``gpt-4o`` prices ``gpt-4o-2024-08-06`` but not ``gpt-4o-mini`` (its own entry)
or ``gpt-4.5``. Names are compared case-insensitively, and a provider prefix is
ignored when the whole name has no price: ``openai/gpt-4o-mini``,
``models/gemini-2.5-flash``, ``meta-llama/Llama-3.3-70B-Instruct-Turbo``,
``us.anthropic.claude-sonnet-4-20250514-v1:0``. A model with no entry has no
price: its cost stays unknown rather than guessed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from flywheel.errors import ConfigError

__all__ = ["DEFAULT_PRICES", "LOCAL_CPU_HOUR_USD", "PRICES_AS_OF", "PriceTable", "load_prices"]

#: When the built-in list prices were taken from the providers' pricing pages.
PRICES_AS_OF = "2025-11"

DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    # OpenAI
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-5-pro": (15.00, 120.00),
    "gpt-5.1": (1.25, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-2024-05-13": (5.00, 15.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o-realtime": (5.00, 20.00),
    "gpt-4o-mini-realtime": (0.60, 2.40),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-4": (30.00, 60.00),
    "gpt-4-32k": (60.00, 120.00),
    "gpt-3.5-turbo": (0.50, 1.50),
    "o1": (15.00, 60.00),
    "o1-mini": (1.10, 4.40),
    "o1-pro": (150.00, 600.00),
    "o3": (2.00, 8.00),
    "o3-pro": (20.00, 80.00),
    "o3-mini": (1.10, 4.40),
    "o3-deep-research": (10.00, 40.00),
    "o4-mini": (1.10, 4.40),
    "o4-mini-deep-research": (2.00, 8.00),
    # Anthropic
    "claude-opus-4-5": (5.00, 25.00),
    "claude-opus-4-1": (15.00, 75.00),
    "claude-opus-4": (15.00, 75.00),
    "claude-sonnet-4-5": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-opus": (15.00, 75.00),
    "claude-3-haiku": (0.25, 1.25),
    # Google (prompts up to 200K tokens; 128K for 1.5)
    "gemini-2.5-pro": (1.25, 10.00),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "gemini-2.0-flash": (0.10, 0.40),
    "gemini-2.0-flash-lite": (0.075, 0.30),
    "gemini-1.5-pro": (1.25, 5.00),
    "gemini-1.5-flash": (0.075, 0.30),
    "gemini-1.5-flash-8b": (0.0375, 0.15),
    # Meta Llama: Meta sells no tokens itself; these are Together AI's serverless prices
    "llama-4-maverick": (0.27, 0.85),
    "llama-4-scout": (0.18, 0.59),
    "llama-3.3-70b": (0.88, 0.88),
    "llama-3.1-405b": (3.50, 3.50),
    "llama-3.1-70b": (0.88, 0.88),
    "llama-3.1-8b": (0.18, 0.18),
    # Mistral
    "mistral-large": (2.00, 6.00),
    "mistral-medium": (0.40, 2.00),
    "mistral-small": (0.10, 0.30),
    "magistral-medium": (2.00, 5.00),
    "magistral-small": (0.50, 1.50),
    "codestral": (0.30, 0.90),
    "pixtral-large": (2.00, 6.00),
    "ministral-8b": (0.10, 0.10),
    "ministral-3b": (0.04, 0.04),
    "open-mistral-nemo": (0.15, 0.15),
}

#: What one CPU core-hour costs (a typical on-demand cloud vCPU).
LOCAL_CPU_HOUR_USD = 0.05

_BOUNDARY = frozenset("-_:@")
# A cloud's vendor prefix (Bedrock: ``anthropic.``, ``us.anthropic.``, ``meta.``).
_VENDOR = re.compile(
    r"^(?:[a-z]{2,4}\.)?(?:anthropic|meta|mistral|cohere|amazon|ai21|deepseek|openai|google)\."
)
_CACHE_LIMIT = 10_000


class PriceTable:
    """Prices per 1M tokens by model-name prefix; ``rate`` and ``cost`` look them up."""

    def __init__(
        self,
        prices: Mapping[str, tuple[float, float]] | None = None,
        *,
        cpu_hour_usd: float = LOCAL_CPU_HOUR_USD,
    ) -> None:
        given = DEFAULT_PRICES if prices is None else prices
        self.prices = {name.lower(): (float(i), float(o)) for name, (i, o) in given.items()}
        self.cpu_hour_usd = cpu_hour_usd
        self._longest_first = sorted(self.prices, key=len, reverse=True)
        self._rates: dict[str, tuple[float, float] | None] = {}

    @classmethod
    def from_file(cls, path: Path | None, *, cpu_hour_usd: float = LOCAL_CPU_HOUR_USD) -> PriceTable:
        """The built-in prices, overridden and extended by the file at ``path`` (None: built-ins only)."""
        prices = dict(DEFAULT_PRICES)
        if path is not None:
            prices.update(load_prices(path))
        return cls(prices, cpu_hour_usd=cpu_hour_usd)

    def rate(self, model: str) -> tuple[float, float] | None:
        """USD per 1M (input, output) tokens of ``model``; None when it has no price.

        Remembered per model name: ingestion asks once per ``llm_call``.
        """
        try:
            return self._rates[model]
        except KeyError:
            pass
        found = self._lookup(model)
        if len(self._rates) >= _CACHE_LIMIT:  # names come from traffic: keep the memory bounded
            self._rates.clear()
        self._rates[model] = found
        return found

    def cost(
        self, model: str, input_tokens: int, output_tokens: int, cpu_seconds: float | None = None
    ) -> float | None:
        """USD for one call; None when the model is neither priced nor measured."""
        if cpu_seconds is not None:
            return cpu_seconds * self.cpu_hour_usd / 3600
        found = self.rate(model)
        if found is None:
            return None
        per_input, per_output = found
        return (input_tokens * per_input + output_tokens * per_output) / 1_000_000

    def _lookup(self, model: str) -> tuple[float, float] | None:
        name = model.strip().lower()
        bare = name.rsplit("/", 1)[-1]
        for candidate in dict.fromkeys((name, bare, _VENDOR.sub("", bare))):
            prefix = self._longest_prefix(candidate)
            if prefix is not None:
                return self.prices[prefix]
        return None

    def _longest_prefix(self, name: str) -> str | None:
        for prefix in self._longest_first:
            if name.startswith(prefix) and (
                len(name) == len(prefix) or name[len(prefix)] in _BOUNDARY or not prefix[-1].isalnum()
            ):
                return prefix
        return None


def load_prices(path: Path) -> dict[str, tuple[float, float]]:
    """The prices in a JSON or YAML file of ``{"model-prefix": {"input": I, "output": O}}``
    (or ``[I, O]``), USD per 1M tokens.

    Raises ``ConfigError`` naming the file, the model and what is wrong.
    """
    import yaml

    where = f"the price file {path} (FLYWHEEL_PRICES)"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{where} cannot be read: {reason}") from exc
    try:
        data = orjson.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{where} is not valid JSON or YAML: {exc}") from exc
    if not isinstance(data, dict):
        example = '{"gpt-4o-mini": {"input": 0.15, "output": 0.6}}'
        raise ConfigError(f"{where} must map model names to prices, e.g. {example}; it holds {data!r:.80}")
    prices: dict[str, tuple[float, float]] = {}
    for model, entry in data.items():
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"{where}: {model!r} is not a model name")
        prices[model.strip().lower()] = _price_entry(entry, f"{where}, model {model!r}")
    return prices


def _price_entry(entry: Any, where: str) -> tuple[float, float]:
    if isinstance(entry, dict):
        unknown = sorted(str(k) for k in entry if k not in ("input", "output"))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; give 'input' and 'output'")
        missing = [k for k in ("input", "output") if k not in entry]
        if missing:
            raise ConfigError(f"{where}: no {' or '.join(missing)} price")
        values = [entry["input"], entry["output"]]
    elif isinstance(entry, list) and len(entry) == 2:
        values = list(entry)
    else:
        raise ConfigError(
            f'{where}: a price is {{"input": I, "output": O}} or [I, O] (USD per 1M tokens), not {entry!r}'
        )
    checked = []
    for side, value in zip(("input", "output"), values, strict=True):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: the {side} price {value!r} is not a number")
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{where}: the {side} price {value!r} is not a finite, non-negative number")
        checked.append(float(value))
    return checked[0], checked[1]
