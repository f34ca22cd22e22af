"""The expected value of labelling a review item: its ``priority``.

A review budget is small and the flood of doubtful tasks is large, so each
item is ranked by what a human label of it is likely to be worth::

    priority = w_u * uncertainty + w_d * disagreement + w_c * coverage + w_n * novelty + boost

with the weights ``w_*`` in the rules file (``review_priority``, see
``flywheel.curate.rules.ReviewPriority``; default 1, 1, 1, 0.2) and each
term in [0, 1]:

* **uncertainty**: how unsure the model is of its answer: ``1 - confidence``
  (the task's logged confidence; none logged: 0), or, for an example whose
  quality score is just under its threshold (the rule's margin), how close it
  came: ``1 - (threshold - score) / borderline``; the larger of the two. A
  label of an answer the model is unsure of is likely to change it.
* **disagreement**: signals that contradict each other, where a label settles
  which one is right (the table ``DISAGREEMENTS``): the user's reaction against
  the outcome the agent claimed, a correction or an edit waiting for
  confirmation, a tool that failed in a claimed success, a failure (a correction
  would teach); and the LLM judge disputing our quality score, more when its
  score sits near the threshold (``0.5 + 0.5 * (1 - |judge - threshold| / 0.5)``).
* **coverage**: how thinly the evaluation set covers the item's strata: for
  its thinnest stratum (each tool its answer calls, and its intent: the task's
  ``intent`` or ``category`` metadata) with ``n`` evaluation items,
  ``1 / sqrt(1 + n)``, the standard error of that stratum's accuracy relative
  to a stratum without items. An answer that called no offered tool (a tool
  that does not exist) says nothing of its stratum: the tools it was offered
  stand in, and the term is their mean. An item without an answer to learn
  from (no model call) has none.
* **novelty**: ``1 / (1 + count)`` for the item's rarest tool among the
  latest curation run's examples.
* **boost**: added by the cycle (``flywheel.review.boost_review_items``), for
  instance where a candidate and the stable version answer an item differently.

The reason shown with the item names its largest term, and the second when it
weighs at least a quarter point ("low confidence 0.31; tool `refund` has 2 eval
items"). The terms' inputs are kept with the item (``factors``), so the cycle
can rank pending items again when the evaluation set has grown
(``flywheel.review.rank_review_items``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from math import sqrt
from typing import Any

from flywheel.curate.rules import ReviewPriority

__all__ = [
    "DISAGREEMENTS",
    "Coverage",
    "Scorer",
    "disagreement_of",
    "disagreement_signal",
    "uncertainty_of",
    "value",
]

#: signal -> (its disagreement term, what the reason says)
DISAGREEMENTS: dict[str, tuple[float, str]] = {
    "negative_on_success": (1.0, "the user reacted badly to a claimed success"),
    "positive_on_failure": (1.0, "the user approved a claimed failure"),
    "correction": (0.8, "a correction waits for confirmation"),
    "edited": (0.8, "the user edited the output"),
    "tool_error_on_success": (0.5, "a tool failed in a claimed success"),
    "failed": (0.4, "a failure (a correction would teach)"),
}

#: the second term is named in the reason when it weighs at least this much
_SECOND = 0.25
_NONE = (0.0, "")
_TEXT = ("(text)",)


@dataclass
class Coverage:
    """Evaluation items per stratum: per tool an answer calls (``(text)`` for a
    text answer) and per intent (None: not known); ``examples``: each tool's
    examples in the latest curation run (for novelty); ``source`` says which
    evaluation set was counted."""

    tools: Mapping[str, int] = field(default_factory=dict)
    intents: Mapping[str, int] | None = None
    source: str = "eval split"
    examples: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of_strata(
        cls, strata: Mapping[str, int], source: str, examples: Mapping[str, int] | None = None
    ) -> Coverage:
        """From counts per ``intent|tool,tool`` stratum (the standing set's summary)."""
        tools: dict[str, int] = {}
        intents: dict[str, int] = {}
        for stratum, count in strata.items():
            intent, _, names = stratum.rpartition("|")
            for name in names.split(",") if names else _TEXT:
                tools[name] = tools.get(name, 0) + count
            if intent and intent != "-":
                intents[intent] = intents.get(intent, 0) + count
        return cls(tools, intents, source, examples or {})


def disagreement_signal(
    success: bool | None,
    negative: bool,
    positive: bool,
    edited: bool,
    corrected: bool,
    tool_trouble: bool,
) -> str | None:
    """The strongest disagreement signal of a task (a key of ``DISAGREEMENTS``)."""
    if negative and success is True:
        return "negative_on_success"
    if positive and success is False:
        return "positive_on_failure"
    if corrected:
        return "correction"
    if edited:
        return "edited"
    if tool_trouble and success is True:
        return "tool_error_on_success"
    if success is False or negative:
        return "failed"
    return None


#: "low confidence 0.00" ... "low confidence 1.00" (made once: curation says it of many items)
_LOW_CONFIDENCE = [f"low confidence {i / 100:.2f}" for i in range(101)]


def uncertainty_of(confidence: float | None, margin: Any = None) -> tuple[float, str]:
    """The uncertainty term and what it says: ``1 - confidence``, or how close a
    quality score (``margin``: [dimension, score, threshold, borderline]) came to
    its threshold, the larger."""
    term = _NONE
    if confidence is not None and confidence < 1:
        confidence = max(0.0, confidence)
        term = (1.0 - confidence, _LOW_CONFIDENCE[int(confidence * 100 + 0.5)])
    if margin:
        dimension, score, threshold, borderline = margin
        close = 1.0 - (threshold - score) / borderline if borderline > 0 else 1.0
        close = min(1.0, max(0.0, close))
        if close > term[0]:
            term = (close, f"{dimension} {score:.2f} just under its threshold {threshold:g}")
    return term


def disagreement_of(signal: str | None, judge: Any = None) -> tuple[float, str]:
    """The disagreement term and what it says: the signal's (``DISAGREEMENTS``), or
    the judge's dispute (``judge``: [dimension, judge's score, ours, threshold]),
    the larger."""
    term = DISAGREEMENTS.get(signal, _NONE) if signal is not None else _NONE
    if judge:
        dimension, theirs, ours, threshold = judge
        near = 0.5 + 0.5 * max(0.0, 1.0 - abs(theirs - threshold) / 0.5)
        if near > term[0]:
            term = (near, f"judge disagrees on {dimension}: {theirs:.2f} vs {ours:.2f}")
    return term


def _plural(n: int) -> str:
    return "" if n == 1 else "s"


class Scorer:
    """Priorities and reasons against one coverage and one set of weights (the
    terms of a tool and intent are worked out once)."""

    def __init__(self, coverage: Coverage | None, weights: ReviewPriority) -> None:
        self.coverage, self.weights = coverage, weights
        self._strata: dict[tuple[tuple[str, ...], str | None, bool], tuple[float, str, float, str]] = {}

    def strata_terms(
        self, tools: tuple[str, ...], intent: str | None, guessed: bool = False
    ) -> tuple[float, str, float, str]:
        """(weighted coverage term, its text, weighted novelty term, its text);
        ``guessed``: ``tools`` are the ones the item was offered (its answer called
        none of them): the coverage term is their mean."""
        key = (tools, intent, guessed)
        known = self._strata.get(key)
        if known is not None:
            return known
        coverage, weights = self.coverage, self.weights
        covered = (0.0, "")
        if coverage is not None:
            thinnest, kind, name = -1, "", ""
            for tool in tools or _TEXT:
                n = coverage.tools.get(tool, 0)
                if thinnest < 0 or n < thinnest:
                    thinnest, kind, name = n, "tool", tool
            term = 1 / sqrt(1 + thinnest)
            if guessed:
                term = sum(1 / sqrt(1 + coverage.tools.get(t, 0)) for t in tools) / len(tools)
                kind = "offered tool" if len(tools) == 1 else f"of {len(tools)} offered tools,"
            if intent is not None and coverage.intents is not None and thinnest > 0:
                n = coverage.intents.get(intent, 0)
                if 1 / sqrt(1 + n) > term:
                    thinnest, kind, name, term = n, "intent", intent, 1 / sqrt(1 + n)
            text = f"{kind} `{name}` has {thinnest} eval item{_plural(thinnest)}"
            covered = (weights.coverage * term, text)
        novel = (0.0, "")
        if tools and coverage is not None and coverage.examples:
            count, tool = min((coverage.examples.get(t, 0), t) for t in tools)
            novel = (weights.novelty / (1 + count), f"rare tool `{tool}` ({count} example{_plural(count)})")
        known = self._strata[key] = (*covered, *novel)
        return known

    def score(
        self,
        uncertainty: tuple[float, str],
        disagreement: tuple[float, str],
        tools: tuple[str, ...] | None,
        intent: str | None,
        rule: str,
        extra: tuple[tuple[float, str], ...] = (),
        *,
        guessed: bool = False,
    ) -> tuple[float, str]:
        """The priority and the reason of an item whose answer calls ``tools`` (None:
        no answer to learn from), sent to review by ``rule`` (the reason when every
        term is 0); ``extra``: weighted terms (a boost) added as they are."""
        weights = self.weights
        u = weights.uncertainty * uncertainty[0]
        d = weights.disagreement * disagreement[0]
        if tools is None:
            c, c_text, n, n_text = 0.0, "", 0.0, ""
        else:
            c, c_text, n, n_text = self.strata_terms(tools, intent, guessed)
        priority = u + d + c + n
        first = second = _NONE
        for term in ((u, uncertainty[1]), (d, disagreement[1]), (c, c_text), (n, n_text), *extra):
            if term[0] > first[0]:
                first, second = term, first
            elif term[0] > second[0]:
                second = term
        for term in extra:
            priority += term[0]
        if first[0] <= 0:
            return 0.0, f"rule {rule!r}"
        if second[0] < _SECOND:
            return round(priority, 6), first[1]
        return round(priority, 6), f"{first[1]}; {second[1]}"

    def score_factors(self, factors: Mapping[str, Any], rule: str) -> tuple[float, str]:
        """The priority and reason of an item from its stored ``factors`` (see ``value``)."""
        extra: list[tuple[float, str]] = []
        boost = factors.get("boost") or 0.0
        if boost:
            extra.append((float(boost), str(factors.get("boost_reason") or "boosted")))
        base = factors.get("base")
        if base:  # the priority of an item stored before its factors were kept
            extra.append((float(base[0]), str(base[1])))
        tools = factors.get("tools")
        return self.score(
            uncertainty_of(factors.get("confidence"), factors.get("margin")),
            disagreement_of(factors.get("signal"), factors.get("judge")),
            None if tools is None else tuple(tools),
            factors.get("intent"),
            rule,
            tuple(extra),
            guessed=bool(factors.get("guessed")),
        )


def value(
    factors: Mapping[str, Any], coverage: Coverage | None, weights: ReviewPriority, rule: str = ""
) -> tuple[float, str]:
    """A review item's priority and its reason, from its ``factors``:
    ``confidence`` (float or None), ``margin`` ([dimension, score, threshold,
    borderline] or None), ``judge`` ([dimension, judge's score, ours,
    threshold] or None), ``signal`` (a key of ``DISAGREEMENTS`` or None),
    ``tools`` (the answer's tools; None: no answer; ``guessed``: the tools it
    was offered, its answer called none of them), ``intent``, ``boost`` and
    ``boost_reason``, ``base`` ([priority, reason] of an item stored before
    factors were kept); ``rule``: the rule that sent it to review (the reason when
    every term is 0)."""
    return Scorer(coverage, weights).score_factors(factors, rule)
