import pytest
from tests.curate.test_curate import log

import flywheel
from flywheel.curate import DEFAULT_RULES, curate, parse_rules
from flywheel.deploy import create_version
from flywheel.errors import InvalidInput
from flywheel.improve import FewShotStrategy


def test_few_shot_candidate_takes_diverse_pool_examples(settings, store):
    fw = flywheel.init("shop", settings=settings)
    for i in range(40):
        if i % 2:
            log(
                fw,
                f"weather in town {i}?",
                [{"name": "get_weather", "arguments": {"city": f"t{i}"}}],
                session=f"s{i}",
            )
        else:
            log(
                fw,
                f"book a table for {i} people",
                [{"name": "book_table", "arguments": {"people": i}}],
                session=f"s{i}",
            )
    fw.flush()
    fw.close()
    rules = parse_rules(DEFAULT_RULES.replace("few_shot: 0.1", "few_shot: 0.5"))
    dataset = curate(store, "shop", rules).dataset_id
    base = create_version(store, "shop", {"model": "local", "rules": ["be brief"]})
    candidate = FewShotStrategy(k=3).build(store, "shop", dataset, base)
    config = candidate.version.config
    pool = {r["messages"][-1]["content"] for r in store.dataset_examples(dataset, "few_shot")}
    eval_questions = {r["messages"][-1]["content"] for r in store.dataset_examples(dataset, "eval")}
    shots = config["few_shot"]
    assert len(shots) == 3 and all(s["question"] in pool for s in shots)
    assert not {s["question"] for s in shots} & eval_questions  # the held-out set never enters
    assert {c["name"] for s in shots for c in s["calls"]} == {"get_weather", "book_table"}  # tool coverage
    assert config["rules"] == ["be brief"] and candidate.version.parent_id == base.id
    for shot in shots:  # each example carries the declarations of the tools it calls
        assert [t["function"]["name"] for t in shot["tools"]] == [c["name"] for c in shot["calls"]]
    assert candidate.version.strategy == "few_shot" and candidate.version.dataset_id == dataset
    assert len(candidate.changes) == 3


def test_an_empty_pool_is_a_clear_error(settings, store):
    fw = flywheel.init("shop", settings=settings)
    log(fw, "weather in Oslo?", [{"name": "get_weather", "arguments": {"city": "Oslo"}}])
    fw.flush()
    fw.close()
    dataset = curate(
        store, "shop", parse_rules(DEFAULT_RULES.replace("few_shot: 0.1", "few_shot: 0.0"))
    ).dataset_id
    with pytest.raises(InvalidInput, match="no few-shot pool"):
        FewShotStrategy().build(store, "shop", dataset, None)


def test_per_request_examples_are_the_nearest_of_a_pinned_pool(settings, store):
    from sqlalchemy import func, select

    from flywheel.agents.tool_agent import AgentConfig
    from flywheel.improve import STRATEGIES
    from flywheel.store import tables

    fw = flywheel.init("shop", settings=settings)
    for i in range(40):
        if i % 2:
            log(
                fw,
                f"what is the weather in town {i}?",
                [{"name": "get_weather", "arguments": {"city": f"t{i}"}}],
                session=f"s{i}",
            )
        else:
            log(
                fw,
                f"book a table for {i} people tonight",
                [{"name": "book_table", "arguments": {"people": i}}],
                session=f"s{i}",
            )
    fw.flush()
    fw.close()
    dataset = curate(
        store, "shop", parse_rules(DEFAULT_RULES.replace("few_shot: 0.1", "few_shot: 0.5"))
    ).dataset_id
    base = create_version(store, "shop", {"model": "local", "few_shot": [{"question": "old", "calls": []}]})
    candidate = STRATEGIES["few_shot_per_request"](k=2).build(store, "shop", dataset, base)
    config = candidate.version.config
    assert "few_shot" not in config and config["few_shot_pool"]["k"] == 2
    pool_questions = {e["question"] for e in config["few_shot_pool"]["examples"]}
    eval_questions = {r["messages"][-1]["content"] for r in store.dataset_examples(dataset, "eval")}
    assert pool_questions and not pool_questions & eval_questions  # the held-out set never enters
    agent = AgentConfig.from_version(candidate.version)
    weather = agent.shots_for([{"role": "user", "content": "weather in Oslo today?"}])
    booking = agent.shots_for([{"role": "user", "content": "a table for 2 people please"}])
    assert len(weather) == 2 and weather[0].calls[0]["name"] == "get_weather"
    assert booking[0].calls[0]["name"] == "book_table"
    with store.engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(tables.example_embeddings)).scalar_one()
    assert stored == len(store.dataset_examples(dataset, "few_shot"))  # once per example, kept
    again = STRATEGIES["few_shot_per_request"](k=2).build(store, "shop", dataset, base)
    assert again.version.id == candidate.version.id  # same pool, same vectors: the same version
    assert "per-request few-shot" in candidate.changes[0]


def test_prompt_rules_come_from_the_largest_clusters_of_corrected_failures(settings, store):
    from flywheel.improve import STRATEGIES
    from flywheel.improve.prompt_rules import failure_cluster

    w = {"name": "get_weather", "arguments": {"city": "Oslo"}}
    assert failure_cluster([], [w]) == ("no_call", None)
    assert failure_cluster([w, w], [w]) == ("extra_calls", None)
    assert failure_cluster([{"name": "get_weather", "arguments": {}}], [w]) == ("missing_argument", "city")
    assert failure_cluster([{"name": "get_weather", "arguments": {"city": 5}}], [w]) == ("wrong_type", "city")
    assert failure_cluster([{"name": "book_table", "arguments": {}}], [w]) == ("wrong_function", None)

    fw = flywheel.init("shop", settings=settings)
    for i in range(30):
        right = {"name": "get_weather", "arguments": {"city": f"t{i}"}}
        wrong = [right, right] if i % 3 else [{"name": "get_weather", "arguments": {"city": "Nowhere"}}]
        task_id = log(fw, f"weather in town {i}?", wrong, session=f"s{i}", success=False)
        fw.correct(task_id, tool_calls=[right])
    fw.flush()
    fw.close()
    dataset = curate(store, "shop", parse_rules(DEFAULT_RULES)).dataset_id
    base = create_version(store, "shop", {"model": "local", "rules": ["be brief"]})
    candidate = STRATEGIES["prompt_rules"](ablate=False).build(store, "shop", dataset, base)
    rules = candidate.version.config["rules"]
    assert rules[0] == "be brief" and "exactly one call" in rules[1]  # the largest cluster first
    assert "(such as city)" in rules[2]  # wrong values of the city argument
    assert "extra calls" in candidate.changes[0] and "corrected failures" in candidate.changes[0]
    fw = flywheel.init("clean", settings=settings)
    log(fw, "weather in Oslo?", [{"name": "get_weather", "arguments": {"city": "Oslo"}}])
    fw.flush()
    fw.close()
    clean = curate(store, "clean", parse_rules(DEFAULT_RULES)).dataset_id
    with pytest.raises(InvalidInput, match="no corrected failures"):
        STRATEGIES["prompt_rules"]().build(store, "clean", clean, None)


class RuleFollower:
    """The model at the outer edge: answers the question's city with one call
    when told to make exactly one call, else with the call twice."""

    name = "rule-follower"

    def __init__(self) -> None:
        self.systems: list[str] = []
        self.questions: list[str] = []

    def complete(self, request):
        import re

        from flywheel.models.base import ChatResult

        self.systems.append(request.system)
        self.questions.append(request.messages[-1]["content"])
        city = re.search(r"town (\d+)", request.messages[-1]["content"]).group(1)
        call = {"name": "get_weather", "arguments": {"city": f"t{city}"}}
        calls = [call] if "exactly one call" in request.system else [call, call]
        return ChatResult(calls, "", self.name, 10, 1, 0.01, 0.9, None)


def test_a_rule_is_kept_only_when_the_student_does_better_with_it(settings, store):
    from flywheel.improve import STRATEGIES, build_candidate

    fw = flywheel.init("shop", settings=settings)
    for i in range(40):
        right = {"name": "get_weather", "arguments": {"city": f"t{i}"}}
        wrong = [right, right] if i % 3 else [{"name": "get_weather", "arguments": {"city": "Nowhere"}}]
        task_id = log(fw, f"weather in town {i}?", wrong, session=f"s{i}", success=False)
        fw.correct(task_id, tool_calls=[right])
    fw.flush()
    fw.close()
    dataset = curate(store, "shop", parse_rules(DEFAULT_RULES)).dataset_id
    base = create_version(store, "shop", {"model": "local"})
    model = RuleFollower()
    candidate = STRATEGIES["prompt_rules"](model_for=lambda config: model).build(store, "shop", dataset, base)
    rules = candidate.version.config["rules"]
    # "exactly one call" makes every answer right; the rule about city values changes nothing
    assert len(rules) == 1 and "exactly one call" in rules[0]
    assert "-- kept:" in candidate.changes[0] and "-- dropped:" in candidate.changes[1]
    assert len(set(model.systems)) == 3  # with all the rules, and without each of the two
    dev = [r for split in ("train", "few_shot") for r in store.dataset_examples(dataset, split)]
    assert len(model.questions) == 3 * len(dev)
    held_out = {r["messages"][-1]["content"] for r in store.dataset_examples(dataset, "eval")}
    assert held_out and not held_out & set(model.questions)  # the gate's split is never used

    class Useless(RuleFollower):
        def complete(self, request):
            request.system = ""  # rules make no difference to this one
            return super().complete(request)

    with pytest.raises(InvalidInput, match="no rule helped"):
        STRATEGIES["prompt_rules"](model_for=lambda config: Useless()).build(store, "shop", dataset, base)
    # in a combination, a strategy with nothing to add is skipped, and the others build
    combined = build_candidate(
        store, "shop", dataset, base, "prompt_rules+few_shot", model_for=lambda config: Useless(), k=2
    )
    assert combined.version.config["few_shot"] and not combined.version.config.get("rules")
    assert any(c.startswith("[prompt_rules] skipped: no rule helped") for c in combined.changes)


def test_tool_policy_prefers_what_works_per_intent_and_denies_what_never_does(settings, store):
    from flywheel.agents.tool_agent import AgentConfig, ToolAgent
    from flywheel.improve import STRATEGIES

    fw = flywheel.init("ops", settings=settings)
    for i in range(40):
        with fw.task(session_id=f"s{i}", input=f"what is the weather in city number {i}?") as task:
            flaky = i % 4 != 0  # weather_v2 fails 3 times in 4
            task.tool_call(name="weather_v2", arguments={}, output=None, error="Timeout" if flaky else None)
            task.tool_call(name="get_weather", arguments={}, output="sunny", attempt=2 if flaky else 1)
            task.tool_call(name="legacy_geo", arguments={}, error="410 Gone")
            task.finish("sunny", success=True)
        with fw.task(session_id=f"b{i}", input=f"book a table for {i % 6 + 2} people tonight") as task:
            task.tool_call(name="book_table", arguments={}, output="ok")
            task.finish("booked", success=True)
    fw.flush()
    fw.close()
    dataset = curate(store, "ops", parse_rules(DEFAULT_RULES)).dataset_id
    candidate = STRATEGIES["tool_policy"]().build(store, "ops", dataset, None)
    policy = candidate.version.config["tool_policy"]
    assert policy["deny"] == ["legacy_geo"]
    [weather] = policy["intents"]  # booking has nothing to choose between
    assert weather["prefer"] == ["get_weather"] and weather["avoid"] == ["legacy_geo", "weather_v2"]
    assert (
        weather["stats"]["weather_v2"]["error_rate"] == 0.75
        and weather["stats"]["get_weather"]["calls"] == 40
    )
    assert any("weather_v2 fails 75% of 40 calls" in change for change in candidate.changes)
    config = AgentConfig.from_version(candidate.version)
    hint = config.tool_hint([{"role": "user", "content": "weather in Paris today?"}])
    assert "prefer get_weather" in hint and "weather_v2" in hint
    assert config.tool_hint([{"role": "user", "content": "book a table for four"}]) == ""
    tools = [
        {"type": "function", "function": {"name": n, "parameters": {}}} for n in ("legacy_geo", "get_weather")
    ]
    assert [t["function"]["name"] for t in ToolAgent(None, config).offered_tools(tools)] == ["get_weather"]


def _fake_fine_tuning_api(seen, final="succeeded"):
    """The documented shape of OpenAI's files and fine-tuning endpoints, in process."""
    import json as _json

    import httpx

    statuses = iter(["queued", "running", final])

    def job(status):
        return {
            "id": "ftjob-1",
            "object": "fine_tuning.job",
            "model": "gpt-4o-mini-2024-07-18",
            "created_at": 1,
            "finished_at": None,
            "fine_tuned_model": "ft:gpt-4o-mini-2024-07-18:org:flywheel:abc123"
            if status == "succeeded"
            else None,
            "organization_id": "org",
            "result_files": [],
            "status": status,
            "validation_file": None,
            "training_file": "file-abc",
            "hyperparameters": {"n_epochs": "auto"},
            "trained_tokens": None,
            "seed": 0,
            "error": {"code": "invalid_file", "message": "line 3: bad", "param": None}
            if status == "failed"
            else None,
        }

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer sk-test"
        if request.method == "POST" and request.url.path == "/v1/files":
            body = request.read()
            assert b'name="purpose"' in body and b"fine-tune" in body
            lines = [
                ln
                for part in body.split(b"\r\n")
                for ln in part.split(b"\n")
                if ln.startswith(b'{"messages"')
            ]
            seen["lines"] = [_json.loads(ln) for ln in lines]
            return httpx.Response(
                200,
                json={
                    "id": "file-abc",
                    "object": "file",
                    "bytes": len(body),
                    "created_at": 1,
                    "filename": "train.jsonl",
                    "purpose": "fine-tune",
                    "status": "processed",
                },
            )
        if request.method == "POST" and request.url.path == "/v1/fine_tuning/jobs":
            seen["job"] = _json.loads(request.read())
            return httpx.Response(200, json=job("validating_files"))
        if request.method == "GET" and request.url.path == "/v1/fine_tuning/jobs/ftjob-1":
            return httpx.Response(200, json=job(next(statuses)))
        return httpx.Response(404, json={"error": {"message": f"no route {request.url.path}"}})

    return handler


@pytest.mark.parametrize("final", ["succeeded", "failed"])
def test_fine_tuning_through_an_openai_compatible_api(settings, store, final):
    import httpx
    import openai

    from flywheel.improve.fine_tune_api import OpenAIFineTuneStrategy

    fw = flywheel.init("shop", settings=settings)
    for i in range(40):
        log(
            fw,
            f"weather in town {i}?",
            [{"name": "get_weather", "arguments": {"city": f"t{i}"}}],
            session=f"s{i}",
        )
    fw.flush()
    fw.close()
    dataset = curate(store, "shop", parse_rules(DEFAULT_RULES)).dataset_id
    base = create_version(store, "shop", {"model": "openai:gpt-4o-mini-2024-07-18@http://ft.test/v1"})
    seen: dict = {}

    def client(base_url, api_key):
        assert base_url == "http://ft.test/v1"
        transport = httpx.MockTransport(_fake_fine_tuning_api(seen, final))
        return openai.OpenAI(
            base_url=base_url, api_key="sk-test", http_client=httpx.Client(transport=transport)
        )

    strategy = OpenAIFineTuneStrategy(poll_seconds=0, client_factory=client)
    if final == "failed":
        with pytest.raises(InvalidInput, match="fine-tuning job ftjob-1 failed: line 3: bad"):
            strategy.build(store, "shop", dataset, base)
        return
    candidate = strategy.build(store, "shop", dataset, base)
    assert (
        candidate.version.config["model"]
        == "openai:ft:gpt-4o-mini-2024-07-18:org:flywheel:abc123@http://ft.test/v1"
    )
    assert seen["job"] == {
        "model": "gpt-4o-mini-2024-07-18",
        "training_file": "file-abc",
        "suffix": "flywheel",
    }
    train = {r["messages"][-1]["content"] for r in store.dataset_examples(dataset, "train")}
    held_out = {r["messages"][-1]["content"] for r in store.dataset_examples(dataset, "eval")}
    uploaded = {line["messages"][-2]["content"] for line in seen["lines"]}
    assert uploaded == train and not uploaded & held_out  # the held-out split never trains
    call = seen["lines"][0]["messages"][-1]["tool_calls"][0]
    assert isinstance(call["function"]["arguments"], str)  # OpenAI's format: arguments as a JSON string
    assert "ftjob-1" in candidate.changes[0] and candidate.version.parent_id == base.id
    with pytest.raises(InvalidInput, match="needs openai:MODEL"):
        strategy.build(store, "shop", dataset, create_version(store, "shop", {"model": "local"}))


def _fake_chat_api(seen: list, answer: str):
    """An OpenAI-compatible chat completions endpoint, in the documented shape."""
    import json as _json

    import httpx

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path != "/v1/chat/completions":
            return httpx.Response(404, json={"error": {"message": f"no route {request.url.path}"}})
        body = _json.loads(request.content)
        seen.append(body)
        return httpx.Response(
            200,
            json={
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": answer},
                        "logprobs": None,
                    }
                ],
                "usage": {"prompt_tokens": 50, "completion_tokens": 12, "total_tokens": 62},
            },
        )

    return handler


@pytest.mark.parametrize(
    "answer, written",
    [
        ("Call get_weather once per city asked about, never twice.", True),
        ("Here are some thoughts:\n1. be careful\n2. think", False),  # not one rule: the template stays
    ],
)
def test_a_teacher_model_writes_the_rules_when_one_is_configured(settings, store, answer, written):
    import httpx
    import openai

    from flywheel.improve import STRATEGIES
    from flywheel.improve.prompt_rules import TEMPLATES
    from flywheel.models.remote import OpenAIModel

    fw = flywheel.init("shop", settings=settings)
    for i in range(20):
        right = {"name": "get_weather", "arguments": {"city": f"t{i}"}}
        task_id = log(fw, f"weather in town {i}?", [right, right], session=f"s{i}", success=False)
        fw.correct(task_id, tool_calls=[right])
    fw.flush()
    fw.close()
    dataset = curate(store, "shop", parse_rules(DEFAULT_RULES)).dataset_id
    seen: list = []
    client = openai.OpenAI(
        base_url="http://teacher.test/v1",
        api_key="sk-test",
        http_client=httpx.Client(transport=httpx.MockTransport(_fake_chat_api(seen, answer))),
    )
    teacher = OpenAIModel("teacher-large", client=client)
    candidate = STRATEGIES["prompt_rules"](ablate=False, teacher_model=teacher).build(
        store, "shop", dataset, None
    )
    [rule] = candidate.version.config["rules"]
    [request] = seen
    prompt = request["messages"][-1]["content"]
    assert request["model"] == "teacher-large" and request["messages"][0]["role"] == "system"
    assert "extra calls" in prompt and "weather in town" in prompt  # the cluster, its counts and examples
    if written:
        assert rule == answer and "by teacher teacher-large" in candidate.changes[0]
    else:
        assert rule == TEMPLATES["extra_calls"] and "by template" in candidate.changes[0]
