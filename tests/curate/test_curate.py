"""Curation end to end on the real store (SQLite and PostgreSQL), traffic logged through the SDK."""

import json
import time
from datetime import timedelta

import pytest

import flywheel
from flywheel.curate import DEFAULT_RULES, curate, parse_rules
from flywheel.curate.signals import evaluate, facts
from flywheel.records import utcnow

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "book_table",
            "parameters": {
                "type": "object",
                "properties": {"people": {"type": "integer"}},
                "required": ["people"],
            },
        },
    },
]


@pytest.fixture
def fw(settings):
    client = flywheel.init("shop", settings=settings)
    yield client
    client.close()


def log(
    fw,
    question,
    calls,
    *,
    session="s1",
    success=True,
    confidence=0.9,
    tool_error=False,
    retries=0,
    fallback=False,
    started=None,
    duration_ms=100.0,
    agent_version=None,
):
    start = started if started is not None else time.time() - 5
    with fw.task(session_id=session, input=question, agent_version=agent_version) as task:
        task.llm_call(
            model="m",
            messages=[{"role": "system", "content": "sys"}, {"role": "user", "content": question}],
            tools=TOOLS,
            started_at=start,
            ended_at=start + 0.05,
            response={
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"c{i}",
                        "type": "function",
                        "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
                    }
                    for i, c in enumerate(calls)
                ],
            },
        )
        for attempt in range(1, retries + 2):
            failed = tool_error and attempt == 1
            task.tool_call(
                name=calls[0]["name"] if calls else "x",
                arguments={},
                error="Timeout" if failed else None,
                attempt=attempt,
                fallback=fallback and attempt == retries + 1,
                started_at=start + 0.06,
            )
        task.started_at = start
        task.finish(output=calls, success=success, confidence=confidence)
    return task.id


def facts_of(store, task_id, percentiles=None):
    return facts(store.get_task(task_id), percentiles or {})


def test_each_signal_on_real_tasks(fw, store):
    weather = [{"name": "get_weather", "arguments": {"city": "Oslo"}}]
    clean = log(fw, "weather in Oslo?", weather)
    flaky = log(fw, "weather in Rome?", weather, tool_error=True, retries=1, fallback=True)
    unsure = log(fw, "weather?", weather, confidence=0.2)
    fixed = log(fw, "table for two", [{"name": "book_table", "arguments": {"people": 3}}], success=False)
    fw.feedback(fixed, thumbs=-1)
    fw.feedback(fixed, edited=True, edited_output="two")
    fw.correct(fixed, tool_calls=[{"name": "book_table", "arguments": {"people": 2}}])
    fw.feedback(clean, thumbs=1, rating=5)
    fw.flush()
    f_clean, f_flaky, f_unsure, f_fixed = (facts_of(store, t) for t in (clean, flaky, unsure, fixed))
    assert evaluate("clean_success", f_clean) and evaluate("positive_feedback", f_clean)
    assert not evaluate("clean_success", f_flaky) and evaluate("tool_error", f_flaky)
    assert evaluate({"retries": 0}, f_flaky) and not evaluate({"retries": 1}, f_flaky)
    assert evaluate("fallback_tool_used", f_flaky) and not evaluate("fallback_tool_used", f_clean)
    assert evaluate({"confidence_below": 0.5}, f_unsure) and not evaluate({"confidence_below": 0.5}, f_clean)
    assert (
        evaluate("negative_feedback", f_fixed)
        and evaluate("corrected", f_fixed)
        and evaluate("failed", f_fixed)
    )
    assert evaluate({"human_edit_within": "24h"}, f_fixed) and not evaluate(
        {"human_edit_within": "24h"}, f_clean
    )
    assert evaluate({"all": ["corrected", {"not": "clean_success"}]}, f_fixed)
    assert evaluate({"slow": 50}, f_clean) is (store.get_task(clean).duration_ms > 50)


def test_curation_builds_a_versioned_dataset_with_provenance(fw, store):
    for i in range(30):
        task_id = log(
            fw,
            f"weather in city number {i}?",
            [{"name": "get_weather", "arguments": {"city": f"c{i}"}}],
            session=f"s{i % 10}",
        )
        if i % 3 == 0:
            fw.feedback(task_id, thumbs=1)
    wrong = log(
        fw,
        "a table for four people please",
        [{"name": "book_table", "arguments": {"people": 5}}],
        session="s-fix",
        success=False,
    )
    fw.feedback(wrong, thumbs=-1)
    fw.correct(wrong, tool_calls=[{"name": "book_table", "arguments": {"people": 4}}])
    doubtful = log(
        fw,
        "weather maybe?",
        [{"name": "get_weather", "arguments": {"city": "x"}}],
        confidence=0.1,
        session="s-doubt",
    )
    fw.flush()
    result = curate(store, "shop", parse_rules(DEFAULT_RULES))
    s = result.summary
    assert s["tasks_processed"] == 32
    assert s["per_rule"]["human corrections"] == 1 and s["review_items"] >= 1
    rows = store.dataset_examples(result.dataset_id)
    assert {r["task_id"] for r in rows} <= {t.id for t in store.list_tasks(workload="shop", limit=100)[0]}
    corrected = next(r for r in rows if r["task_id"] == wrong)
    assert corrected["source"] == "correction" and corrected["target"] == {
        "tool_calls": [{"name": "book_table", "arguments": {"people": 4}}]
    }
    assert corrected["rejected"] == {"tool_calls": [{"name": "book_table", "arguments": {"people": 5}}]}
    assert all(r["messages"][0] == {"role": "system", "content": "sys"} for r in rows)  # part of the input
    assert all(set(r["quality"]) == {"accuracy", "completeness", "relevance", "timeliness"} for r in rows)
    assert all("method" in q for r in rows for q in r["quality"].values())
    queue = store.review_queue("shop")
    assert doubtful in {item["task_id"] for item in queue}
    assert s["signal_density"]["overall"] == pytest.approx(1000 * len(rows) / 32, abs=0.01)
    dataset = store.get_dataset("shop@1")
    assert dataset["rules"] == DEFAULT_RULES and dataset["summary"]["splits"]


def test_signal_density_counts_examples_after_duplicates_are_removed(fw, store):
    weather = [{"name": "get_weather", "arguments": {"city": "Oslo"}}]
    for session in ("s1", "s2", "s3"):  # the same question and answer three times: one example
        log(fw, "weather in Oslo?", weather, session=session)
    log(fw, "book a table for two", [{"name": "book_table", "arguments": {"people": 2}}], session="s4")
    fw.flush()
    s = curate(store, "shop", parse_rules(DEFAULT_RULES)).summary
    assert s["tasks_processed"] == 4 and s["actions"]["exact_duplicates"] == 2 and s["examples"] == 2
    density = s["signal_density"]
    assert density["examples"] == 2 and density["overall"] == 500.0
    assert density["per_rule"] == {"quiet successes": 500.0}
    assert "after exact and near-duplicate removal" in density["counts"]

    # A later run whose tasks only repeat what the dataset holds adds no signal.
    log(fw, "weather in Oslo?", weather, session="s5")
    fw.flush()
    s = curate(store, "shop", parse_rules(DEFAULT_RULES)).summary
    assert s["tasks_processed"] == 1 and s["signal_density"]["overall"] == 0.0


def test_a_text_answer_logged_as_a_chat_completion_or_in_parts_is_the_target(fw, store):
    answers = {
        "weather in Oslo today?": {
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": [{"type": "text", "text": "Oslo is sunny today."}],
                    },
                    "finish_reason": "stop",
                }
            ]
        },
        "weather in Rome today?": {"role": "assistant", "content": "Rome is rainy today.", "tool_calls": []},
    }
    for n, (question, response) in enumerate(answers.items()):
        with fw.task(session_id=f"s{n}", input=question) as task:
            task.llm_call(model="m", messages=[{"role": "user", "content": question}], response=response)
            task.finish(output=None, success=True, confidence=0.9)
    fw.flush()
    rows = store.dataset_examples(curate(store, "shop", parse_rules(DEFAULT_RULES)).dataset_id)
    assert sorted(r["target"]["content"] for r in rows) == ["Oslo is sunny today.", "Rome is rainy today."]


def test_splits_never_leak_sessions_or_questions(fw, store):
    # Adversarial: sessions with many tasks, the same questions asked in many sessions.
    questions = [f"weather in town {i}?" for i in range(12)]
    for i in range(120):
        log(
            fw,
            questions[(i * 7) % 12] if i % 4 else f"unique question {i}?",
            [{"name": "get_weather", "arguments": {"city": f"answer {i}"}}],
            session=f"s{i % 25}",
        )
    fw.flush()
    rules = parse_rules(
        DEFAULT_RULES.replace(
            "dedup: {near_threshold: 0.9, num_perm: 64}", "dedup: {near_threshold: 0.95, num_perm: 128}"
        )
    )
    result = curate(store, "shop", rules)
    rows = store.dataset_examples(result.dataset_id)
    split_of_session, splits_of_question = {}, {}
    for r in rows:
        assert split_of_session.setdefault(r["session_id"], r["split"]) == r["split"]
        splits_of_question.setdefault(r["messages"][-1]["content"], set()).add(r["split"])
    # A question in eval is in no other split; the overlap was dropped from training.
    assert all(splits == {"eval"} for splits in splits_of_question.values() if "eval" in splits)
    assert "eval" in {r["split"] for r in rows} and "train" in {r["split"] for r in rows}
    assert result.summary["actions"].get("dropped_eval_overlap", 0) > 0  # the adversarial data needed it
    again = curate(store, "shop", rules)  # deterministic for a seed (nothing new: all carried over)
    assert {r["id"]: r["split"] for r in store.dataset_examples(again.dataset_id)} == {
        r["id"]: r["split"] for r in rows
    }


def test_a_question_an_earlier_version_trained_on_is_held_out_no_more(fw, store):
    # New sessions ask the questions that the first dataset trained on: a version
    # built from it may know their answers, so evaluating it on them would flatter it.
    questions = [f"weather in town {i}?" for i in range(12)]
    for i in range(48):
        log(fw, questions[i % 12], [{"name": "get_weather", "arguments": {"city": f"a{i}"}}], session=f"a{i}")
    fw.flush()
    rules = parse_rules(DEFAULT_RULES.replace("eval: 0.2", "eval: 0.4"))
    first = store.dataset_examples(curate(store, "shop", rules).dataset_id)
    trained = {r["messages"][-1]["content"] for r in first if r["split"] != "eval"}
    assert trained and {r["split"] for r in first} >= {"train", "eval"}
    for i in range(48):
        log(fw, questions[i % 12], [{"name": "get_weather", "arguments": {"city": f"b{i}"}}], session=f"b{i}")
    fw.flush()
    second = curate(store, "shop", rules)
    rows = store.dataset_examples(second.dataset_id)
    held_out = {r["messages"][-1]["content"] for r in rows if r["split"] == "eval"}
    assert held_out and not held_out & trained
    assert second.summary["actions"]["dropped_trained_overlap"] > 0  # new eval sessions asked them
    # what the first version trained on still trains
    assert trained <= {r["messages"][-1]["content"] for r in rows if r["split"] != "eval"}


def test_duplicates_keep_the_freshest_and_corrections_win(fw, store):
    old = log(
        fw,
        "weather in Paris?",
        [{"name": "get_weather", "arguments": {"city": "Pariss"}}],
        session="a",
        started=time.time() - 3600,
    )
    fresh = log(
        fw, "weather in Paris?", [{"name": "get_weather", "arguments": {"city": "Pariss"}}], session="b"
    )
    fw.correct(old, tool_calls=[{"name": "get_weather", "arguments": {"city": "Paris"}}])
    near = log(
        fw, "weather in Paris??", [{"name": "get_weather", "arguments": {"city": "Pariss"}}], session="c"
    )
    fw.flush()
    rules = parse_rules(DEFAULT_RULES.replace("near_threshold: 0.9", "near_threshold: 0.5"))
    result = curate(store, "shop", rules)
    rows = store.dataset_examples(result.dataset_id)
    targets = [r["target"] for r in rows]
    assert {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]} in targets
    assert result.summary["actions"]["exact_duplicates"] + result.summary["actions"]["near_duplicates"] >= 1
    assert fresh and near


def test_stale_examples_are_down_weighted_or_dropped(fw, store):
    now = utcnow()
    log(fw, "weather in Lima?", [{"name": "get_weather", "arguments": {"city": "Lima"}}], session="x")
    fw.flush()
    rules = parse_rules(
        DEFAULT_RULES.replace(
            "staleness: {half_life_days: 30, drop_after_days: 365}",
            "staleness: {half_life_days: 10, drop_after_days: 40}",
        )
    )
    later = curate(store, "shop", rules, now=now + timedelta(days=10))
    [row] = store.dataset_examples(later.dataset_id)
    assert row["weight"] == pytest.approx(0.5, abs=0.01)
    much_later = curate(store, "shop", rules, now=now + timedelta(days=60))
    assert store.dataset_examples(much_later.dataset_id) == []
    assert much_later.summary["actions"]["stale_dropped"] == 1


def test_incremental_runs_process_only_new_and_changed_tasks(fw, store):
    first_ids = [
        log(fw, f"weather {i}", [{"name": "get_weather", "arguments": {"city": str(i)}}], session=f"s{i}")
        for i in range(5)
    ]
    fw.flush()
    rules = parse_rules(DEFAULT_RULES)
    first = curate(store, "shop", rules)
    assert first.summary["tasks_processed"] == 5
    log(fw, "weather new", [{"name": "get_weather", "arguments": {"city": "n"}}], session="s9")
    fw.feedback(first_ids[0], thumbs=-1)  # new feedback changes an old task
    fw.flush()
    second = curate(store, "shop", rules)
    assert second.summary["tasks_processed"] == 2
    assert second.summary["carried_over"] == first.summary["examples"] - 1
    assert store.get_dataset("shop")["number"] == 2


def test_broken_tasks_are_counted_not_fatal(fw, store, settings):
    from tests.helpers import task_events

    from flywheel.ingest import Ingestor

    events = task_events(workload="shop", steps=0)  # no llm_call at all
    huge = log(
        fw,
        "x" * 200_000,
        [{"name": "get_weather", "arguments": {"city": "\udcff".encode("utf-8", "replace").decode()}}],
    )
    fw.flush()
    Ingestor(store, settings).ingest(events)
    result = curate(store, "shop", parse_rules(DEFAULT_RULES))
    assert result.summary["tasks_processed"] == 2
    assert result.summary["handled"].get("no_llm_call_or_answer", 0) == 1
    assert huge


def test_nothing_to_curate_is_a_clear_error(store):
    from flywheel.errors import InvalidInput

    with pytest.raises(InvalidInput, match="no finished tasks of workload 'ghost'"):
        curate(store, "ghost", parse_rules(DEFAULT_RULES))


def test_pairwise_preferences_become_preference_examples(fw, store, settings):
    from flywheel.ingest import Ingestor
    from flywheel.records import new_id

    task_id = log(fw, "weather in Bern?", [{"name": "get_weather", "arguments": {"city": "Bern"}}])
    fw.flush()
    better = {
        "role": "assistant",
        "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Bern, CH"}}}],
    }
    worse = {"role": "assistant", "content": "I don't know"}
    Ingestor(store, settings).ingest(
        [
            {
                "type": "annotation",
                "id": new_id(),
                "task_id": task_id,
                "at": utcnow().isoformat(),
                "annotation": {
                    "kind": "preference",
                    "response_a": worse,
                    "response_b": better,
                    "preferred": "b",
                },
            }
        ]
    )
    result = curate(store, "shop", parse_rules(DEFAULT_RULES))
    pairs = [r for r in store.dataset_examples(result.dataset_id) if r["kind"] == "preference"]
    assert len(pairs) == 1
    assert pairs[0]["target"] == {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Bern, CH"}}]}
    assert pairs[0]["rejected"] == {"content": "I don't know"}


def test_llm_judge_scores_are_cached_and_disagreement_goes_to_review(fw, store):
    """The judge is a paid endpoint: faked at the HTTP edge, the real openai client runs."""
    import httpx
    import openai

    from flywheel.models.remote import OpenAIModel

    calls = []

    def endpoint(request):
        body = json.loads(request.content)
        calls.append(body)
        grade = 0.1 if "Quito" in body["messages"][-1]["content"] else 0.9
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
                        "message": {
                            "role": "assistant",
                            "content": json.dumps({"accuracy": grade, "completeness": 1, "relevance": 1}),
                        },
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
    log(fw, "weather in Lima?", [{"name": "get_weather", "arguments": {"city": "Lima"}}], session="a")
    log(fw, "weather in Quito?", [{"name": "get_weather", "arguments": {"city": "Quito"}}], session="b")
    fw.flush()
    rules = parse_rules(DEFAULT_RULES + "judge: {model: 'openai:judge-model', disagreement: 0.5}\n")
    result = curate(store, "shop", rules, judge_model=judge)
    rows = store.dataset_examples(result.dataset_id)
    assert [r["messages"][-1]["content"] for r in rows] == ["weather in Lima?"]
    assert rows[0]["quality"]["accuracy_judge"]["method"] == "llm judge judge-model (judge-v1)"
    assert result.summary["actions"]["judge_disputed"] == 1
    assert any("judge disagrees on accuracy" in item["reason"] for item in store.review_queue("shop"))
    asked = len(calls)
    log(fw, "weather in Lima?", [{"name": "get_weather", "arguments": {"city": "Lima"}}], session="c")
    fw.flush()
    curate(store, "shop", rules, judge_model=judge)
    assert len(calls) == asked  # the same example is judged from the cache


def test_worker_processes_make_the_same_dataset_as_one_process(settings, store):
    for workload in ("serial", "parallel"):  # the same traffic twice
        fw = flywheel.init(workload, settings=settings)
        for i in range(120):
            tool = ["get_weather", "book_table"][i % 2]
            arguments = {"city": f"c{i % 7}"} if i % 2 == 0 else {"people": i % 5}
            task = log(
                fw,
                f"request number {i % 50} about {tool}",
                [{"name": tool, "arguments": arguments}],
                session=f"s{i % 40}",
                success=i % 9 != 0,
                tool_error=i % 11 == 0,
            )
            if i % 9 == 0:
                fw.correct(task, tool_calls=[{"name": tool, "arguments": {}}])
        fw.flush()
        fw.close()
    rules = parse_rules(DEFAULT_RULES)
    serial = curate(store, "serial", rules, workers=1, chunk_size=7)
    parallel = curate(store, "parallel", rules, workers=2, chunk_size=7)
    assert parallel.summary["tasks_processed"] == 120 and parallel.summary["examples"] > 20

    def same(summary):  # timings and the latency percentiles of the two workloads differ
        return {k: v for k, v in summary.items() if k not in ("seconds", "latency_percentiles_ms")}

    assert same(parallel.summary) == same(serial.summary)

    def contents(dataset):
        return sorted(
            (r["split"], r["messages"][-1]["content"], r["source"]) for r in store.dataset_examples(dataset)
        )

    assert contents(parallel.dataset_id) == contents(serial.dataset_id)
    queue = {w: store.review_queue(w, limit=1000) for w in ("serial", "parallel")}
    assert sorted((i["reason"], i["priority"]) for i in queue["serial"]) == sorted(
        (i["reason"], i["priority"]) for i in queue["parallel"]
    )
