"""Our AST checker against the Berkeley Function Calling Leaderboard's own, on the
package's data and on mutations of right answers."""

import copy
import random
import sys
import types
from collections import defaultdict

import pytest

from flywheel.evaluate.ast_check import check_calls
from flywheel.workloads.bfcl import load_bfcl


@pytest.fixture(scope="module")
def bfcl_checker():
    # bfcl_eval's checker imports its model registry, which imports every provider SDK.
    # Only one lookup of it matters to the checker; give it that and nothing else.
    registry = types.ModuleType("bfcl_eval.constants.model_config")
    registry.MODEL_CONFIG_MAPPING = defaultdict(lambda: types.SimpleNamespace(underscore_to_dot=False))
    sys.modules["bfcl_eval.constants.model_config"] = registry
    from bfcl_eval.constants.enums import Language
    from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker

    def judge(item, calls):
        output = [{c["name"]: c["arguments"]} for c in calls]
        return ast_checker(
            item.functions, output, item.expected, Language.PYTHON, item.category, "test-model"
        )["valid"]

    yield judge
    del sys.modules["bfcl_eval.constants.model_config"]


def mutations(item, rng):
    """Right answers, and ways of being wrong (or right) that a model finds."""
    ref = item.reference_calls()
    yield "reference", ref
    if len(ref) > 1:
        yield "reordered", list(reversed(ref))
        yield "dropped", ref[:-1]
    yield "duplicated", ref + ref[:1]
    call = copy.deepcopy(ref[0])
    yield "wrong_name", [{**call, "name": call["name"] + "_x"}] + ref[1:]
    args = call["arguments"]
    if args:
        key = rng.choice(sorted(args))
        value = args[key]
        yield "missing_arg", [{**call, "arguments": {k: v for k, v in args.items() if k != key}}] + ref[1:]
        if isinstance(value, bool):
            yield "flipped", [{**call, "arguments": {**args, key: not value}}] + ref[1:]
        elif isinstance(value, int):
            yield "int_as_float", [{**call, "arguments": {**args, key: float(value)}}] + ref[1:]
            yield "off_by_one", [{**call, "arguments": {**args, key: value + 1}}] + ref[1:]
            yield "as_string", [{**call, "arguments": {**args, key: str(value)}}] + ref[1:]
        elif isinstance(value, float):
            yield "float_off", [{**call, "arguments": {**args, key: value * 2 + 1}}] + ref[1:]
        elif isinstance(value, str):
            yield "case_and_spaces", [{**call, "arguments": {**args, key: f" {value.upper()} "}}] + ref[1:]
            yield "other_string", [{**call, "arguments": {**args, key: value + " extra"}}] + ref[1:]
        elif isinstance(value, list):
            yield "list_reversed", [{**call, "arguments": {**args, key: list(reversed(value))}}] + ref[1:]
    yield "unknown_arg", [{**call, "arguments": {**args, "surprise": 1}}] + ref[1:]


def test_agrees_with_bfcl_checker_on_every_category(bfcl_checker):
    rng = random.Random(3)
    items = load_bfcl(["simple_python", "multiple", "parallel", "parallel_multiple"], limit=60, seed=1)
    disagreements, total = [], 0
    for item in items:
        for name, calls in mutations(item, rng):
            ours = check_calls(calls, item.expected, item.functions).correct
            theirs = bfcl_checker(item, calls)
            total += 1
            if ours != theirs:
                disagreements.append((item.id, name, ours, theirs))
    assert total > 1500
    assert disagreements == []


def test_every_reference_answer_is_judged_right():
    for item in load_bfcl(["simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance"]):
        result = check_calls(item.reference_calls(), item.expected, item.functions)
        assert result.correct, (item.id, result.reason)


def test_irrelevance_wants_no_call():
    item = load_bfcl(["irrelevance"], limit=1)[0]
    assert check_calls([], item.expected, item.functions).correct
    wrong = check_calls([{"name": item.functions[0]["name"], "arguments": {}}], item.expected, item.functions)
    assert not wrong.correct and wrong.kind == "wrong_count"


def test_tricky_cases_by_hand():
    tools = [
        {
            "name": "f",
            "parameters": {
                "type": "dict",
                "required": ["a"],
                "properties": {
                    "a": {"type": "float"},
                    "b": {"type": "string"},
                    "c": {"type": "array", "items": {"type": "string"}},
                    "d": {"type": "dict", "properties": {"x": {"type": "integer"}}},
                },
            },
        }
    ]
    expected = [{"f": {"a": [2.0], "b": ["New York, NY", ""], "c": [["x", "y"], ""], "d": [{"x": [1]}, ""]}}]
    ok = lambda args: check_calls([{"name": "f", "arguments": args}], expected, tools)  # noqa: E731
    assert ok({"a": 2}).correct  # int for float
    assert ok({"a": 2.0, "b": "new york ny"}).correct  # case and punctuation
    assert ok({"a": 2.0, "c": ["X", "y"]}).correct
    assert not ok({"a": 2.0, "c": ["y", "x"]}).correct  # list order matters
    assert ok({"a": 2.0, "d": {"x": 1}}).correct
    assert not ok({"a": 2.0, "d": {"x": 2}}).correct
    assert not ok({"a": "2"}).correct  # a string is not a number
    assert not ok({"a": True}).correct  # a bool is not a number
    assert ok({"b": "x"}).kind == "missing_required"
    parallel = [{"f": {"a": [1.0]}}, {"f": {"a": [2.0]}}]
    calls = [{"name": "f", "arguments": {"a": 2.0}}, {"name": "f", "arguments": {"a": 1.0}}]
    assert check_calls(calls, parallel, tools).correct
    assert not check_calls(calls[:1] * 2, parallel, tools).correct
