"""Curate owns turning raw task logs into immutable, versioned datasets of
high-signal examples: declarative rules over built-in signals, quality on
named dimensions, deduplication, leak-free splits, staleness, review routing,
exports and signal density."""

from flywheel.curate.pipeline import CurationResult, curate
from flywheel.curate.rules import CONFIRMED_RULES, DEFAULT_RULES, RulesFile, load_rules, parse_rules

__all__ = [
    "CONFIRMED_RULES",
    "DEFAULT_RULES",
    "CurationResult",
    "RulesFile",
    "curate",
    "load_rules",
    "parse_rules",
]
