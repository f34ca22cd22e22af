"""The Berkeley Function Calling Leaderboard as a workload, and user datasets
in the same shape.

The data comes from the ``bfcl-eval`` package (install it with
``pip install --no-deps bfcl-eval==2026.3.23``: only its data files are read,
none of its dependencies are needed). Single-turn categories become items of
(messages, offered tools, possible answers). BFCL's parameter types
(``dict``, ``float``, ``tuple``, ``any``) are turned into JSON Schema for the
model; the original declarations are kept for the checker.

Users bring their own data as JSONL, one item per line::

    {"id": "q1", "messages": [{"role": "user", "content": "..."}],
     "tools": [{"type": "function", "function": {...}}],
     "expected_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}

(``expected_calls: []`` means no call should be made.)
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from flywheel.errors import ConfigError, InvalidInput
from flywheel.models.base import last_user_text

__all__ = [
    "SINGLE_TURN",
    "WorkloadItem",
    "bfcl_data_dir",
    "load_bfcl",
    "load_jsonl",
    "to_json_schema",
]

#: Single-turn categories this adapter reads (BFCL v4 file names without prefix).
SINGLE_TURN = (
    "simple_python",
    "multiple",
    "parallel",
    "parallel_multiple",
    "irrelevance",
    "live_simple",
    "live_multiple",
    "live_parallel",
    "live_parallel_multiple",
    "live_irrelevance",
)

_INSTALL = "pip install --no-deps bfcl-eval==2026.3.23"


@dataclass(frozen=True)
class WorkloadItem:
    """One request of a workload and what a right answer looks like."""

    id: str
    category: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]  # OpenAI format: {"type": "function", "function": {...}}
    expected: list[dict[str, Any]]  # BFCL possible answers; [] = no call expected
    functions: list[dict[str, Any]] = field(default_factory=list)  # declarations as given

    @property
    def question(self) -> str:
        return last_user_text(self.messages)

    def reference_calls(self) -> list[dict[str, Any]]:
        """One right answer: optional arguments left out, the first possible value
        of every other (objects among the answers resolved key by key)."""
        required = {f["name"]: set((f.get("parameters") or {}).get("required") or []) for f in self.functions}
        return [
            {"name": name, "arguments": _first_values(allowed, required.get(name, set()))}
            for name, allowed in (next(iter(answer.items())) for answer in self.expected)
        ]


def _first_values(allowed: dict[str, Any], required: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
    arguments = {}
    for arg, options in allowed.items():
        options = options if isinstance(options, list) else [options]
        concrete = [o for o in options if o != ""]
        if not concrete or ("" in options and arg not in required):
            continue
        options = concrete
        first = options[0]
        if isinstance(first, dict):
            first = _first_values(first)
        elif isinstance(first, list) and first and all(isinstance(x, dict) for x in first):
            first = [_first_values(x) for x in first]
        arguments[arg] = first
    return arguments


_TYPE_MAP = {"dict": "object", "float": "number", "tuple": "array", "any": None}


def to_json_schema(schema: Any) -> Any:
    """BFCL's parameter declaration as JSON Schema (recursively)."""
    if isinstance(schema, list):
        return [to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            mapped = _TYPE_MAP.get(value, value)
            if mapped is not None:
                out["type"] = mapped
        elif key in ("properties",) and isinstance(value, dict):
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = to_json_schema(value)
        else:
            out[key] = value
    return out


def _tool(function: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": function["name"],
            "description": function.get("description", ""),
            "parameters": to_json_schema(function.get("parameters") or {"type": "object", "properties": {}}),
        },
    }


def bfcl_data_dir() -> Path:
    try:
        root = resources.files("bfcl_eval")
    except ModuleNotFoundError as exc:
        raise ConfigError("the BFCL data is not installed", hint=_INSTALL) from exc
    return Path(str(root)) / "data"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_bfcl(
    categories: list[str] | tuple[str, ...] = SINGLE_TURN[:5], *, limit: int | None = None, seed: int = 0
) -> list[WorkloadItem]:
    """Items of the given single-turn categories; ``limit`` per category, a seeded sample."""
    data = bfcl_data_dir()
    items: list[WorkloadItem] = []
    for category in categories:
        if category not in SINGLE_TURN:
            raise InvalidInput(
                f"unknown or unsupported BFCL category {category!r}",
                hint=f"single-turn categories: {', '.join(SINGLE_TURN)}",
            )
        questions = _read_jsonl(data / f"BFCL_v4_{category}.json")
        answer_file = data / "possible_answer" / f"BFCL_v4_{category}.json"
        answers = (
            {a["id"]: a["ground_truth"] for a in _read_jsonl(answer_file)} if answer_file.exists() else {}
        )
        if limit is not None and limit < len(questions):
            questions = random.Random(f"{seed}:{category}").sample(questions, limit)
        for q in questions:
            turns = q["question"]
            messages = [m for turn in turns for m in turn]
            expected = answers.get(q["id"], [])
            if "irrelevance" not in category and not expected:
                continue  # an item without ground truth cannot be judged
            items.append(
                WorkloadItem(
                    id=q["id"],
                    category=category,
                    messages=messages,
                    tools=[_tool(f) for f in q["function"]],
                    expected=expected,
                    functions=q["function"],
                )
            )
    return items


def load_jsonl(path: Path, *, category: str = "custom") -> list[WorkloadItem]:
    """A user's dataset of (messages, tools, expected calls), one JSON object a line."""
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            expected = [
                {call["name"]: {arg: [value] for arg, value in (call.get("arguments") or {}).items()}}
                for call in row["expected_calls"]
            ]
            tools = row["tools"]
            functions = [t.get("function", t) for t in tools]
            items.append(
                WorkloadItem(
                    id=str(row.get("id", f"{path.stem}-{number}")),
                    category=row.get("category", category),
                    messages=row["messages"],
                    tools=[t if "function" in t else {"type": "function", "function": t} for t in tools],
                    expected=expected,
                    functions=functions,
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidInput(
                f"{path}:{number}: not a workload item ({exc})",
                hint="each line needs messages, tools and expected_calls",
            ) from exc
    return items
