"""Improve owns turning a curated dataset and the current agent version into a
candidate version, one strategy per module (few-shot first; knowledge, prompt
rules, tool policy and fine-tuning follow), each recording what it changed."""

from collections.abc import Callable
from functools import partial

from flywheel.improve.few_shot import Candidate, FewShotStrategy

#: strategy name -> a factory taking keyword settings (``k=...``)
STRATEGIES: dict[str, Callable[..., FewShotStrategy]] = {
    "few_shot": FewShotStrategy,
    "few_shot_per_request": partial(FewShotStrategy, name="few_shot_per_request", per_request=True),
}

__all__ = ["STRATEGIES", "Candidate", "FewShotStrategy"]
