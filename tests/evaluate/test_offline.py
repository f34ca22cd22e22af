"""Paired offline evaluation on the eval split, with a scripted model at the edge."""

import json
from math import comb

import pytest
from tests.curate.test_curate import log

import flywheel
from flywheel.curate import DEFAULT_RULES, curate, parse_rules
from flywheel.deploy import create_version
from flywheel.evaluate.offline import (
    GatePolicy,
    compare,
    eval_items,
    evaluate_version,
    gate,
    mcnemar_p,
    paired_bootstrap,
)
from flywheel.models.base import ChatResult


class KnowsCities:
    """Answers get_weather with the city named in the question, or a fixed wrong one."""

    def __init__(self, right: bool, fail_after: int | None = None):
        self.name = "scripted-right" if right else "scripted-wrong"
        self.right = right
        self.calls = 0
        self.fail_after = fail_after

    def complete(self, request):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise ConnectionError("endpoint went away")
        question = request.messages[-1]["content"]
        city = question.split()[-1].rstrip("?") if self.right else "Nowhere"
        return ChatResult(
            [{"name": "get_weather", "arguments": {"city": city}}], "", self.name, 50, 10, 0.01, 0.9
        )


@pytest.fixture
def dataset_id(settings, store):
    fw = flywheel.init("shop", settings=settings)
    for i in range(60):
        log(
            fw,
            f"weather in City{i}",
            [{"name": "get_weather", "arguments": {"city": f"City{i}"}}],
            session=f"s{i}",
        )
    fw.flush()
    fw.close()
    rules = parse_rules(DEFAULT_RULES.replace("splits: {eval: 0.2", "splits: {eval: 0.5"))
    return curate(store, "shop", rules).dataset_id


def test_only_the_eval_split_is_evaluated(store, dataset_id):
    items = eval_items(store, dataset_id)
    eval_ids = {r["id"] for r in store.dataset_examples(dataset_id, "eval")}
    train_ids = {r["id"] for r in store.dataset_examples(dataset_id, "train")}
    assert {i.id for i in items} == eval_ids and not eval_ids & train_ids and len(items) >= 15


def test_the_version_under_test_brings_its_own_system_prompt(store, dataset_id):
    # the examples keep the system prompt the serving agent logged ...
    assert all(r["messages"][0]["role"] == "system" for r in store.dataset_examples(dataset_id, "eval"))
    # ... which the items leave out: the version evaluated sends its own, once
    assert all(m["role"] != "system" for item in eval_items(store, dataset_id) for m in item.messages)


def test_a_better_candidate_passes_the_gate_and_results_are_cached(store, dataset_id):
    items = eval_items(store, dataset_id)
    base = create_version(store, "shop", {"model": "wrong"})
    cand = create_version(store, "shop", {"model": "right"})
    models = {"wrong": KnowsCities(False), "right": KnowsCities(True)}
    for_config = lambda config: models[config.model]  # noqa: E731
    a = evaluate_version(store, base, items, for_config, dataset_id=dataset_id)
    b = evaluate_version(store, cand, items, for_config, dataset_id=dataset_id)
    result = compare(a, b)
    assert result["baseline"]["accuracy"] == 0.0 and result["candidate"]["accuracy"] == 1.0
    assert result["ci95"][0] > 0.5 and result["mcnemar_p"] < 1e-3
    assert gate(result)["promote"] is True
    assert gate(compare(b, a))["promote"] is False
    asked = models["right"].calls
    evaluate_version(store, cand, items, for_config, dataset_id=dataset_id)
    assert models["right"].calls == asked  # cached per (version, item)


def test_an_endpoint_failing_half_way_keeps_partial_results_and_resumes(store, dataset_id):
    items = eval_items(store, dataset_id)
    version = create_version(store, "shop", {"model": "flaky"})
    flaky = KnowsCities(True, fail_after=5)
    with pytest.raises(ConnectionError):
        evaluate_version(store, version, items, lambda c: flaky, dataset_id=dataset_id, workers=1)
    healthy = KnowsCities(True)
    results = evaluate_version(store, version, items, lambda c: healthy, dataset_id=dataset_id, workers=1)
    assert len(results) == len(items) and healthy.calls == len(items) - 5


def test_statistics():
    a = [True] * 30 + [False] * 70
    b = [True] * 30 + [True] * 20 + [False] * 50
    low, high = paired_bootstrap(a, b, seed=1)
    assert 0.1 < low < 0.2 < high < 0.3
    # 20 discordant pairs, all one way: p = 2 * 0.5**20
    assert mcnemar_p(a, b) == pytest.approx(2 * 0.5**20)
    mixed_a = [True] * 6 + [False] * 4
    mixed_b = [False] * 6 + [True] * 4
    assert mcnemar_p(mixed_a, mixed_b) == pytest.approx(
        min(1.0, 2 * sum(comb(10, i) for i in range(5)) / 2**10)
    )
    assert mcnemar_p(a, a) == 1.0


def test_gate_blocks_guard_regressions():
    comparison = {
        "items": 100,
        "discordant": {"candidate_only": 14, "baseline_only": 2},
        "ci95": [0.05, 0.2],
        "baseline": {"error_rate": 0.0, "seconds_per_task": 1.0, "cost_per_task": 1.0},
        "candidate": {"error_rate": 0.1, "seconds_per_task": 3.0, "cost_per_task": 1.0},
    }
    decision = gate(comparison, GatePolicy())
    assert decision["promote"] is False
    assert [c["passed"] for c in decision["checks"]] == [True, False, False, True]


def test_text_answers_match_exactly_or_by_meaning(store, settings):
    """The local embedding model (all-MiniLM-L6-v2 from its PyPI package) decides paraphrases."""
    from flywheel.evaluate.offline import EvalItem

    items = [
        EvalItem(
            "t1",
            "(text answer)",
            [{"role": "user", "content": "When do refunds arrive?"}],
            [],
            None,
            "Refunds arrive within five business days.",
        ),
        EvalItem(
            "t2",
            "(text answer)",
            [{"role": "user", "content": "Can I change my address?"}],
            [],
            None,
            "Yes, you can change the address until the order ships.",
        ),
        EvalItem(
            "t3",
            "(text answer)",
            [{"role": "user", "content": "Is there a store in Oslo?"}],
            [],
            None,
            "Yes, we have a store in Oslo.",
        ),
    ]
    answers = {
        "When do refunds arrive?": "refunds arrive within five business days",  # exact after normalising
        # a paraphrase (cosine 0.98 with all-MiniLM-L6-v2)
        "Can I change my address?": "Yes, the address can be changed until the order ships.",
        "Is there a store in Oslo?": "Our return policy is thirty days.",  # unrelated
    }

    class Talker:
        name = "talker"

        def complete(self, request):
            return ChatResult([], answers[request.messages[-1]["content"]], self.name, 10, 10, 0.01, 0.9)

    version = create_version(store, "shop", {"model": "talker"})
    results = evaluate_version(store, version, items, lambda c: Talker(), dataset_id="ds-text")
    assert [results[i].correct for i in ("t1", "t2", "t3")] == [True, True, False]


def test_per_intent_breakdown_groups_similar_requests(store, dataset_id):
    from flywheel.evaluate.offline import intents

    items = eval_items(store, dataset_id)
    groups = intents(items)
    assert set(groups) == {i.id for i in items}
    assert len(set(groups.values())) < len(items)  # "weather in CityN" requests share an intent
    version = create_version(store, "shop", {"model": "right"})
    results = evaluate_version(store, version, items, lambda c: KnowsCities(True), dataset_id=dataset_id)
    per_intent = compare(results, results, intent_of=groups)["per_intent"]
    assert sum(row["n"] for row in per_intent.values()) == len(items)


def test_llm_judge_in_evaluation_is_cached(store, dataset_id):
    """A paid judge endpoint, faked at the HTTP edge; the real openai client runs."""

    import httpx
    import openai

    from flywheel.evaluate.offline import compare_judged, judge_scores
    from flywheel.models.remote import OpenAIModel

    asked = []

    def endpoint(request):
        prompt = json.loads(request.content)["messages"][-1]["content"]
        asked.append(prompt)
        score = 0.0 if "Nowhere" in prompt else 1.0
        return httpx.Response(
            200,
            json={
                "id": "j",
                "object": "chat.completion",
                "created": 1,
                "model": "judge",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": json.dumps({"score": score})},
                    }
                ],
            },
        )

    client = openai.OpenAI(
        api_key="k",
        base_url="http://judge/v1",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(endpoint)),
    )
    judge = OpenAIModel("judge-model", client=client)
    items = eval_items(store, dataset_id)
    wrong, right = (
        create_version(store, "shop", {"model": "wrong"}),
        create_version(store, "shop", {"model": "right"}),
    )
    models = {"wrong": KnowsCities(False), "right": KnowsCities(True)}
    a = evaluate_version(store, wrong, items, lambda c: models[c.model], dataset_id=dataset_id)
    b = evaluate_version(store, right, items, lambda c: models[c.model], dataset_id=dataset_id)
    scores_a = judge_scores(store, wrong.id, items, a, judge)
    scores_b = judge_scores(store, right.id, items, b, judge)
    result = compare_judged(scores_a, scores_b, judge.name)
    assert (result["baseline"], result["candidate"]) == (0.0, 1.0) and result["ci95"][0] > 0.5
    count = len(asked)
    judge_scores(store, right.id, items, b, judge)
    assert len(asked) == count  # cached


def test_a_latency_slo_and_cost_ceiling_replace_the_ratios():
    comparison = {
        "items": 100,
        "discordant": {"candidate_only": 20, "baseline_only": 3},
        "ci95": [0.05, 0.3],
        "baseline": {"error_rate": 0.0, "seconds_per_task": 0.2, "cost_per_task": 1e-5},
        "candidate": {"error_rate": 0.0, "seconds_per_task": 3.0, "cost_per_task": 1e-4},
    }
    assert gate(comparison)["promote"] is False  # 15x slower, 10x costlier than the baseline
    slo = GatePolicy(max_seconds_per_task=4.0, max_cost_per_task=5e-4)
    decision = gate(comparison, slo)
    assert decision["promote"] is True
    assert [c["check"] for c in decision["checks"]][2:] == [
        "3.00 s per task (budget 4.0 s)",
        "$0.000100 per task (budget $0.0005)",
    ]
    assert gate(comparison, GatePolicy(max_seconds_per_task=2.0))["promote"] is False


def test_an_unusable_answer_is_wrong_but_not_a_failed_call(store, dataset_id):
    items = eval_items(store, dataset_id)[:6]

    class Garbled:
        name = "garbled"

        def complete(self, request):
            return ChatResult(
                [],
                '[{"name": "get_weather", "arguments": {"city": 5000000',
                self.name,
                50,
                10,
                0.01,
                error="unparseable output: cut off",
                malformed=True,
            )

    class Down:
        name = "down"

        def complete(self, request):
            return ChatResult([], "", self.name, 0, 0, 0.01, error="ConnectionError: refused")

    garbled = evaluate_version(
        store,
        create_version(store, "shop", {"model": "g"}),
        items,
        lambda c: Garbled(),
        dataset_id=dataset_id,
    )
    down = evaluate_version(
        store, create_version(store, "shop", {"model": "d"}), items, lambda c: Down(), dataset_id=dataset_id
    )
    result = compare(down, garbled)
    assert result["baseline"]["error_rate"] == 1.0 and result["baseline"]["malformed_rate"] == 0.0
    assert result["candidate"]["error_rate"] == 0.0 and result["candidate"]["malformed_rate"] == 1.0
    assert result["candidate"]["accuracy"] == 0.0
    cached = evaluate_version(
        store, create_version(store, "shop", {"model": "g"}), items, lambda c: Down(), dataset_id=dataset_id
    )
    assert all(r.malformed for r in cached.values())  # kept with the cached results


def test_each_item_says_whether_the_baseline_made_its_label(settings, store):
    from flywheel.evaluate.offline import label_origins

    base = create_version(store, "shop", {"model": "wrong"})
    other = create_version(store, "shop", {"model": "right"})
    fw = flywheel.init("shop", settings=settings)
    expected = {}
    for i in range(48):
        question, version = f"weather in City{i}", (base if i % 2 else other)
        call = {"name": "get_weather", "arguments": {"city": f"City{i}"}}
        task_id = log(fw, question, [call], session=f"s{i}", agent_version=version.id)
        if i % 4 == 1:  # the baseline's answer, corrected by a human
            fw.correct(task_id, tool_calls=[call])
            expected[task_id] = "baseline_corrected"
        else:
            fw.feedback(task_id, thumbs=1)
            expected[task_id] = "baseline_confirmed" if version is base else "other_traffic"
    fw.flush()
    fw.close()
    dataset = curate(
        store, "shop", parse_rules(DEFAULT_RULES.replace("splits: {eval: 0.2", "splits: {eval: 0.6"))
    )
    items = eval_items(store, dataset.dataset_id)
    task_of = {r["id"]: r["task_id"] for r in store.dataset_examples(dataset.dataset_id, "eval")}
    origins = label_origins(store, items, base.id)
    assert origins == {i.id: expected[task_of[i.id]] for i in items}
    assert set(origins.values()) == {"baseline_confirmed", "baseline_corrected", "other_traffic"}
    assert set(label_origins(store, items, None).values()) == {"other_traffic"}  # no baseline version

    models = {"wrong": KnowsCities(False), "right": KnowsCities(True)}
    a = evaluate_version(store, base, items, lambda c: models[c.model], dataset_id=dataset.dataset_id)
    b = evaluate_version(store, other, items, lambda c: models[c.model], dataset_id=dataset.dataset_id)
    per_origin = compare(a, b, origin_of=origins)["per_origin"]
    assert sum(row["n"] for row in per_origin.values()) == len(items)
    assert per_origin["other_traffic"]["candidate"] == per_origin["other_traffic"]["n"]


def _biased_labels(seed, *, fixes, breaks, base_right=0.5, confirm=0.6, correct=0.15, tasks=3000):
    """Simulated traffic of a baseline right on ``base_right`` of it: users confirm
    ``confirm`` of its right answers and correct ``correct`` of its wrong ones;
    the candidate fixes ``fixes`` of its wrong answers and breaks ``breaks`` of
    its right ones. Returns the labelled items' results, origins and ratings."""
    import random

    from flywheel.evaluate.offline import ItemResult

    rng = random.Random(seed)
    base, cand, origin = {}, {}, {}
    up = down = 0
    for i in range(tasks):
        right = rng.random() < base_right
        if rng.random() < 0.5:  # half the users rate at all, right or wrong
            up, down = (up + 1, down) if right else (up, down + 1)
        if right and rng.random() < confirm:
            origin[f"t{i}"] = "baseline_confirmed"
            cand_right = rng.random() >= breaks
        elif not right and rng.random() < correct:
            origin[f"t{i}"] = "baseline_corrected"
            cand_right = rng.random() < fixes
        else:
            continue
        base[f"t{i}"] = ItemResult(f"t{i}", "c", right, 1.0, 10, 10, None)
        cand[f"t{i}"] = ItemResult(f"t{i}", "c", cand_right, 1.0, 10, 10, None)
    return base, cand, origin, {"up": up, "down": down}


def test_the_gate_reweights_the_baselines_own_labels_to_its_traffic():
    # truly better: +0.5 * 0.6 - 0.5 * 0.15 = +0.225 on the baseline's traffic, but
    # users confirm 0.6 of its right answers and correct 0.15 of its wrong ones,
    # so the labelled items are 80% its successes and the plain difference is ~0
    base, cand, origin, ratings = _biased_labels(1, fixes=0.6, breaks=0.15)
    result = compare(base, cand, origin_of=origin, baseline_ratings=ratings)
    assert result["ci95"][0] < 0 < result["ci95"][1] < 0.1  # the plain estimate misses the gain
    weighted = result["reweighted"]
    assert weighted["baseline_traffic_accuracy"] == pytest.approx(0.5, abs=0.03)
    assert weighted["difference"] == pytest.approx(0.225, abs=0.05)
    low, high = weighted["ci95"]
    assert 0 < low < 0.225 < high
    decision = gate(result)
    assert decision["promote"] is True and "reweighted" in decision["checks"][0]["check"]
    assert gate(result, GatePolicy(reweight_own_labels=False))["promote"] is False

    # no better at all (fixes 10% of failures, breaks 10% of successes): refused
    base, cand, origin, ratings = _biased_labels(2, fixes=0.1, breaks=0.1)
    result = compare(base, cand, origin_of=origin, baseline_ratings=ratings)
    low, high = result["reweighted"]["ci95"]
    assert low < 0 < high and gate(result)["promote"] is False


def test_a_missing_origin_group_with_nothing_like_it_counts_at_its_worst():
    from flywheel.evaluate.offline import reweighted_difference

    # only corrections of a baseline users rate right half the time, and no item
    # anywhere that the baseline answers right: the unseen confirmed half counts
    # as all broken
    fixed = (False, True)  # (baseline right, candidate right)
    only_fixes = reweighted_difference({"baseline_corrected": [fixed] * 20}, {"up": 50, "down": 50})
    assert only_fixes["difference"] == pytest.approx(0.5 * -1.0 + 0.5 * 1.0)
    assert only_fixes["empty_strata"]["baseline_confirmed"]["rule"] == "worst case"
    # other traffic pools with the baseline's own items by count
    pooled = reweighted_difference(
        {
            "baseline_confirmed": [(True, True)] * 10,
            "baseline_corrected": [fixed] * 10,
            "other_traffic": [fixed] * 10 + [(True, True)] * 10,
        },
        {"up": 30, "down": 10},
    )
    assert pooled["difference"] == pytest.approx((20 * (0.75 * 0 + 0.25 * 1) + 20 * 0.5) / 40)
    assert pooled["empty_strata"] == {}
    assert reweighted_difference({"other_traffic": [fixed]}, {"up": 5, "down": 5}) is None
    assert reweighted_difference({"baseline_confirmed": [(True, True)]}, {"up": 0, "down": 0}) is None


def test_a_versions_traffic_accuracy_is_read_from_its_ratings(settings, store):
    from flywheel.evaluate.offline import feedback_accuracy

    served = create_version(store, "shop", {"model": "m"})
    other = create_version(store, "shop", {"model": "n"})
    fw = flywheel.init("shop", settings=settings)
    call = [{"name": "get_weather", "arguments": {"city": "Oslo"}}]
    ids = [log(fw, f"weather {i}", call, session=f"s{i}", agent_version=served.id) for i in range(7)]
    fw.feedback(ids[0], thumbs=1)
    fw.feedback(ids[0], thumbs=1)  # twice: still one task
    fw.feedback(ids[1], rating=5)
    fw.feedback(ids[2], thumbs=-1)
    fw.feedback(ids[3], rating=1)
    fw.feedback(ids[4], thumbs=1)
    fw.feedback(ids[4], thumbs=-1)  # changed their mind: counts for neither
    fw.feedback(ids[5], retried=True)  # only wrong answers get retried: not a rating
    fw.feedback(ids[6], rating=3)  # neither up nor down
    elsewhere = log(fw, "weather elsewhere", call, session="x", agent_version=other.id)
    fw.feedback(elsewhere, thumbs=-1)
    fw.flush()
    fw.close()
    assert feedback_accuracy(store, served.id) == {"up": 2, "down": 2}
    assert feedback_accuracy(store, other.id) == {"up": 0, "down": 1}
    assert feedback_accuracy(store, None) == {"up": 0, "down": 0}
