"""Prompt-rules strategy: mine the failures a dataset holds and turn the
largest clusters into concise system-prompt rules.

The failures are the agent's answers that humans corrected (the dataset's
correction examples, which keep the agent's answer beside the human's), and,
without a correction, failed answers whose calls break the offered tool's
schema. Each failure is put in one cluster by a deterministic diff of the
calls: no call where one was needed, extra or missing calls, the wrong
function, a missing required argument, an invented argument, a value of the
wrong type, a wrong value of a named argument. A cluster that holds at least
``min_share`` of the failures (and ``min_count`` of them) becomes a rule from
its template, or is written by a teacher model when one is configured
(``teacher``, or ``FLYWHEEL_TEACHER_MODEL``: any OpenAI-compatible endpoint),
shown the cluster's counts and examples; an answer that is not one short
instruction falls back to the template. The version records each rule with
its counts, examples and author.

A rule is kept only if it helps (``ablate``): the student answers up to
``dev_items`` examples of the dataset's train and few-shot splits (never the
held-out eval split, which the cycle's gate uses) with all the new rules, and
again without each one; a rule stays when more answers are right with it
than without it. With no rule left there is no candidate. The cycle's gate
then judges the whole candidate on held-out data, as for any strategy.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flywheel.errors import InvalidInput
from flywheel.improve.few_shot import Candidate, make_candidate
from flywheel.models.base import last_user_text
from flywheel.records import AgentVersion
from flywheel.store import Store

__all__ = ["PromptRulesStrategy", "failure_cluster"]

TEMPLATES = {
    "no_call": "When a function fits the question, answer with a call to it; [] only when none fits.",
    "extra_calls": "Make exactly one call unless the question asks for several separate things.",
    "missing_calls": "When the question asks for several things, make one call for each of them.",
    "wrong_function": "Choose the function whose name and description match what the question asks for.",
    "missing_argument": "Always give the required arguments{detail}, taking their values from the question.",
    "invented_argument": "Leave out optional arguments the question does not mention{detail}.",
    "wrong_type": "Give each argument the type its declaration says: numbers as numbers{detail}.",
    "wrong_value": "Copy argument values{detail} exactly as the question gives them, units and spelling too.",
}


def _calls(answer: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list((answer or {}).get("tool_calls") or [])


def _type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def failure_cluster(agent: list[dict[str, Any]], right: list[dict[str, Any]]) -> tuple[str, str | None]:
    """(cluster, the argument concerned or None) of an answer against the right one."""
    if right and not agent:
        return "no_call", None
    if len(agent) > len(right):
        return "extra_calls", None
    if len(agent) < len(right):
        return "missing_calls", None
    for mine, theirs in zip(agent, right, strict=True):
        if mine.get("name") != theirs.get("name"):
            return "wrong_function", None
        a, b = mine.get("arguments") or {}, theirs.get("arguments") or {}
        if missing := sorted(set(b) - set(a)):
            return "missing_argument", missing[0]
        if invented := sorted(set(a) - set(b)):
            return "invented_argument", invented[0]
        for key in sorted(b):
            if _type(a[key]) != _type(b[key]):
                return "wrong_type", key
            if a[key] != b[key]:
                return "wrong_value", key
    return "other", None


@dataclass
class PromptRulesStrategy:
    name: str = "prompt_rules"
    k: int = 3  # accepted for a uniform interface; unused
    max_rules: int = 3
    min_share: float = 0.1
    min_count: int = 2
    ablate: bool = True
    dev_items: int = 40
    min_dev_items: int = 10
    model_for: Callable[[Any], Any] | None = None  # AgentConfig -> ChatModel (default: its own model)
    teacher: str | None = None  # a model spec (openai:MODEL@URL); default: Settings.teacher_model
    teacher_model: Any = None  # a ChatModel instead of the spec

    def build(self, store: Store, workload: str, dataset_id: str, current: AgentVersion | None) -> Candidate:
        failures: list[tuple[str, str | None, str]] = []
        samples: dict[str, list[dict[str, Any]]] = defaultdict(list)  # shown to a teacher
        for split in ("train", "few_shot"):  # never the held-out split
            for row in store.dataset_examples(dataset_id, split):
                if row["source"] == "correction" and row.get("rejected") is not None:
                    wrong, right = _calls(row["rejected"]), _calls(row["target"])
                    cluster, arg = failure_cluster(wrong, right)
                    failures.append((cluster, arg, last_user_text(row["messages"])))
                    if len(samples[cluster]) < 3:
                        samples[cluster].append(
                            {
                                "question": last_user_text(row["messages"])[:300],
                                "agent": wrong,
                                "human": right,
                            }
                        )
        if not failures:
            raise InvalidInput(
                f"dataset {dataset_id} holds no corrected failures to learn rules from",
                hint="rules come from human corrections; review and correct some failures first",
            )
        counts = Counter(cluster for cluster, _, _ in failures if cluster != "other")
        args: dict[str, Counter[str]] = defaultdict(Counter)
        examples: dict[str, list[str]] = defaultdict(list)
        for cluster, arg, question in failures:
            if arg:
                args[cluster][arg] += 1
            if len(examples[cluster]) < 2:
                examples[cluster].append(question[:80])
        rules: list[str] = []
        changes: list[str] = []
        teacher = self._teacher()
        for cluster, n in counts.most_common():
            if len(rules) >= self.max_rules or n < self.min_count or n / len(failures) < self.min_share:
                break
            top = [a for a, _ in args[cluster].most_common(3)]
            detail = f" (such as {', '.join(top)})" if top else ""
            rule, author = TEMPLATES[cluster].format(detail=detail), "template"
            if teacher is not None:
                written = _teacher_rule(teacher, cluster, n, len(failures), top, samples[cluster])
                if written is not None:
                    rule, author = written, f"teacher {teacher.name}"
            rules.append(rule)
            changes.append(
                f"rule for {cluster.replace('_', ' ')} ({n} of {len(failures)} corrected failures, "
                f"e.g. {examples[cluster][0]!r}; by {author}): {rule}"
            )
        if not rules:
            raise InvalidInput(
                f"no failure cluster of dataset {dataset_id} is large enough for a rule "
                f"({dict(counts)} of {len(failures)})",
                hint="lower min_share / min_count, or collect more corrections",
            )
        config: dict[str, Any] = dict(current.config) if current else {"model": "local"}
        kept = [r for r in config.get("rules") or [] if r not in rules]
        if self.ablate:
            rules, changes = self._ablated(store, dataset_id, config, kept, rules, changes)
        config["rules"] = kept + rules
        return make_candidate(
            store,
            workload,
            config,
            strategy=self.name,
            dataset_id=dataset_id,
            current=current,
            changes=changes,
        )

    def _teacher(self) -> Any:
        if self.teacher_model is not None:
            return self.teacher_model
        from flywheel.config import Settings

        spec = self.teacher or Settings().teacher_model
        if not spec:
            return None
        from flywheel.models.registry import load_model

        return load_model(spec)

    def _ablated(
        self,
        store: Store,
        dataset_id: str,
        config: dict[str, Any],
        kept: list[str],
        rules: list[str],
        changes: list[str],
    ) -> tuple[list[str], list[str]]:
        """The rules that help on the dev items, and the changes saying how each did."""
        from flywheel.agents.tool_agent import AgentConfig
        from flywheel.evaluate.offline import answer_items, dataset_items
        from flywheel.store.artefacts import reader

        items = [i for i in dataset_items(store, dataset_id, ("train", "few_shot")) if i.expected is not None]
        items = sorted(items, key=lambda i: hashlib.sha256(i.id.encode()).hexdigest())[: self.dev_items]
        if len(items) < self.min_dev_items:
            return rules, [
                *changes,
                f"rules not ablated: {len(items)} dev items (fewer than {self.min_dev_items})",
            ]
        model_for = self.model_for or _own_model(store)
        fetch = reader(store)

        def right(active: list[str]) -> int:
            agent = AgentConfig.from_config({**config, "rules": kept + active}, artefacts=fetch)
            return sum(r.correct for r in answer_items(agent, items, model_for))

        with_all = right(rules)
        helping, notes = [], []
        for n, rule in enumerate(rules):
            without = right([r for r in rules if r != rule])
            verdict = "kept" if with_all > without else "dropped"
            notes.append(
                f"{changes[n]} -- {verdict}: {with_all}/{len(items)} dev answers right with it, "
                f"{without} without"
            )
            if with_all > without:
                helping.append(rule)
        if not helping:
            raise InvalidInput(
                f"no rule helped the student on {len(items)} dev items of dataset {dataset_id}: "
                + "; ".join(n.split(" -- ")[1] for n in notes),
                hint="collect more corrections, or keep the rules unmeasured (ablate=False)",
            )
        return helping, notes


def _own_model(store: Store) -> Callable[[Any], Any]:
    from flywheel.models.registry import load_model

    return lambda agent: load_model(agent.model, adapter=agent.adapter, store=store)


_TEACHER_SYSTEM = (
    "You write system-prompt rules for a small tool-calling model. A rule is one short "
    "imperative sentence that tells the model how to avoid a kind of mistake. Reply with the rule only."
)


def _teacher_rule(
    teacher: Any, cluster: str, n: int, total: int, arguments: list[str], samples: list[dict[str, Any]]
) -> str | None:
    """A rule for one failure cluster written by the teacher, or None when its
    answer is not one short instruction (the caller keeps the template)."""
    import json

    from flywheel.models.base import ChatRequest

    shown = "\n".join(
        f"- question: {s['question']!r}\n  model called: {json.dumps(s['agent'])[:400]}\n"
        f"  correct calls: {json.dumps(s['human'])[:400]}"
        for s in samples
    )
    prompt = (
        f"{n} of {total} corrected failures of the model are of one kind: "
        f"{cluster.replace('_', ' ')}"
        + (f" (arguments involved: {', '.join(arguments)})" if arguments else "")
        + f". Examples:\n{shown}\n\nWrite one rule (at most 200 characters) for the model's "
        "system prompt that prevents this kind of failure."
    )
    result = teacher.complete(
        ChatRequest(
            messages=[{"role": "user", "content": prompt}], tools=[], system=_TEACHER_SYSTEM, max_tokens=120
        )
    )
    if result.error is not None or result.calls:
        return None
    lines = [
        line.strip().strip('"').strip() for line in (result.text or "").strip().splitlines() if line.strip()
    ]
    if len(lines) != 1 or not 10 <= len(lines[0]) <= 300:
        return None
    return lines[0].removeprefix("Rule:").strip()
