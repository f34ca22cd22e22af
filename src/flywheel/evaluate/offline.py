"""Offline evaluation: a candidate version against the current one, on the
same held-out items, with numbers people can trust.

* Items come from a dataset version's **eval split only** (never train or the
  few-shot pool); each item's expected calls are the example's target.
* Each version answers every item (bounded threads); results are cached per
  (version, item), so an interrupted run resumes and a re-run costs nothing.
* The comparison is paired: the accuracy difference with a paired bootstrap
  95% confidence interval, McNemar's exact test on the discordant items,
  per-category breakdown, and latency, tokens and cost per task.
* Where each item's label came from is shown apart (``label_origins``): the
  baseline is right on its own answers that users confirmed and wrong on its
  own corrected ones by construction, so items from other traffic are the
  ones that compare both versions on equal terms.
* Because users confirm right answers more often than they correct wrong
  ones, those labels over-represent the baseline's successes. The gate's
  estimate (``reweighted``) puts the baseline's own items back in the
  proportions of its traffic: its accuracy there, estimated from the thumbs
  and ratings its tasks received (``feedback_accuracy``), weighs its confirmed
  items, and the rest weighs its corrected ones.
* The gate promotes only if the one-sided exact McNemar test (or, for the
  reweighted estimate, its one-sided posterior p) finds a gain at ``alpha``
  and no guard metric (error rate, latency, cost) regresses beyond its
  tolerance. It states the smallest gain it could detect at its n and the
  items the policy's smallest gain worth shipping would need, and an
  anytime-valid e-value verdict on the outcomes in evaluation order
  (``flywheel.evaluate.stats``); the decision and its reasons are stored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import and_, case, func, or_, select

from flywheel.agents.tool_agent import AgentConfig, ToolAgent
from flywheel.errors import InvalidInput
from flywheel.evaluate.ast_check import check_calls
from flywheel.evaluate.stats import (
    decode_outcomes,
    detectable_gain,
    encode_outcomes,
    exact_mcnemar,
    mcnemar_p,
    needed_items,
    paired_bootstrap,
    reweighted_difference,
    sequential_test,
    should_stop,
    wilson_interval,
)
from flywheel.models.base import ChatModel, ChatRequest, last_user_text
from flywheel.models.pricing import PriceTable
from flywheel.records import AgentVersion, new_id, utcnow
from flywheel.store import Store
from flywheel.store import tables as t

__all__ = [
    "EvalItem",
    "GatePolicy",
    "ORIGINS",
    "compare",
    "compare_judged",
    "eval_items",
    "evaluate_version",
    "feedback_accuracy",
    "gate",
    "intents",
    "items_of_rows",
    "judge_scores",
    "label_origins",
    "mcnemar_p",
    "paired_bootstrap",
    "reweighted_difference",
    "should_stop",
    "wilson_interval",
]


@dataclass(frozen=True)
class EvalItem:
    id: str
    category: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    expected: list[dict[str, Any]] | None  # possible answers, as the AST checker takes them
    text: str | None = None  # an expected text answer (matched exactly or semantically)


#: Cosine similarity above which a text answer means the same as the expected one.
SEMANTIC_THRESHOLD = 0.85


def _normal_text(text: str) -> str:
    return " ".join(text.lower().split()).strip(" .!")


def _expected(target: dict[str, Any]) -> list[dict[str, Any]] | None:
    calls = target.get("tool_calls")
    if calls is None:
        return None
    return [{c["name"]: {arg: [value] for arg, value in (c.get("arguments") or {}).items()}} for c in calls]


def eval_items(store: Store, dataset_id: str) -> list[EvalItem]:
    """The dataset's eval split as items (tool-call targets only)."""
    dataset = store.get_dataset(dataset_id)
    items = dataset_items(store, dataset["id"], ("eval",))
    if not items:
        raise InvalidInput(
            f"dataset {dataset['id']} has no usable eval split",
            hint="curate more traffic, or raise splits.eval in the rules file",
        )
    return items


def dataset_items(store: Store, dataset_id: str, splits: tuple[str, ...]) -> list[EvalItem]:
    """The examples of ``splits`` as items to answer (sft examples: tool-call or text targets)."""
    return items_of_rows([row for split in splits for row in store.dataset_examples(dataset_id, split)])


def items_of_rows(rows: Sequence[dict[str, Any]]) -> list[EvalItem]:
    """Example rows as items to answer (sft examples: tool-call or text targets)."""
    items = []
    for row in rows:
        if row["kind"] != "sft":
            continue
        # The version under test brings its own system prompt (``system_for``):
        # the one logged with the example was the serving version's.
        messages = [m for m in row["messages"] if m.get("role") not in ("system", "developer")]
        expected = _expected(row["target"])
        if expected is None:
            text = row["target"].get("content")
            if text:
                tools = row["tools"] or []
                items.append(EvalItem(row["id"], "(text answer)", messages, tools, None, str(text)))
            continue
        tool_names = sorted({c["name"] for c in row["target"]["tool_calls"]})
        items.append(
            EvalItem(row["id"], ",".join(tool_names) or "(no call)", messages, row["tools"] or [], expected)
        )
    return items


def _answerer(
    agent: ToolAgent, config: AgentConfig, items: list[EvalItem]
) -> Callable[[EvalItem], ItemResult]:
    """The function answering one item with ``agent`` and judging the answer."""
    embedder = None
    if any(item.text is not None for item in items):
        from flywheel.models.embedding import Embedder

        embedder = Embedder()

    def judge_text(expected: str, answer: str) -> bool:
        if _normal_text(expected) == _normal_text(answer):
            return True
        if embedder is None or not answer.strip():
            return False
        from flywheel.models.embedding import cosine

        a, b = embedder.embed([expected, answer])
        return cosine(a, b) >= SEMANTIC_THRESHOLD

    def run(item: EvalItem) -> ItemResult:
        request = ChatRequest(
            messages=item.messages,
            tools=agent.offered_tools(item.tools),
            system=config.system_for(item.messages),
            few_shot=config.shots_for(item.messages),
            max_tokens=config.max_tokens,
        )
        result = agent.model.complete(request)
        if item.expected is None:  # a text answer: exact, else semantic match
            correct = result.error is None and not result.calls and judge_text(item.text or "", result.text)
        else:
            correct = result.error is None and check_calls(result.calls, item.expected, item.tools).correct
        cost = agent.prices.cost(result.model, result.input_tokens, result.output_tokens, result.cpu_seconds)
        return ItemResult(
            item.id,
            item.category,
            correct,
            result.seconds,
            result.input_tokens,
            result.output_tokens,
            cost,
            result.error,
            {"calls": result.calls, "text": result.text, "malformed": result.malformed},
        )

    return run


def answer_items(
    config: AgentConfig,
    items: list[EvalItem],
    model_for: Callable[[AgentConfig], ChatModel],
    *,
    workers: int = 2,
) -> list[ItemResult]:
    """Every item answered by a config that is not (yet) a version: nothing is
    cached or stored (what a strategy tries while it builds a candidate)."""
    agent = ToolAgent(model_for(config), config)
    run = _answerer(agent, config, items)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(run, items))


@dataclass
class ItemResult:
    item_id: str
    category: str
    correct: bool
    seconds: float
    input_tokens: int
    output_tokens: int
    cost: float | None
    error: str | None = None
    answer: Any = None  # {"calls": [...], "text": "...", "malformed": bool}: what the version answered

    @property
    def malformed(self) -> bool:
        """An answer that did not parse: wrong, but not a failed call."""
        return bool(isinstance(self.answer, dict) and self.answer.get("malformed"))


def _cached(store: Store, version_id: str) -> dict[str, ItemResult]:
    c = t.eval_results.c
    with store.engine.connect() as conn:
        rows = conn.execute(select(t.eval_results).where(c.version_id == version_id)).mappings()
        return {
            r["item_id"]: ItemResult(
                r["item_id"],
                r["category"],
                r["correct"],
                r["seconds"],
                r["input_tokens"],
                r["output_tokens"],
                r["cost"],
                r["error"],
                r["calls"],
            )
            for r in rows
        }


def evaluate_version(
    store: Store,
    version: AgentVersion | None,
    items: list[EvalItem],
    model_for: Callable[[AgentConfig], ChatModel],
    *,
    dataset_id: str,
    workers: int = 2,
    progress: Callable[[int], None] | None = None,
    prices: PriceTable | None = None,
) -> dict[str, ItemResult]:
    """Every item answered by ``version`` (None: the base config), cached per (version, item)."""
    version_id = version.id if version else "base"
    from flywheel.store.artefacts import reader

    config = AgentConfig.from_version(version, artefacts=reader(store))
    agent = ToolAgent(model_for(config), config, prices=prices)
    done = _cached(store, version_id)
    todo = [item for item in items if item.id not in done]
    run = _answerer(agent, config, todo)

    finished = len(items) - len(todo)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for outcome in pool.map(run, todo):
            done[outcome.item_id] = outcome
            with store.engine.begin() as conn:  # one row at a time: an interrupted run loses nothing done
                conn.execute(
                    t.eval_results.insert(),
                    {
                        "version_id": version_id,
                        "dataset_id": dataset_id,
                        "item_id": outcome.item_id,
                        "category": outcome.category,
                        "correct": outcome.correct,
                        "calls": outcome.answer,
                        "error": outcome.error,
                        "seconds": outcome.seconds,
                        "input_tokens": outcome.input_tokens,
                        "output_tokens": outcome.output_tokens,
                        "cost": outcome.cost,
                        "created_at": utcnow(),
                    },
                )
            finished += 1
            if progress:
                progress(finished)
    return {item.id: done[item.id] for item in items}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def intents(items: list[EvalItem], *, threshold: float = 0.6) -> dict[str, str]:
    """Each item's intent: a cluster of similar requests (leader clustering on local
    sentence embeddings), named after its first request."""
    from flywheel.models.embedding import Embedder, cosine

    questions = [last_user_text(i.messages) for i in items]
    vectors = Embedder().embed(questions)
    leaders: list[tuple[list[float], str]] = []
    out = {}
    for item, question, vector in zip(items, questions, vectors, strict=True):
        match = next((name for lead, name in leaders if cosine(lead, vector) >= threshold), None)
        if match is None:
            match = question[:60]
            leaders.append((vector, match))
        out[item.id] = match
    return out


#: Where an eval item's label came from, relative to the baseline version.
ORIGINS = {
    "baseline_confirmed": "the baseline's own answers that users confirmed (right by construction)",
    "baseline_corrected": "corrections of the baseline's own answers (wrong by construction)",
    "other_traffic": "answers of other versions, and corrections of them",
}


def label_origins(store: Store, items: Sequence[EvalItem], baseline_id: str | None) -> dict[str, str]:
    """Item id -> one of ``ORIGINS``: did the baseline version itself produce the
    task whose answer (confirmed, or corrected) became the item's label?"""
    e, tk = t.examples.c, t.tasks.c
    ids = [i.id for i in items]
    origin: dict[str, str] = {}
    with store.engine.connect() as conn:
        for start in range(0, len(ids), 500):
            rows = conn.execute(
                select(e.id, e.source, tk.agent_version)
                .join(t.tasks, tk.id == e.task_id)
                .where(e.id.in_(ids[start : start + 500]))
            )
            for example_id, source, version in rows:
                if baseline_id is None or version != baseline_id:
                    origin[example_id] = "other_traffic"
                else:
                    corrected = source == "correction"
                    origin[example_id] = "baseline_corrected" if corrected else "baseline_confirmed"
    return {i: origin.get(i, "other_traffic") for i in ids}


def feedback_accuracy(store: Store, version_id: str | None) -> dict[str, int]:
    """How many of a version's tasks users rated up (thumbs up, 4-5 stars) and
    down (thumbs down, 1-2 stars); a task rated both ways counts for neither.
    Users rate right and wrong answers alike (unlike retries or corrections,
    which only wrong answers get), so up / (up + down) estimates the share of
    its traffic the version got right."""
    if version_id is None:
        return {"up": 0, "down": 0}
    f, tk = t.feedback.c, t.tasks.c
    up = func.max(case((or_(f.thumbs == 1, f.rating >= 4), 1), else_=0))
    down = func.max(case((or_(f.thumbs == -1, f.rating <= 2), 1), else_=0))
    per_task = (
        select(up.label("up"), down.label("down"))
        .select_from(t.feedback.join(t.tasks, tk.id == f.task_id))
        .where(tk.agent_version == version_id)
        .group_by(f.task_id)
        .subquery()
    )
    with store.engine.connect() as conn:
        row = conn.execute(
            select(
                func.sum(case((and_(per_task.c.up == 1, per_task.c.down == 0), 1), else_=0)),
                func.sum(case((and_(per_task.c.down == 1, per_task.c.up == 0), 1), else_=0)),
            )
        ).one()
    return {"up": int(row[0] or 0), "down": int(row[1] or 0)}


def compare(
    baseline: dict[str, ItemResult],
    candidate: dict[str, ItemResult],
    *,
    seed: int = 0,
    intent_of: dict[str, str] | None = None,
    origin_of: dict[str, str] | None = None,
    baseline_ratings: dict[str, int] | None = None,
    order: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The paired comparison; ``intent_of`` adds a per-intent breakdown,
    ``origin_of`` (``label_origins``) one by where the labels came from, and
    with ``baseline_ratings`` (``feedback_accuracy``) the difference
    ``reweighted`` for the bias of the baseline's own labels.

    ``sequence`` holds the paired outcomes in evaluation order (``order``,
    else the baseline results' order, which ``evaluate_version`` keeps as the
    items came), one character per item (``encode_outcomes``), for the
    gate's anytime-valid test."""
    ids = sorted(set(baseline) & set(candidate))
    a = [baseline[i].correct for i in ids]
    b = [candidate[i].correct for i in ids]
    low, high = paired_bootstrap(a, b, seed=seed)
    per_category = _breakdown(ids, baseline, candidate, {i: baseline[i].category for i in ids})
    reweighted = None
    if origin_of and baseline_ratings:
        by_origin: dict[str, list[tuple[bool, bool]]] = {}
        for i, x, y in zip(ids, a, b, strict=True):
            by_origin.setdefault(origin_of.get(i, "other_traffic"), []).append((x, y))
        reweighted = reweighted_difference(by_origin, baseline_ratings, seed=seed)
    common = set(ids)
    in_order = [i for i in (order if order is not None else baseline) if i in common]

    def side(results: dict[str, ItemResult]) -> dict[str, Any]:
        rows = [results[i] for i in ids]
        costs = [r.cost for r in rows if r.cost is not None]
        return {
            "accuracy": _mean([r.correct for r in rows]),
            # failed calls (exceptions, timeouts, a prompt too long); answers that do
            # not parse are wrong answers, counted by accuracy and shown apart
            "error_rate": _mean([r.error is not None and not r.malformed for r in rows]),
            "malformed_rate": _mean([r.malformed for r in rows]),
            "seconds_per_task": _mean([r.seconds for r in rows]),
            "tokens_per_task": _mean([r.input_tokens + r.output_tokens for r in rows]),
            "cost_per_task": _mean(costs) if costs else None,
        }

    return {
        "items": len(ids),
        "baseline": side(baseline),
        "candidate": side(candidate),
        "difference": _mean([float(y) - float(x) for x, y in zip(a, b, strict=True)]),
        "ci95": [low, high],
        "mcnemar_p": mcnemar_p(a, b),
        "discordant": {
            "baseline_only": sum(x and not y for x, y in zip(a, b, strict=True)),
            "candidate_only": sum(y and not x for x, y in zip(a, b, strict=True)),
        },
        "per_category": per_category,
        "per_intent": _breakdown(ids, baseline, candidate, intent_of) if intent_of else {},
        "per_origin": _breakdown(ids, baseline, candidate, origin_of) if origin_of else {},
        "reweighted": reweighted,
        "sequence": encode_outcomes([(baseline[i].correct, candidate[i].correct) for i in in_order]),
    }


def _breakdown(
    ids: list[str],
    baseline: dict[str, ItemResult],
    candidate: dict[str, ItemResult],
    group_of: dict[str, str],
) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for i in ids:
        row = out.setdefault(group_of.get(i, "(other)"), {"n": 0, "baseline": 0, "candidate": 0})
        row["n"] += 1
        row["baseline"] += baseline[i].correct
        row["candidate"] += candidate[i].correct
    return out


@dataclass
class GatePolicy:
    """A candidate passes when the test that it is better rejects at ``alpha``
    and no core metric regresses beyond its tolerance. Latency and cost are held
    to a ratio of the baseline's, or, when an absolute budget is set (a latency
    SLO, a cost ceiling), to that budget instead: a ratio to a baseline that
    answers nothing in no time says little.

    The test (``test``): "exact", McNemar's exact one-sided test on the
    discordant items (or, where the comparison has a ``reweighted`` estimate
    and ``reweight_own_labels`` holds, that estimate's one-sided p-value), on
    every item; "sequential", the anytime-valid e-value test
    (``sequential_test``), for an evaluation that may have stopped early.

    ``min_gain`` is the smallest gain worth shipping: the gate states the
    smallest gain it can detect with probability ``power`` at its n, and
    when that is more than ``min_gain``, how many items it would need
    (``decision["power"]``). It sizes the evaluation; it is not a bar the
    estimate must clear (``min_improvement`` is: with a value above 0 the
    gain's 95% CI lower bound must exceed it as well).
    """

    min_improvement: float = 0.0
    max_error_rate_increase: float = 0.02
    max_latency_ratio: float = 1.5
    max_cost_ratio: float = 1.5
    max_seconds_per_task: float | None = None
    max_cost_per_task: float | None = None
    # judge the gain by the ``reweighted`` estimate where the comparison has one
    reweight_own_labels: bool = True
    alpha: float = 0.05  # one-sided: the chance of promoting a candidate that is no better
    # 5 points: what a cycle's strategies deliver once the easy gains are in
    # (bench/cycles.py: +2 to +4 points after the first promotion), at a size a
    # standing eval set reaches in a few cycles (527 items at 20% discordance;
    # 2 points would need 3,184, beyond a cycle's review budget, and 0 sizes nothing)
    min_gain: float = 0.05
    power: float = 0.8
    test: Literal["exact", "sequential"] = "exact"


def _power(
    comparison: dict[str, Any], reweighted: dict[str, Any] | None, policy: GatePolicy
) -> dict[str, Any]:
    """What the exact test can detect at this n, at the observed discordance.
    For a reweighted estimate n is its effective number of items (Kish), and
    the items needed are scaled back to plain items by the same ratio."""
    items = int(comparison["items"])
    discordant = sum(comparison["discordant"].values())
    discordance = discordant / items if items else 0.0
    n = items
    if reweighted and reweighted.get("effective_items"):
        n = int(reweighted["effective_items"])
    mde = detectable_gain(n, discordance, alpha=policy.alpha, power=policy.power)
    needed = needed_items(policy.min_gain, discordance, alpha=policy.alpha, power=policy.power)
    if needed is not None and n and n != items:
        needed = int(-(-needed * items // n))
    return {
        "n": n,
        "items": items,
        "discordance": discordance,
        "alpha": policy.alpha,
        "power": policy.power,
        "mde": mde,
        "min_gain": policy.min_gain,
        "needed_items": needed,
        "enough": mde is not None and mde <= policy.min_gain,
    }


def _power_text(power: dict[str, Any]) -> str:
    n = power["n"] if power["n"] == power["items"] else f"{power['n']} effective"
    target = f"with {power['power']:.0%} power"
    if power["enough"]:
        worth = power["min_gain"]
        return f"{n} items detect gains of {power['mde']:.1%} or more {target} (worth shipping: {worth:.1%})"
    can = (
        f"the smallest gain detectable {target} is {power['mde']:.1%}"
        if power["mde"] is not None
        else f"no gain is detectable {target}"
    )
    needed = power["needed_items"]
    ask = f"needs {needed} items" if needed is not None else "needs over a million items"
    return f"too few items: at {n} {can}; the smallest worth shipping, {power['min_gain']:.1%}, {ask}"


def _significance(
    comparison: dict[str, Any],
    reweighted: dict[str, Any] | None,
    sequential: dict[str, Any] | None,
    policy: GatePolicy,
) -> tuple[bool, str, dict[str, Any]]:
    alpha = policy.alpha
    if policy.test == "sequential":
        if sequential is None:
            raise InvalidInput("the comparison holds no sequence of outcomes for the sequential test")
        won = sequential["decision"] == "win"
        where = f"after {sequential['stopped_at']} of {sequential['items']} items" if won else ""
        text = (
            f"anytime-valid test (e-value): {sequential['decision'] or 'no decision'} {where} "
            f"(win e = {sequential['e_win']:.3g}, needs >= {sequential['threshold']:.3g})"
        )
        return won, " ".join(text.split()), {"name": "sequential e-value", "alpha": alpha}
    if reweighted is not None:
        p = reweighted["p_no_gain"]
        text = (
            f"gain {reweighted['difference']:+.3f} (the baseline's own items reweighted to its traffic), "
            f"one-sided p = {p:.3g} vs alpha {alpha}"
        )
        if reweighted.get("empty_strata"):
            text += f"; estimated from like items: {', '.join(sorted(reweighted['empty_strata']))}"
        return p <= alpha, text, {"name": "reweighted posterior", "p": p, "alpha": alpha}
    gains, losses = comparison["discordant"]["candidate_only"], comparison["discordant"]["baseline_only"]
    p = exact_mcnemar(gains, losses)
    text = (
        f"exact McNemar test of a gain: {gains} items only the candidate got right, {losses} only the "
        f"baseline, of {comparison['items']}: one-sided p = {p:.3g} vs alpha {alpha}"
    )
    return p <= alpha, text, {"name": "exact McNemar (one-sided)", "p": p, "alpha": alpha}


def gate(comparison: dict[str, Any], policy: GatePolicy | None = None) -> dict[str, Any]:
    """Promote or not, with the checks behind it (``compare``'s output in).

    Besides ``promote``, ``gain`` (the estimate judged) and ``checks``:
    ``test`` (the significance test, its p and alpha), ``power`` (``n``,
    ``mde``: the smallest gain detectable with ``policy.power``, ``min_gain``,
    ``needed_items`` for it, ``enough``) and ``sequential`` (the
    anytime-valid test on the outcomes in evaluation order: e-values, a
    decision and the item at which it could have stopped)."""
    policy = policy or GatePolicy()
    base, cand = comparison["baseline"], comparison["candidate"]
    checks = []
    reweighted = comparison.get("reweighted") if policy.reweight_own_labels else None
    judged = reweighted or comparison  # the estimate of the gain this gate goes by
    sequence = comparison.get("sequence")
    sequential = sequential_test(decode_outcomes(sequence), policy.alpha) if sequence is not None else None
    power = _power(comparison, reweighted, policy)
    passed, text, test = _significance(comparison, reweighted, sequential, policy)
    checks.append((passed, f"{text}; {_power_text(power)}"))
    if policy.min_improvement > 0:
        low = judged["ci95"][0]
        checks.append(
            (
                low > policy.min_improvement,
                f"accuracy gain 95% CI lower bound {low:+.3f} vs required > {policy.min_improvement:+.3f}",
            )
        )
    checks.append(
        (
            cand["error_rate"] - base["error_rate"] <= policy.max_error_rate_increase,
            f"error rate {base['error_rate']:.3f} -> {cand['error_rate']:.3f} "
            f"(tolerance +{policy.max_error_rate_increase})",
        )
    )
    if policy.max_seconds_per_task is not None:
        seconds = cand["seconds_per_task"]
        checks.append(
            (
                seconds <= policy.max_seconds_per_task,
                f"{seconds:.2f} s per task (budget {policy.max_seconds_per_task} s)",
            )
        )
    elif base["seconds_per_task"] > 0:
        ratio = cand["seconds_per_task"] / base["seconds_per_task"]
        checks.append(
            (
                ratio <= policy.max_latency_ratio,
                f"latency ratio {ratio:.2f} (tolerance {policy.max_latency_ratio})",
            )
        )
    if policy.max_cost_per_task is not None and cand.get("cost_per_task") is not None:
        cost = cand["cost_per_task"]
        checks.append(
            (cost <= policy.max_cost_per_task, f"${cost:.6f} per task (budget ${policy.max_cost_per_task})")
        )
    elif base.get("cost_per_task") and cand.get("cost_per_task") is not None:
        ratio = cand["cost_per_task"] / base["cost_per_task"]
        checks.append(
            (ratio <= policy.max_cost_ratio, f"cost ratio {ratio:.2f} (tolerance {policy.max_cost_ratio})")
        )
    return {
        "promote": all(ok for ok, _ in checks),
        "gain": judged.get("difference"),
        "checks": [{"passed": ok, "check": text} for ok, text in checks],
        "test": test,
        "power": power,
        "sequential": sequential,
    }


def record_evaluation(
    store: Store, workload: str, dataset_id: str, baseline_id: str, candidate_id: str, result: dict[str, Any]
) -> str:
    evaluation_id = new_id()
    with store.engine.begin() as conn:
        conn.execute(
            t.evaluations.insert(),
            {
                "id": evaluation_id,
                "workload": workload,
                "dataset_id": dataset_id,
                "baseline_id": baseline_id,
                "candidate_id": candidate_id,
                "result": result,
                "created_at": utcnow(),
            },
        )
    return evaluation_id


JUDGE_PROMPT_VERSION = "eval-judge-v1"
JUDGE_PROMPT = """You check an AI agent's answer against the expected one.
Request: {question}
Expected answer: {expected}
Agent's answer: {answer}

Does the agent's answer do what the expected answer does (same tools, same argument
values, or the same meaning)? Reply with JSON only: {{"score": x}}, x from 0 (no) to 1 (yes)."""


def judge_scores(
    store: Store, version_id: str, items: list[EvalItem], results: dict[str, ItemResult], model: ChatModel
) -> dict[str, float]:
    """An LLM judge's score per item (cached per version, item, model and prompt version)."""
    import json
    import re

    c = t.eval_judgements.c
    with store.engine.connect() as conn:
        known = dict(
            conn.execute(
                select(c.item_id, c.score).where(
                    c.version_id == version_id,
                    c.model == model.name,
                    c.prompt_version == JUDGE_PROMPT_VERSION,
                )
            ).all()
        )
    fresh = []
    for item in items:
        if item.id in known or item.id not in results:
            continue
        question = last_user_text(item.messages)
        expected = item.text if item.expected is None else json.dumps(item.expected)
        prompt = JUDGE_PROMPT.format(
            question=question, expected=expected, answer=json.dumps(results[item.id].answer)
        )
        reply = model.complete(
            ChatRequest(messages=[{"role": "user", "content": prompt}], tools=[], max_tokens=20)
        )
        match = re.search(r"\{.*\}", reply.text or "", re.S)
        try:
            score = min(1.0, max(0.0, float(json.loads(match.group())["score"]))) if match else None
        except (ValueError, KeyError, TypeError):
            score = None
        if score is None:
            continue
        known[item.id] = score
        fresh.append(
            {
                "version_id": version_id,
                "item_id": item.id,
                "model": model.name,
                "prompt_version": JUDGE_PROMPT_VERSION,
                "score": score,
                "created_at": utcnow(),
            }
        )
    if fresh:
        with store.engine.begin() as conn:
            conn.execute(t.eval_judgements.insert(), fresh)
    return known


def compare_judged(a: dict[str, float], b: dict[str, float], model: str, *, seed: int = 0) -> dict[str, Any]:
    ids = sorted(set(a) & set(b))
    if not ids:
        return {"model": model, "items": 0}
    low, high = paired_bootstrap([a[i] for i in ids], [b[i] for i in ids], seed=seed)
    return {
        "model": model,
        "prompt_version": JUDGE_PROMPT_VERSION,
        "items": len(ids),
        "baseline": _mean([a[i] for i in ids]),
        "candidate": _mean([b[i] for i in ids]),
        "difference": _mean([b[i] - a[i] for i in ids]),
        "ci95": [low, high],
    }
