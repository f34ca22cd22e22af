"""Review items ranked by the expected value of a label, a cycle's review budget and
boosts, on the real store (SQLite and PostgreSQL), traffic logged through the SDK."""

import json
import time

import pytest

import flywheel
from flywheel.curate import DEFAULT_RULES, curate, parse_rules
from flywheel.curate.priority import Coverage, value
from flywheel.curate.rules import ReviewPriority
from flywheel.errors import InvalidInput
from flywheel.ingest import Ingestor
from flywheel.records import utcnow
from flywheel.review import (
    boost_review_items,
    eval_coverage,
    rank_review_items,
    review,
    select_review_batch,
)
from flywheel.store import tables as t


def _tool(name):
    return {
        "type": "function",
        "function": {"name": name, "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
    }


TOOLS = [_tool("get_weather"), _tool("refund")]


@pytest.fixture
def fw(settings):
    client = flywheel.init("shop", settings=settings)
    yield client
    client.close()


def log(fw, question, tool, *, session, confidence=0.9, success=True, intent=None, tool_error=False):
    start = time.time() - 5
    metadata = {"intent": intent} if intent else None
    with fw.task(session_id=session, input=question, metadata=metadata) as task:
        task.llm_call(
            model="m",
            messages=[{"role": "user", "content": question}],
            tools=TOOLS,
            started_at=start,
            ended_at=start + 0.05,
            response={
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c0",
                        "type": "function",
                        "function": {"name": tool, "arguments": json.dumps({"q": question})},
                    }
                ],
            },
        )
        task.tool_call(
            name=tool, arguments={"q": question}, error="Timeout" if tool_error else None, started_at=start
        )
        task.started_at = start
        task.finish(
            output=[{"name": tool, "arguments": {"q": question}}], success=success, confidence=confidence
        )
    return task.id


def traffic(fw):
    """A realistic day: many confirmed weather answers (the eval split holds many),
    a few refunds (it holds one or none), and doubtful tasks of both to review."""
    doubtful = {}
    for i in range(80):
        task_id = log(fw, f"weather in city {i} on day {i % 7}", "get_weather", session=f"w{i}")
        fw.feedback(task_id, thumbs=1)
    for i in range(3):
        task_id = log(fw, f"refund order {i} of customer {i * 7}", "refund", session=f"r{i}")
        fw.feedback(task_id, thumbs=1)
    for i in range(24):  # low confidence: the "doubtful outcomes" rule
        confidence = round(0.02 + 0.011 * i, 3)
        doubtful[log(fw, f"weather maybe {i}?", "get_weather", session=f"dw{i}", confidence=confidence)] = (
            "get_weather",
            confidence,
        )
    for i, confidence in enumerate((0.08, 0.17, 0.26)):
        doubtful[log(fw, f"refund maybe {i}?", "refund", session=f"dr{i}", confidence=confidence)] = (
            "refund",
            confidence,
        )
    for i in range(6):  # confident, but a tool failed: "tool errors and retries"
        task_id = log(
            fw, f"weather flaky {i}", "get_weather", session=f"e{i}", confidence=0.7 + i / 50, tool_error=True
        )
        doubtful[task_id] = ("get_weather", 0.7 + i / 50)
    fw.flush()
    return doubtful


def queue(store, **kw):
    return store.review_queue("shop", limit=1000, **kw)


def test_priorities_spread_and_put_thin_coverage_and_low_confidence_first(fw, store):
    doubtful = traffic(fw)
    result = curate(store, "shop", parse_rules(DEFAULT_RULES))
    coverage = result.summary["eval_coverage"]["tools"]
    assert coverage["get_weather"] >= 10 and coverage.get("refund", 0) == 1
    items = queue(store)
    assert {i["task_id"] for i in items} == set(doubtful)
    priorities = [i["priority"] for i in items]
    assert len(set(priorities)) >= 0.9 * len(items)  # a spread, not a constant
    assert len({i["reason"] for i in items}) >= 0.9 * len(items)
    # the thinly covered tool's unsure answers first, then the rest by confidence
    order = [doubtful[i["task_id"]] for i in items]
    assert [tool for tool, _ in order[:3]] == ["refund"] * 3
    unsure = [confidence for tool, confidence in order[3:] if confidence < 0.5]
    assert len(unsure) == 24 and unsure == sorted(unsure)
    top = items[0]
    assert top["reason"] == "low confidence 0.08; tool `refund` has 1 eval item"
    assert top["factors"]["tools"] == ["refund"] and top["factors"]["confidence"] == 0.08
    flaky = next(i for i in items if doubtful[i["task_id"]][1] >= 0.7)
    assert "a tool failed in a claimed success" in flaky["reason"]


def test_a_pending_item_takes_its_new_value_when_its_task_is_curated_again(fw, store, settings):
    doubtful = traffic(fw)
    curate(store, "shop", parse_rules(DEFAULT_RULES))
    items = {i["task_id"]: i for i in queue(store)}
    calm, decided = sorted(t for t, (tool, _) in doubtful.items() if tool == "get_weather")[:2]
    ingestor = Ingestor(store, settings)
    review(store, ingestor, decided, "approve", reviewer="ana")
    ingestor.close()
    fw.feedback(calm, thumbs=-1)  # the user says the claimed success was wrong
    fw.feedback(decided, thumbs=-1)
    fw.flush()
    curate(store, "shop", parse_rules(DEFAULT_RULES))
    after = {i["task_id"]: i for i in queue(store)}
    assert after[calm]["priority"] > items[calm]["priority"]
    assert after[calm]["reason"].startswith("the user reacted badly to a claimed success")
    (kept,) = [i for i in store.review_queue("shop", state="approved")]
    assert kept["task_id"] == decided and kept["priority"] == items[decided]["priority"]


def test_a_cycle_budget_takes_the_best_items_once_and_leaves_the_rest_ranked(fw, store, settings):
    traffic(fw)
    result = curate(store, "shop", parse_rules(DEFAULT_RULES))
    best = [i["task_id"] for i in queue(store)[:5]]
    batch = select_review_batch(store, "shop", "cycle-1", 5, dataset_id=result.dataset_id, standing=False)
    assert (batch.selected, batch.pending, batch.backlog) == (5, 5, len(queue(store)) - 5)
    assert [i["task_id"] for i in queue(store, cycle_id="cycle-1")] == best
    assert [i["task_id"] for i in batch.top] == best
    ingestor = Ingestor(store, settings)
    for task_id in best[:2]:
        review(store, ingestor, task_id, "approve", reviewer="ana")
    ingestor.close()
    again = select_review_batch(store, "shop", "cycle-1", 5, dataset_id=result.dataset_id, standing=False)
    assert (again.selected, again.pending) == (5, 3)  # a resumed cycle keeps its batch
    following = select_review_batch(store, "shop", "cycle-2", 5, dataset_id=result.dataset_id, standing=False)
    chosen = [i["task_id"] for i in queue(store, cycle_id="cycle-2")]
    assert following.selected == 5 and chosen[:3] == best[2:]  # still the best pending
    none = select_review_batch(store, "shop", "cycle-3", 0, dataset_id=result.dataset_id, standing=False)
    assert (none.selected, none.pending) == (0, 0)


def test_ranking_again_follows_the_evaluation_set_as_it_grows(fw, store):
    doubtful = traffic(fw)
    result = curate(store, "shop", parse_rules(DEFAULT_RULES))
    assert doubtful[queue(store)[0]["task_id"]][0] == "refund"
    grown = Coverage({"get_weather": 0, "refund": 400}, None, "standing eval set v2")
    assert rank_review_items(store, "shop", grown) == len(doubtful)
    items = queue(store)
    assert doubtful[items[0]["task_id"]][0] == "get_weather"
    assert "tool `get_weather` has 0 eval items" in items[0]["reason"]
    assert [doubtful[i["task_id"]][0] for i in items[-3:]] == ["refund"] * 3
    assert rank_review_items(store, "shop", grown) == 0  # nothing changed
    recorded = eval_coverage(store, "shop", result.dataset_id, standing=False)
    assert recorded.tools == result.summary["eval_coverage"]["tools"]
    assert recorded.examples["refund"] == 6


def test_intents_the_standing_set_lacks_count_as_thin_coverage():
    coverage = Coverage.of_strata(
        {"billing|refund": 1, "weather|get_weather": 40, "-|get_weather": 30, "billing|(text)": 2}, "standing"
    )
    assert coverage.tools == {"refund": 1, "get_weather": 70, "(text)": 2}
    assert coverage.intents == {"billing": 3, "weather": 40}
    factors = {"confidence": 0.9, "tools": ["get_weather"], "intent": "travel"}
    priority, reason = value(factors, coverage, ReviewPriority())
    assert reason == "intent `travel` has 0 eval items" and priority == pytest.approx(1.1)
    known = value({**factors, "intent": "weather"}, coverage, ReviewPriority())
    assert known[0] < priority and known[1] == "intent `weather` has 40 eval items"


def test_each_term_can_be_the_main_reason_and_weights_come_from_the_rules():
    coverage = Coverage(
        {"refund": 2, "get_weather": 99}, None, "eval split", {"refund": 3, "get_weather": 500}
    )
    weights = ReviewPriority()
    base = {"tools": ["get_weather"], "intent": None}
    cases = {
        "low confidence 0.31": {"confidence": 0.31},
        "accuracy 0.45 just under its threshold 0.5": {"margin": ["accuracy", 0.45, 0.5, 0.1]},
        "the user reacted badly to a claimed success": {"signal": "negative_on_success"},
        "judge disagrees on accuracy: 0.50 vs 0.95": {"judge": ["accuracy", 0.5, 0.95, 0.5]},
        "candidate and stable disagree": {"boost": 1.5, "boost_reason": "candidate and stable disagree"},
    }
    for reason, extra in cases.items():
        assert value({**base, **extra}, coverage, weights)[1] == reason
    assert value({"tools": ["refund"], "confidence": 0.9}, coverage, weights) == (
        pytest.approx(0.1 + 1 / 3**0.5 + 0.2 / 4, abs=1e-6),
        "tool `refund` has 2 eval items",
    )
    assert value({"tools": None, "confidence": 1.0}, coverage, weights, "doubtful") == (
        0.0,
        "rule 'doubtful'",
    )
    rules = parse_rules(DEFAULT_RULES + "review_priority: {coverage: 0, novelty: 0, uncertainty: 2}\n")
    assert value({"tools": ["refund"], "confidence": 0.5}, coverage, rules.review_priority) == (
        1.0,
        "low confidence 0.50",
    )


def test_boosts_raise_items_once_and_add_the_tasks_that_had_none(fw, store, settings):
    doubtful = traffic(fw)
    curate(store, "shop", parse_rules(DEFAULT_RULES))
    items = queue(store)
    last, decided = items[-1], items[-2]
    ingestor = Ingestor(store, settings)
    review(store, ingestor, decided["task_id"], "approve", reviewer="ana")
    ingestor.close()
    confirmed = log(fw, "weather in Oslo", "get_weather", session="x")  # an eval answer: no review item
    fw.flush()
    tasks = [last["task_id"], decided["task_id"], confirmed, "no-such-task"]
    assert boost_review_items(store, "shop", tasks, "candidate and stable disagree", 2.0) == 2
    after = queue(store)
    assert after[0]["task_id"] == last["task_id"]
    assert after[0]["priority"] == pytest.approx(last["priority"] + 2.0)
    assert after[0]["reason"].startswith("candidate and stable disagree")
    added = next(i for i in after if i["task_id"] == confirmed)
    assert added["rule"] == "boost" and added["priority"] == pytest.approx(2.0 + 0.1)
    assert store.review_queue("shop", state="approved")[0]["priority"] == decided["priority"]
    boost_review_items(store, "shop", tasks, "candidate and stable disagree", 2.0)
    assert queue(store)[0]["priority"] == after[0]["priority"]  # replaced, not stacked
    with pytest.raises(InvalidInput):
        boost_review_items(store, "shop", tasks, "x", -1.0)
    assert len(queue(store)) == len(doubtful)  # one decided, one added


def test_an_item_stored_before_factors_keeps_its_priority_as_a_term(fw, store):
    task_id = log(fw, "old question", "get_weather", session="old")
    fw.flush()
    with store.engine.begin() as conn:
        conn.execute(
            t.review_items.insert(),
            {
                "id": "r-old",
                "task_id": task_id,
                "workload": "shop",
                "reason": "rule 'doubtful outcomes'",
                "rule": "doubtful outcomes",
                "priority": 0.5,
                "state": "pending",
                "created_at": utcnow(),
                "updated_at": utcnow(),
            },
        )
    assert rank_review_items(store, "shop", Coverage({}, None, "eval split")) == 0
    boost_review_items(store, "shop", [task_id], "candidate and stable disagree", 0.25)
    (item,) = queue(store)
    assert item["priority"] == pytest.approx(0.75) and item["reason"].startswith("rule 'doubtful outcomes'")
