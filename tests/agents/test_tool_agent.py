"""The agent loop with a scripted model (the model is the outer edge) and the real SDK and store."""

import pytest

import flywheel
from flywheel.agents.tool_agent import AgentConfig, ToolAgent
from flywheel.models.base import ChatResult
from flywheel.workloads.bfcl_multi import BfclEnvironment, load_multi_turn


class ScriptedModel:
    """Answers from a script: each entry is (calls, error)."""

    name = "scripted"

    def __init__(self, script):
        self.script = list(script)
        self.requests = []

    def complete(self, request):
        self.requests.append(request)
        calls, error = self.script.pop(0) if self.script else ([], None)
        return ChatResult(calls, "", self.name, 100, 10, 0.01, 0.8, error)


TOOLS = [
    {"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": {}}}}
    for n in ("a", "b", "escalate")
]


@pytest.fixture
def fw(settings):
    client = flywheel.init("agent-test", settings=settings)
    yield client
    client.close()


def test_single_turn_answer_is_logged_and_unusable_output_retried(fw, store):
    model = ScriptedModel(
        [([], "unparseable output: cut off"), ([{"name": "a", "arguments": {"x": 1}}], None)]
    )
    agent = ToolAgent(model, AgentConfig(model="scripted", rules=["Use a for x"], max_retries=1))
    with fw.task(input="q") as task:
        outcome = agent.answer(task, [{"role": "user", "content": "q"}], TOOLS)
    fw.flush()
    assert outcome.success and outcome.calls == [{"name": "a", "arguments": {"x": 1}}]
    assert "could not be used" in model.requests[1].system and "Use a for x" in model.requests[1].system
    stored = store.get_task(task.id)
    assert [s.kind for s in stored.steps] == ["llm_call", "reasoning", "llm_call"]
    assert stored.steps[0].error == "unparseable output: cut off"
    assert stored.output == [{"name": "a", "arguments": {"x": 1}}] and stored.confidence == 0.8


def test_tool_policy_hides_denied_tools(fw):
    model = ScriptedModel([([], None)])
    agent = ToolAgent(model, AgentConfig(tool_policy={"deny": ["b"], "prefer": ["a"]}))
    with fw.task(input="q") as task:
        agent.answer(task, [{"role": "user", "content": "q"}], TOOLS)
    offered = [t["function"]["name"] for t in model.requests[0].tools]
    assert offered == ["a", "escalate"]
    assert "Never use: b" in model.requests[0].system and "Prefer these tools" in model.requests[0].system


def test_multi_turn_executes_calls_feeds_results_and_counts_retries(fw, store):
    [item] = [
        i
        for i in load_multi_turn(["multi_turn_base"], limit=40, seed=0)
        if "GorillaFileSystem" in i.involved_classes
    ][:1]
    env = BfclEnvironment(item)
    script = [
        ([{"name": "cd", "arguments": {"folder": "nowhere"}}], None),  # a real tool error
        ([{"name": "cd", "arguments": {"folder": "nowhere"}}], None),  # the same tool again: attempt 2
        ([{"name": "ls", "arguments": {}}], None),
        ([], None),  # end of turn 1
    ]
    model = ScriptedModel(script)
    agent = ToolAgent(model, AgentConfig(max_steps=5, tool_policy={"fallback": "pwd"}, max_retries=1))
    turns_done = []
    with fw.task(input=item.question) as task:
        outcome = agent.converse(task, item.turns[:1], item.tools, env, on_turn_end=turns_done.append)
    fw.flush()
    assert turns_done == [0]
    stored = store.get_task(task.id)
    tools = [
        (s.name, s.data["attempt"], s.error is not None, s.data["fallback"])
        for s in stored.steps
        if s.kind == "tool_call"
    ]
    assert tools[0] == ("cd", 1, True, False)
    assert tools[1] == ("cd", 2, True, False)
    assert tools[2] == ("pwd", 1, False, True)  # fallback after the retries ran out
    assert tools[3][0] == "ls" and not tools[3][2]
    # the tool's real error went back to the model
    assert any(m.get("role") == "tool" and "nowhere" in m["content"] for m in model.requests[1].messages)
    assert outcome.calls[0] == {"name": "cd", "arguments": {"folder": "nowhere"}}


def test_a_turn_ends_when_the_model_repeats_itself(fw, store):
    """A model stuck on the same call (a small one often is) ends its turn after
    max_repeats identical steps, and says so in the trace; the next turn goes on."""
    [item] = [
        i
        for i in load_multi_turn(["multi_turn_base"], limit=40, seed=0)
        if "GorillaFileSystem" in i.involved_classes and len(i.turns) >= 2
    ][:1]
    stuck = [{"name": "ls", "arguments": {}}]
    script = [(stuck, None)] * 5 + [([{"name": "pwd", "arguments": {}}], None), ([], None)]
    model = ScriptedModel(script)
    agent = ToolAgent(model, AgentConfig(max_steps=6, max_repeats=2))
    with fw.task(input=item.question) as task:
        outcome = agent.converse(task, item.turns[:2], item.tools, env=BfclEnvironment(item))
    fw.flush()
    # turn 1: ls, ls, then the third ls ends the turn unexecuted; turn 2 takes the rest
    assert [c["name"] for c in outcome.calls] == ["ls", "ls", "ls", "ls", "pwd"]
    assert len(model.requests) == 3 + 4
    stored = store.get_task(task.id)
    assert [s.name for s in stored.steps if s.kind == "tool_call"] == ["ls", "ls", "ls", "ls", "pwd"]
    notes = [s.data.get("text", "") for s in stored.steps if s.kind == "reasoning"]
    assert any("ls asked for 3 times in a row" in n for n in notes), notes


def test_config_from_a_version():
    from datetime import UTC, datetime

    from flywheel.records import AgentVersion

    version = AgentVersion(
        id="v1",
        workload="w",
        number=1,
        created_at=datetime.now(UTC),
        config={
            "model": "replay",
            "few_shot": [{"question": "q", "calls": [{"name": "a", "arguments": {}}]}],
            "rules": ["r1"],
            "unknown_key": 1,
        },
    )
    config = AgentConfig.from_version(version, model="local")
    assert config.model == "replay" and config.rules == ["r1"] and config.version_id == "v1"
    assert config.few_shot[0].question == "q"
    assert AgentConfig.from_version(None, model="local").model == "local"
