"""Tool-call correctness by structure, as the Berkeley Function Calling
Leaderboard's AST checker judges it.

A produced call is right when its function name matches, every required
argument is present, no argument is unknown, and every value is one of the
possible answers after type-aware normalisation: ints are accepted for floats,
strings compare without case, spaces and ``,./-_*^`` punctuation, lists
element by element, objects key by key. An argument absent from the call is
fine only when ``""`` is among its possible answers (optional). Parallel calls
match in any order (a perfect matching, not a greedy one). When no call is
expected (irrelevance), producing none is right and producing any is wrong.

``expected`` uses BFCL's possible-answer format:
``[{"func_name": {"arg": [allowed, values, ...]}}, ...]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["CallCheck", "check_calls", "standardize"]

_PUNCTUATION = re.compile(r"[ ,./\-_*^]")

_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "float": float,
    "number": (int, float),
    "boolean": bool,
    "array": list,
    "tuple": list,
    "dict": dict,
    "object": dict,
}


@dataclass(frozen=True)
class CallCheck:
    correct: bool
    reason: str = ""
    kind: str = (
        ""  # wrong_count, wrong_name, missing_required, unexpected_param, type, value, missing_optional
    )


def standardize(text: str) -> str:
    return _PUNCTUATION.sub("", text).lower().replace("'", '"')


def _fail(kind: str, reason: str) -> CallCheck:
    return CallCheck(False, reason, kind)


def _schema_type(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    return kind if isinstance(kind, str) else None


def _type_ok(value: Any, declared: str | None) -> bool:
    if declared is None or declared == "any" or declared not in _TYPES:
        return True
    if isinstance(value, bool) and declared not in ("boolean",):
        return False  # True is an int in Python, not in JSON
    return isinstance(value, _TYPES[declared])


def _normal(value: Any) -> Any:
    if isinstance(value, str):
        return standardize(value)
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    return value


def _dict_matches(value: dict[str, Any], allowed: dict[str, Any]) -> bool:
    """An object against one possible object whose values are lists of allowed values."""
    for key, item in value.items():
        if key not in allowed:
            return False
        options = allowed[key] if isinstance(allowed[key], list) else [allowed[key]]
        if _normal(item) not in [_normal(o) for o in options]:
            return False
    return all(
        key in value or "" in (opts if isinstance(opts, list) else [opts]) for key, opts in allowed.items()
    )


def _value_matches(value: Any, options: list[Any], declared: str | None, items: str | None) -> bool:
    for option in options:
        if option == "":
            continue
        if isinstance(value, dict) and isinstance(option, dict):
            if _dict_matches(value, option):
                return True
        elif (
            isinstance(value, list)
            and isinstance(option, list)
            and items in ("dict", "object")
            and len(value) == len(option)
            and all(isinstance(v, dict) and isinstance(o, dict) for v, o in zip(value, option, strict=True))
        ):
            if all(_dict_matches(v, o) for v, o in zip(value, option, strict=True)):
                return True
        else:
            expected = float(option) if declared == "float" and isinstance(option, int) else option
            if _normal(value) == _normal(expected):
                return True
    return False


def _check_one(
    call: dict[str, Any], name: str, allowed: dict[str, list[Any]], tool: dict[str, Any] | None
) -> CallCheck:
    if call.get("name") != name:
        return _fail("wrong_name", f"expected {name!r}, got {call.get('name')!r}")
    arguments = call.get("arguments") or {}
    if not isinstance(arguments, dict):
        return _fail("type", f"arguments of {name!r} are not an object")
    parameters = (tool or {}).get("parameters") or {}
    properties: dict[str, Any] = parameters.get("properties") or {}
    for required in parameters.get("required") or []:
        if required not in arguments:
            return _fail("missing_required", f"missing required argument {required!r} of {name!r}")
    for arg, value in arguments.items():
        if arg not in allowed or (properties and arg not in properties):
            return _fail("unexpected_param", f"unexpected argument {arg!r} of {name!r}")
        schema = properties.get(arg) or {}
        declared = _schema_type(schema)
        options = allowed[arg]
        concrete = [o for o in options if o != ""]
        # A string answer for a non-string argument stands for a variable name.
        variable = (
            declared not in (None, "string", "any") and concrete and all(isinstance(o, str) for o in concrete)
        )
        if declared == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not variable and not _type_ok(value, declared):
            return _fail("type", f"{name}.{arg}: expected {declared}, got {type(value).__name__} {value!r}")
        items = _schema_type(schema.get("items") or {}) if isinstance(schema.get("items"), dict) else None
        if not _value_matches(value, options, declared, items):
            return _fail("value", f"{name}.{arg} = {value!r} is not one of {concrete}")
    for arg, options in allowed.items():
        if arg not in arguments and "" not in options:
            return _fail("missing_optional", f"argument {arg!r} of {name!r} is expected but missing")
    return CallCheck(True)


def check_calls(
    calls: list[dict[str, Any]], expected: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> CallCheck:
    """Judge produced ``calls`` (``{"name", "arguments"}``) against ``expected``.

    ``tools`` are the offered functions, as JSON-schema function declarations
    (``{"name", "parameters"}``, or OpenAI's ``{"type": "function", "function": ...}``).
    """
    by_name = {}
    for tool in tools:
        spec = tool.get("function", tool)
        by_name[spec.get("name")] = spec
    if not expected:
        return CallCheck(True) if not calls else _fail("wrong_count", f"no call expected, got {len(calls)}")
    if len(calls) != len(expected):
        return _fail("wrong_count", f"expected {len(expected)} call(s), got {len(calls)}")
    answers = [next(iter(answer.items())) for answer in expected]
    if len(answers) == 1:
        name, allowed = answers[0]
        return _check_one(calls[0], name, allowed, by_name.get(name))
    # Parallel calls, any order: find a perfect matching (tiny n: backtracking).
    fits = [
        [_check_one(call, name, allowed, by_name.get(name)).correct for name, allowed in answers]
        for call in calls
    ]
    used = [False] * len(answers)

    def assign(i: int) -> bool:
        if i == len(calls):
            return True
        for j in range(len(answers)):
            if not used[j] and fits[i][j]:
                used[j] = True
                if assign(i + 1):
                    return True
                used[j] = False
        return False

    if assign(0):
        return CallCheck(True)
    first_bad = next(i for i, row in enumerate(fits) if not any(row)) if any(not any(r) for r in fits) else 0
    name, allowed = answers[first_bad] if first_bad < len(answers) else answers[0]
    detail = _check_one(calls[first_bad], name, allowed, by_name.get(name))
    return _fail(detail.kind or "value", f"no assignment of the {len(calls)} calls fits: {detail.reason}")
