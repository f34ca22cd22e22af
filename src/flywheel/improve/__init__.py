"""Improve owns turning a curated dataset and the current agent version into a
candidate version, one strategy per module (few-shot first; knowledge, prompt
rules, tool policy and fine-tuning follow), each recording what it changed."""

from flywheel.improve.few_shot import Candidate, FewShotStrategy

STRATEGIES = {"few_shot": FewShotStrategy}

__all__ = ["STRATEGIES", "Candidate", "FewShotStrategy"]
