"""The cold start (``flywheel.curate.seed``) on real stores: the replay teacher on
BFCL items, an OpenAI-compatible teacher faked at the HTTP edge (the real client
runs), stratified samples of logged traffic, task files, idempotence."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy import delete, func, select

from flywheel.curate.seed import (
    SIMULATED_SOURCE,
    ModelTeacher,
    ReplayTeacher,
    SeedInput,
    attach_bfcl_references,
    inputs_from_bfcl,
    read_task_file,
    sample_inputs,
    sample_logged_inputs,
    seed_task_id,
    seed_workload,
)
from flywheel.errors import ConfigError, InvalidInput
from flywheel.ingest import Ingestor
from flywheel.models.remote import OpenAIModel
from flywheel.store import tables as t
from flywheel.workloads.bfcl import load_bfcl

TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a thing up.",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
    },
}


@pytest.fixture
def ingestor(store, settings):
    ingestor = Ingestor(store, settings)
    yield ingestor
    ingestor.close()


def _count(store, table, **where) -> int:
    query = select(func.count()).select_from(table)
    for column, value in where.items():
        query = query.where(table.c[column] == value)
    with store.engine.connect() as conn:
        return conn.execute(query).scalar_one()


def _completion(message: dict, logprobs: list[float] | None = None) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "teacher-1",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", **message},
                "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
                "logprobs": {
                    "content": [
                        {"token": "x", "logprob": p, "bytes": None, "top_logprobs": []} for p in logprobs
                    ]
                }
                if logprobs
                else None,
            }
        ],
        "usage": {"prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48},
    }


class FakeTeacher:
    """An OpenAI-compatible endpoint at the HTTP edge: it calls the first tool
    offered with the question as ``q``, or answers in text when none is offered;
    it fails (500) on questions in ``failing``."""

    def __init__(self, failing: set[str] | None = None, status: int = 200) -> None:
        self.requests: list[dict] = []
        self.headers: list[httpx.Headers] = []
        self.failing = failing or set()
        self.status = status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        self.headers.append(request.headers)
        question = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        if self.status != 200:
            return httpx.Response(self.status, json={"error": {"message": "invalid api key"}})
        if question in self.failing:
            return httpx.Response(500, json={"error": {"message": "overloaded"}})
        if body.get("tools"):
            name = body["tools"][0]["function"]["name"]
            call = {
                "id": "c0",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps({"q": question})},
            }
            return httpx.Response(
                200, json=_completion({"content": None, "tool_calls": [call]}, [-0.1, -0.3])
            )
        return httpx.Response(200, json=_completion({"content": f"About {question}."}, [-0.05]))

    def model(self) -> OpenAIModel:
        client = openai.OpenAI(
            base_url="http://teacher.test/v1",
            api_key="sk-test-key",
            max_retries=0,
            http_client=httpx.Client(transport=httpx.MockTransport(self)),
        )
        return OpenAIModel("teacher-1", client=client)


def _questions(n: int, **extra) -> list[SeedInput]:
    return [
        SeedInput([{"role": "user", "content": f"question {i}"}], [TOOL], origin=f"test:{i}", **extra)
        for i in range(n)
    ]


# ------------------------------------------------------------------ replay


def test_replay_teacher_seeds_bfcl_items_as_simulated_labels_each_with_a_review_item(store, ingestor):
    items = load_bfcl(["simple_python"], limit=20)
    report = seed_workload(store, ingestor, "bfcl", inputs_from_bfcl(items), ReplayTeacher())
    assert len(report.seeded) == 20 and report.review_items == 20 and not report.failed
    assert sum(report.strata.values()) == 20 and all(k.startswith("simple_python|") for k in report.strata)
    for item in items:
        task = store.get_task(seed_task_id("bfcl", inputs_from_bfcl([item])[0]))
        assert task.workload == "bfcl" and task.success is True and task.input == item.question
        assert task.metadata["seed"] is True and task.metadata["teacher"] == "replay"
        assert task.metadata["label"] == "simulated" and task.metadata["simulated"] is True
        assert task.metadata["item_id"] == item.id and task.metadata["origin"] == f"bfcl:{item.id}"
        assert task.output == item.reference_calls()
        (step,) = task.steps
        assert step.kind == "llm_call" and step.data["model"] == "replay-teacher(simulated)"
        assert step.data["messages"] == item.messages and step.data["tools"] == item.tools
        calls = step.data["response"]["choices"][0]["message"]["tool_calls"]  # normalised on ingest
        assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
            (c["name"], c["arguments"]) for c in item.reference_calls()
        ]
        # simulated, never a human's: the only reaction is the simulated teacher's
        assert [(f["thumbs"], f["source"]) for f in task.feedback] == [(1, SIMULATED_SOURCE)]
        assert task.corrections == [] and task.annotations == []
    queue = store.review_queue("bfcl", limit=100)
    assert len(queue) == 20 and {i["rule"] for i in queue} == {"seed (replay, simulated)"}
    assert all(
        i["reason"].startswith("confirm or correct the replay teacher's (simulated) answer") for i in queue
    )
    assert all(i["priority"] > 0 and i["factors"]["tools"] for i in queue)


def test_seeded_simulated_labels_enter_the_eval_set_as_simulated(store, ingestor):
    from flywheel.curate import DEFAULT_RULES, curate, parse_rules
    from flywheel.curate.eval_set import grow_eval_set

    seed_workload(
        store, ingestor, "bfcl", inputs_from_bfcl(load_bfcl(["simple_python"], limit=20)), ReplayTeacher()
    )
    result = curate(store, "bfcl", parse_rules(DEFAULT_RULES))
    assert result.summary["examples"] == 20
    grown = grow_eval_set(store, "bfcl", result.dataset_id)
    assert grown["provenance"] == {"simulated": grown["items"]} and grown["items"] > 0


def test_reseeding_the_same_inputs_stores_nothing_twice_and_asks_no_teacher_again(store, ingestor):
    inputs = inputs_from_bfcl(load_bfcl(["simple_python"], limit=20))
    seed_workload(store, ingestor, "bfcl", inputs, ReplayTeacher())
    counts = {name: _count(store, table) for name, table in (("tasks", t.tasks), ("steps", t.steps),
              ("feedback", t.feedback), ("reviews", t.review_items))}  # fmt: skip

    class Counting(ReplayTeacher):
        asked = 0

        def answer(self, item):
            Counting.asked += 1
            return super().answer(item)

    again = seed_workload(store, ingestor, "bfcl", inputs + inputs[:3], Counting())
    assert again.seeded == [] and again.already == 20 and again.duplicates == 3 and again.review_items == 0
    assert Counting.asked == 0
    assert counts == {name: _count(store, table) for name, table in (("tasks", t.tasks), ("steps", t.steps),
                      ("feedback", t.feedback), ("reviews", t.review_items))}  # fmt: skip


def test_a_seeded_task_missing_its_review_item_gets_it_on_the_next_run(store, ingestor):
    inputs = inputs_from_bfcl(load_bfcl(["simple_python"], limit=5))
    first = seed_workload(store, ingestor, "bfcl", inputs, ReplayTeacher())
    with store.engine.begin() as conn:  # a run cut short between the tasks and their review items
        conn.execute(delete(t.review_items).where(t.review_items.c.task_id.in_(first.seeded[:2])))
    again = seed_workload(store, ingestor, "bfcl", inputs, ReplayTeacher())
    assert again.seeded == [] and again.review_items == 2
    items = store.review_queue("bfcl", limit=10)
    assert len(items) == 5 and {i["rule"] for i in items} == {"seed (replay, simulated)"}


def test_a_decided_review_item_is_left_as_it_is(store, ingestor, settings):
    from flywheel.review import review

    inputs = inputs_from_bfcl(load_bfcl(["simple_python"], limit=3))
    first = seed_workload(store, ingestor, "bfcl", inputs, ReplayTeacher())
    review(store, ingestor, first.seeded[0], "approve", reviewer="alice")
    seed_workload(store, ingestor, "bfcl", inputs, ReplayTeacher())
    assert _count(store, t.review_items, state="approved") == 1
    assert _count(store, t.review_items, state="pending") == 2


def test_replay_teacher_without_references_says_what_to_give(store, ingestor):
    with pytest.raises(InvalidInput, match="no reference answer for any of the 3 inputs") as caught:
        seed_workload(store, ingestor, "w", _questions(3), ReplayTeacher())
    assert "--teacher-model" in caught.value.hint
    assert _count(store, t.tasks) == 0


def test_replay_teacher_skips_the_inputs_without_a_reference(store, ingestor):
    answered = SeedInput(
        [{"role": "user", "content": "q"}], [TOOL], reference={"content": "an answer"}, origin="a"
    )
    report = seed_workload(store, ingestor, "w", [answered, *_questions(2)], ReplayTeacher())
    assert len(report.seeded) == 1 and report.no_reference == ["test:0", "test:1"]
    assert store.get_task(report.seeded[0]).output == "an answer"


# ------------------------------------------------------------------ a model


def test_openai_compatible_teacher_answers_through_the_real_client(store, ingestor):
    fake = FakeTeacher()
    inputs = [
        *_questions(4, intent="search"),
        SeedInput([{"role": "user", "content": "hello"}], origin="chat"),
    ]
    report = seed_workload(store, ingestor, "support", inputs, ModelTeacher(fake.model()), concurrency=2)
    assert len(report.seeded) == 5 and report.review_items == 5 and not report.failed
    assert len(fake.requests) == 5 and fake.headers[0]["authorization"] == "Bearer sk-test-key"
    asked = {r["messages"][-1]["content"]: r for r in fake.requests}
    assert asked["question 0"]["tools"] == [TOOL] and asked["question 0"]["model"] == "teacher-1"
    assert asked["hello"].get("tools") is None
    task = store.get_task(seed_task_id("support", inputs[0]))
    assert task.metadata == {"seed": True, "teacher": "teacher-1", "label": "teacher", "origin": "test:0",
                             "intent": "search"}  # fmt: skip
    assert task.output == [{"name": "lookup", "arguments": {"q": "question 0"}}]
    assert task.feedback == [] and task.confidence == pytest.approx(0.8187, abs=1e-3)
    (step,) = task.steps
    assert step.data["model"] == "teacher-1" and step.data["input_tokens"] == 40
    assert store.get_task(seed_task_id("support", inputs[4])).output == "About hello."
    queue = {i["task_id"]: i for i in store.review_queue("support", limit=10)}
    assert queue[task.id]["rule"] == "seed (teacher-1)"
    assert queue[task.id]["reason"].startswith("confirm or correct teacher-1's answer")
    assert queue[task.id]["factors"] == {
        "tools": ["lookup"],
        "intent": "search",
        "confidence": task.confidence,
    }


def test_a_teachers_labels_are_the_tasks_outcome_until_a_human_decides(store, ingestor):
    from flywheel.curate import DEFAULT_RULES, curate, parse_rules
    from flywheel.curate.eval_set import grow_eval_set

    seed_workload(store, ingestor, "support", _questions(30), ModelTeacher(FakeTeacher().model()))
    result = curate(store, "support", parse_rules(DEFAULT_RULES))
    assert result.summary["examples"] == 30 and result.summary["per_rule"] == {"quiet successes": 30}
    grown = grow_eval_set(store, "support", result.dataset_id)
    assert grown["provenance"] == {"outcome": grown["items"]} and grown["items"] > 0


def test_teacher_failures_are_reported_and_retried_by_the_next_run(store, ingestor):
    inputs = _questions(6)
    report = seed_workload(store, ingestor, "w", inputs, ModelTeacher(FakeTeacher({"question 2"}).model()))
    assert len(report.seeded) == 5 and report.failed[0]["origin"] == "test:2"
    assert "500" in report.failed[0]["error"] or "overloaded" in report.failed[0]["error"]
    again = seed_workload(store, ingestor, "w", inputs, ModelTeacher(FakeTeacher().model()))
    assert again.already == 5 and len(again.seeded) == 1 and again.review_items == 1


def test_an_unreachable_teacher_stops_early_and_says_what_to_check(store, ingestor):
    fake = FakeTeacher(status=401)
    with pytest.raises(ConfigError, match="failed on the first 4 inputs and answered none") as caught:
        seed_workload(store, ingestor, "w", _questions(40), ModelTeacher(fake.model()), concurrency=4)
    assert "FLYWHEEL_TEACHER_API_KEY" in caught.value.hint
    assert len(fake.requests) == 4 and _count(store, t.tasks) == 0


# ------------------------------------------------------------------ inputs


def _log(
    ingestor, task_id: str, question: str, *, intent: str, tools: list, system: str = "be brief"
) -> None:
    at = "2026-01-01T00:00:00+00:00"
    result = ingestor.ingest(
        [
            {"type": "task_finished", "id": task_id, "workload": "shop", "session_id": task_id,
             "input": question, "started_at": at, "ended_at": at, "output": "x", "success": True,
             "metadata": {"intent": intent}},
            {"type": "llm_call", "id": f"{task_id}-1", "task_id": task_id, "seq": 1, "started_at": at,
             "model": "agent", "tools": tools,
             "messages": [{"role": "system", "content": system}, {"role": "user", "content": question},
                          {"role": "assistant", "content": "x"}]},
        ]
    )  # fmt: skip
    assert not result.rejected


def test_a_sample_of_logged_tasks_covers_every_intent_and_tool_set(store, ingestor):
    other = {**TOOL, "function": {**TOOL["function"], "name": "refund"}}
    for i in range(30):
        _log(ingestor, f"t-a{i}", f"where is order {i}", intent="orders", tools=[TOOL])
    for i in range(3):
        _log(ingestor, f"t-b{i}", f"refund {i}", intent="refunds", tools=[other])
    _log(
        ingestor, "t-c", "refund 0", intent="refunds", tools=[other], system="another prompt"
    )  # same request
    _log(ingestor, "t-d", "hello", intent="chat", tools=[])
    sample = sample_logged_inputs(store, "shop", 6)
    assert len(sample) == 6
    assert {(s.intent, s.tool_names) for s in sample} == {("orders", ("lookup",)), ("refunds", ("refund",)),
                                                          ("chat", ())}  # fmt: skip
    assert len({s.question for s in sample}) == 6  # the request logged twice is one input
    for item in sample:  # the serving version's system prompt and the answer are left out
        assert [m["role"] for m in item.messages] == ["user"] and item.origin.startswith("task:t-")
    assert sample == sample_logged_inputs(store, "shop", 6)  # a seeded draw
    # seeded tasks are never sampled as inputs
    report = seed_workload(store, ingestor, "shop", sample, ModelTeacher(FakeTeacher().model()))
    assert len(report.seeded) == 6
    again = sample_logged_inputs(store, "shop", 100)
    assert len(again) == 34 and not any(i.origin.startswith("task:seed-") for i in again)


def test_logged_tasks_of_nothing_say_how_to_start(store):
    with pytest.raises(InvalidInput, match="has no logged tasks") as caught:
        sample_logged_inputs(store, "empty", 10)
    assert "--tasks" in caught.value.hint


def test_replay_finds_the_reference_of_logged_bfcl_traffic(store, ingestor):
    items = load_bfcl(["simple_python"], limit=4)
    for item in items:
        at = "2026-01-01T00:00:00+00:00"
        ingestor.ingest([
            {"type": "task_finished", "id": f"t-{item.id}", "workload": "bfcl", "session_id": "s",
             "input": item.question, "started_at": at, "ended_at": at, "output": [], "success": True,
             "metadata": {"category": item.category, "item_id": item.id, "simulated": True}},
            {"type": "llm_call", "id": f"t-{item.id}-1", "task_id": f"t-{item.id}", "seq": 1,
             "started_at": at, "model": "local", "messages": item.messages, "tools": item.tools,
             "response": []},
        ])  # fmt: skip
    inputs = attach_bfcl_references(sample_logged_inputs(store, "bfcl", 10))
    assert {i.metadata["item_id"]: i.reference["tool_calls"] for i in inputs} == {
        item.id: item.reference_calls() for item in items
    }
    report = seed_workload(store, ingestor, "bfcl", inputs, ReplayTeacher())
    assert len(report.seeded) == 4


def test_a_sample_of_given_inputs_is_even_across_strata():
    inputs = _questions(20, intent="big") + [
        SeedInput([{"role": "user", "content": f"small {i}"}], intent=f"small-{i}") for i in range(3)
    ]
    chosen = sample_inputs(inputs, 5, seed=1)
    assert len(chosen) == 5 and {i.intent for i in chosen} == {"big", "small-0", "small-1", "small-2"}
    assert sample_inputs(inputs, None) == inputs


def test_a_task_file_in_both_shapes(tmp_path: Path):
    path = tmp_path / "tasks.jsonl"
    lines = [
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "find a"}],
         "tools": [TOOL], "answer": [{"name": "lookup", "arguments": {"q": "a"}}], "intent": "search"},
        {"question": "hi there", "answer": "hello", "id": 7},
        {"question": "bare tool", "tools": [TOOL["function"]], "category": "misc"},
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    first, second, third = read_task_file(path)
    assert first.messages == [{"role": "user", "content": "find a"}] and first.tools == [TOOL]
    assert first.reference == {"tool_calls": [{"name": "lookup", "arguments": {"q": "a"}}]}
    assert first.intent == "search" and first.origin == "tasks.jsonl:1"
    assert second.messages == [{"role": "user", "content": "hi there"}] and second.tools == []
    assert second.reference == {"content": "hello"} and second.metadata == {"item_id": "7"}
    assert third.tools == [TOOL] and third.intent == "misc" and third.reference is None


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("{not json", "tasks.jsonl line 2: not JSON"),
        ("[1, 2]", "tasks.jsonl line 2: not a JSON object"),
        ('{"tools": []}', "tasks.jsonl line 2, field '(line)': give either 'messages' or 'question'"),
        (
            '{"question": "a", "messages": [{"role": "user", "content": "b"}]}',
            "give either 'messages' or 'question'",
        ),
        (
            '{"question": "a", "tool": []}',
            "tasks.jsonl line 2, field 'tool': unknown field (allowed: id, messages",
        ),
        ('{"messages": [{"content": "b"}]}', "field 'messages': message 1 has no 'role'"),
        (
            '{"messages": [{"role": "system", "content": "b"}]}',
            "field 'messages': no user message with content",
        ),
        ('{"question": "a", "tools": [{"type": "function"}]}', "field 'tools': tool 1 has no 'name'"),
        (
            '{"question": "a", "tools": "lookup"}',
            "tasks.jsonl line 2, field 'tools': Input should be a valid list",
        ),
        (
            '{"question": "a", "answer": [{"name": "x"}]}',
            "answer calls 'x', which is not among the tools: none",
        ),
        (
            '{"question": "a", "answer": [{"arguments": {}}]}',
            "field 'answer.list[_Call].0.name': Field required",
        ),
    ],
)
def test_a_bad_task_file_line_is_named_with_its_field(tmp_path: Path, line: str, says: str):
    path = tmp_path / "tasks.jsonl"
    path.write_text(json.dumps({"question": "fine"}) + "\n" + line + "\n")
    with pytest.raises(InvalidInput) as caught:
        read_task_file(path)
    assert says in caught.value.message, caught.value.message
    assert '{"messages": [...], "tools": [...]}' in caught.value.hint


def test_every_bad_line_is_named_at_once(tmp_path: Path):
    path = tmp_path / "tasks.jsonl"
    path.write_text("{}\n" * 12)
    with pytest.raises(InvalidInput, match=r"12 problem\(s\) in .*line 1.*line 10, .*; and 2 more"):
        read_task_file(path)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InvalidInput, match="holds no tasks"):
        read_task_file(tmp_path / "empty.jsonl")
    with pytest.raises(InvalidInput, match="no task file at"):
        read_task_file(tmp_path / "missing.jsonl")
