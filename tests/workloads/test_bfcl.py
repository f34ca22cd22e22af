import json

import pytest

from flywheel.errors import InvalidInput
from flywheel.workloads.bfcl import SINGLE_TURN, load_bfcl, load_jsonl, to_json_schema
from flywheel.workloads.bfcl_multi import BfclEnvironment, expected_states, load_multi_turn, parse_call


def test_single_turn_categories_load_with_tools_and_answers():
    items = load_bfcl(list(SINGLE_TURN[:5]), limit=4, seed=1)
    assert {i.category for i in items} == set(SINGLE_TURN[:5])
    for item in items:
        assert item.messages and item.messages[-1]["role"] == "user"
        assert all(t["type"] == "function" for t in item.tools)
        assert (item.expected == []) == (item.category == "irrelevance")
    assert load_bfcl(["parallel"], limit=4, seed=1) == load_bfcl(["parallel"], limit=4, seed=1)


def test_bfcl_types_become_json_schema():
    schema = to_json_schema(
        {
            "type": "dict",
            "properties": {"x": {"type": "float"}, "t": {"type": "tuple", "items": {"type": "any"}}},
        }
    )
    assert schema == {
        "type": "object",
        "properties": {"x": {"type": "number"}, "t": {"type": "array", "items": {}}},
    }


def test_unknown_category_is_a_clear_error():
    with pytest.raises(InvalidInput, match="unknown or unsupported BFCL category 'simple_rust'"):
        load_bfcl(["simple_rust"])


def test_users_bring_their_own_jsonl(tmp_path):
    path = tmp_path / "mine.jsonl"
    row = {
        "id": "q1",
        "messages": [{"role": "user", "content": "weather in Rome"}],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
        "expected_calls": [{"name": "get_weather", "arguments": {"city": "Rome"}}],
    }
    path.write_text(json.dumps(row) + "\n\n")
    [item] = load_jsonl(path)
    assert item.expected == [{"get_weather": {"city": ["Rome"]}}]
    assert item.reference_calls() == [{"name": "get_weather", "arguments": {"city": "Rome"}}]
    path.write_text('{"messages": []}\n')
    with pytest.raises(InvalidInput, match="mine.jsonl:1"):
        load_jsonl(path)


def test_ground_truth_calls_are_parsed_as_literals_never_run_as_code():
    assert parse_call("mv(source='a.txt', destination='tmp')") == {
        "name": "mv",
        "arguments": {"source": "a.txt", "destination": "tmp"},
    }
    assert parse_call("sort('f.txt')") == {"name": "sort", "arguments": {"__positional__": ["f.txt"]}}
    for hostile in ("__import__('os').system('touch /tmp/pwned')", "ls(a=open('/etc/passwd').read())", "x"):
        with pytest.raises(ValueError):
            parse_call(hostile)


def test_multi_turn_tasks_run_on_the_real_stateful_apis():
    item = next(
        i
        for i in load_multi_turn(["multi_turn_base"], limit=40, seed=0)
        if "GorillaFileSystem" in i.involved_classes
    )
    env = BfclEnvironment(item)
    output, error = env.execute("cd", {"folder": "no-such-folder"})
    assert error and "no-such-folder" in error and output is None
    output, error = env.execute("rm", {"__positional__": []})
    assert error and "bad arguments" in error
    assert env.execute("os_system", {})[1] == "no such function: os_system"
    states = expected_states(item)
    assert len(states) == len(item.turns)
    again = BfclEnvironment(item)
    for turn in item.ground_truth:
        for call in turn:
            again.execute(call["name"], call["arguments"])
    assert again.state() == states[-1]
    assert BfclEnvironment(item).state() != states[-1] or not any(item.ground_truth)


def test_file_system_calls_are_file_accesses():
    items = [
        i
        for i in load_multi_turn(["multi_turn_base"], limit=30, seed=0)
        if "GorillaFileSystem" in i.involved_classes
    ]
    env = BfclEnvironment(items[0])
    assert env.file_access("cat", {"file_name": "a.txt"}) == ("a.txt", "read")
    assert env.file_access("touch", {"file_name": "b.txt"}) == ("b.txt", "write")
    assert env.file_access("mv", {"source": "a", "destination": "b"}) == ("a", "modify")
    assert env.file_access("ls", {}) is None
