"""Improve owns turning a curated dataset and the current agent version into a
candidate version, one strategy per module (few-shot, fixed or per request;
prompt rules; tool policy; knowledge; LoRA fine-tuning of the local student,
or fine-tuning through an OpenAI-compatible API), each recording what it
changed."""

from collections.abc import Callable
from functools import partial
from typing import Protocol

from flywheel.errors import InvalidInput
from flywheel.improve.few_shot import Candidate, FewShotStrategy
from flywheel.improve.fine_tune_api import OpenAIFineTuneStrategy
from flywheel.improve.knowledge import KnowledgeStrategy
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
    "knowledge": KnowledgeStrategy,
    "openai_fine_tune": OpenAIFineTuneStrategy,
    "lora": LoraStrategy,
}


def check_strategy(spec: str) -> list[str]:
    """The strategy names of ``spec``: one name, or several joined by ``+``
    (a combination, applied left to right); raises naming the unknown ones."""
    names = [n.strip() for n in spec.split("+")]
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown or not all(names):
        raise InvalidInput(
            f"unknown strategy {spec!r}" + (f" ({', '.join(unknown)})" if unknown else ""),
            hint=f"choose from {', '.join(STRATEGIES)}, or combine them with + (e.g. lora+prompt_rules)",
        )
    if len(set(names)) != len(names):
        raise InvalidInput(f"strategy {spec!r} names one strategy twice")
    return names


def build_candidate(
    store: Store,
    workload: str,
    dataset_id: str,
    current: AgentVersion | None,
    spec: str,
    **options: object,
) -> Candidate:
    """A candidate by one strategy or a combination (``lora+prompt_rules``): each
    strategy builds on the version the previous one made (so the version chain
    shows every step), and the candidate's changes list them all; one that has
    nothing to add is skipped. Options a strategy does not take are not passed
    to it."""
    import inspect

    version, changes = current, list[str]()
    names = check_strategy(spec)
    candidate: Candidate | None = None
    for name in names:
        factory = STRATEGIES[name]
        target = factory.func if isinstance(factory, partial) else factory
        accepted = inspect.signature(target).parameters
        strategy = factory(**{k: v for k, v in options.items() if k in accepted})
        try:
            candidate = strategy.build(store, workload, dataset_id, version)
        except InvalidInput as exc:
            if len(names) == 1:
                raise
            # in a combination, a strategy with nothing to add (no rule that helps,
            # no knowledge) is skipped and said so; the others still build
            changes.append(f"[{name}] skipped: {exc.message}")
            continue
        changes.extend(f"[{name}] {c}" if len(names) > 1 else c for c in candidate.changes)
        version = candidate.version
    if candidate is None:
        raise InvalidInput(f"no strategy of {spec!r} could build a candidate: " + "; ".join(changes))
    return Candidate(candidate.version, changes)


__all__ = [
    "STRATEGIES",
    "Candidate",
    "FewShotStrategy",
    "KnowledgeStrategy",
    "build_candidate",
    "check_strategy",
    "LoraStrategy",
    "PromptRulesStrategy",
    "Strategy",
    "ToolPolicyStrategy",
]
