"""Improve owns turning a curated dataset and the current agent version into a
candidate version, one strategy per module (few-shot, fixed or per request;
prompt rules; tool policy; knowledge; LoRA fine-tuning of the local student,
or fine-tuning through an OpenAI-compatible API), each recording what it
changed."""

from collections.abc import Callable
from functools import partial
from typing import Protocol

from flywheel.improve.few_shot import Candidate, FewShotStrategy
from flywheel.improve.fine_tune_api import OpenAIFineTuneStrategy
from flywheel.improve.lora import LoraStrategy
from flywheel.improve.prompt_rules import PromptRulesStrategy
from flywheel.improve.tool_policy import ToolPolicyStrategy
from flywheel.records import AgentVersion
from flywheel.store import Store


class Strategy(Protocol):
    name: str

    def build(
        self, store: Store, workload: str, dataset_id: str, current: AgentVersion | None
    ) -> Candidate: ...


#: strategy name -> a factory taking keyword settings (``k=...``)
STRATEGIES: dict[str, Callable[..., Strategy]] = {
    "few_shot": FewShotStrategy,
    "few_shot_per_request": partial(FewShotStrategy, name="few_shot_per_request", per_request=True),
    "prompt_rules": PromptRulesStrategy,
    "tool_policy": ToolPolicyStrategy,
    "openai_fine_tune": OpenAIFineTuneStrategy,
    "lora": LoraStrategy,
}

__all__ = [
    "STRATEGIES",
    "Candidate",
    "FewShotStrategy",
    "LoraStrategy",
    "PromptRulesStrategy",
    "Strategy",
    "ToolPolicyStrategy",
]
