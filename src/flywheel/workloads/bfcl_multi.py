"""BFCL's multi-turn categories as real multi-step tasks.

The stateful API classes that ``bfcl-eval`` ships (a file system, messaging,
posting, tickets, trading, travel, vehicle control, math) execute the agent's
calls, so tool results and tool errors are real. Calls are made by name on
the public methods of the classes a task involves, with keyword arguments:
model output is never evaluated as code (BFCL's own runner uses ``eval``).
The ground truth's call strings are parsed with ``ast`` (literals only).

A conversation is right when, after every turn, each involved class is in the
state the ground-truth calls leave it in (BFCL's state check).
"""

from __future__ import annotations

import ast
import copy
import importlib
import inspect
import json
from dataclasses import dataclass, field
from typing import Any

from flywheel.errors import InvalidInput
from flywheel.workloads.bfcl import _read_jsonl, _tool, bfcl_data_dir

__all__ = ["MULTI_TURN", "BfclEnvironment", "MultiTurnItem", "load_multi_turn", "parse_call"]

MULTI_TURN = ("multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context")

_PREFIX = "bfcl_eval.eval_checker.multi_turn_eval.func_source_code"
_MODULES = {
    "GorillaFileSystem": "gorilla_file_system",
    "MathAPI": "math_api",
    "MessageAPI": "message_api",
    "TwitterAPI": "posting_api",
    "TicketAPI": "ticket_api",
    "TradingBot": "trading_bot",
    "TravelAPI": "travel_booking",
    "VehicleControlAPI": "vehicle_control",
}
_DOCS = {
    "GorillaFileSystem": "gorilla_file_system.json",
    "MathAPI": "math_api.json",
    "MessageAPI": "message_api.json",
    "TwitterAPI": "posting_api.json",
    "TicketAPI": "ticket_api.json",
    "TradingBot": "trading_bot.json",
    "TravelAPI": "travel_booking.json",
    "VehicleControlAPI": "vehicle_control.json",
}
_STATELESS = {"MathAPI"}
_FILE_READS = {"cat", "grep", "tail", "wc", "sort", "diff"}
_FILE_WRITES = {"touch", "echo", "mkdir"}
_FILE_CHANGES = {"mv", "cp", "rm", "rmdir"}


@dataclass(frozen=True)
class MultiTurnItem:
    id: str
    category: str
    turns: list[list[dict[str, Any]]]
    tools: list[dict[str, Any]]
    initial_config: dict[str, Any]
    involved_classes: list[str]
    ground_truth: list[list[dict[str, Any]]] = field(default_factory=list)

    @property
    def question(self) -> str:
        return " / ".join(m["content"] for turn in self.turns for m in turn if m.get("role") == "user")


def parse_call(text: str) -> dict[str, Any]:
    """``"mv(source='a', destination='b')"`` -> ``{"name": "mv", "arguments": {...}}``."""
    node = ast.parse(text.strip(), mode="eval").body
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ValueError(f"not a plain function call: {text!r}")
    name = node.func.id
    arguments = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
    if node.args:  # positional arguments: named later from the function's signature
        arguments["__positional__"] = [ast.literal_eval(a) for a in node.args]
    return {"name": name, "arguments": arguments}


def load_multi_turn(
    categories: tuple[str, ...] | list[str] = ("multi_turn_base",), *, limit: int | None = None, seed: int = 0
) -> list[MultiTurnItem]:
    import random

    data = bfcl_data_dir()
    docs: dict[str, list[dict[str, Any]]] = {}
    for class_name, file in _DOCS.items():
        docs[class_name] = _read_jsonl(data / "multi_turn_func_doc" / file)
    items = []
    for category in categories:
        if category not in MULTI_TURN:
            raise InvalidInput(
                f"unknown multi-turn category {category!r}", hint=f"one of {', '.join(MULTI_TURN)}"
            )
        rows = _read_jsonl(data / f"BFCL_v4_{category}.json")
        answers = {
            a["id"]: a["ground_truth"]
            for a in _read_jsonl(data / "possible_answer" / f"BFCL_v4_{category}.json")
        }
        if limit is not None and limit < len(rows):
            rows = random.Random(f"{seed}:{category}").sample(rows, limit)
        for row in rows:
            classes = [c for c in row["involved_classes"] if c in _MODULES]
            if len(classes) != len(row["involved_classes"]):
                continue
            excluded = set(row.get("excluded_function") or [])
            functions = [f for c in classes for f in docs[c] if f["name"] not in excluded]
            items.append(
                MultiTurnItem(
                    id=row["id"],
                    category=category,
                    turns=[list(turn) for turn in row["question"]],
                    tools=[_tool(f) for f in functions],
                    initial_config=row.get("initial_config") or {},
                    involved_classes=classes,
                    ground_truth=[[parse_call(c) for c in turn] for turn in answers.get(row["id"], [])],
                )
            )
    return items


class BfclEnvironment:
    """Fresh instances of a task's API classes, loaded with its initial state."""

    def __init__(self, item: MultiTurnItem) -> None:
        self.instances: dict[str, Any] = {}
        self.methods: dict[str, Any] = {}
        for class_name in item.involved_classes:
            module = importlib.import_module(f"{_PREFIX}.{_MODULES[class_name]}")
            instance = getattr(module, class_name)()
            if class_name not in _STATELESS:
                instance._load_scenario(
                    copy.deepcopy(item.initial_config.get(class_name, {})), long_context=False
                )
            self.instances[class_name] = instance
            for name, method in inspect.getmembers(instance, predicate=inspect.ismethod):
                if not name.startswith("_"):
                    self.methods[name] = method
        self.file_system = "GorillaFileSystem" in self.instances

    def execute(self, name: str, arguments: dict[str, Any]) -> tuple[Any, str | None]:
        method = self.methods.get(name)
        if method is None:
            return None, f"no such function: {name}"
        arguments = dict(arguments)
        positional = arguments.pop("__positional__", [])
        try:
            result = method(*positional, **arguments)
        except TypeError as exc:
            return None, f"bad arguments for {name}: {exc}"
        except Exception as exc:  # the API's own failure is the tool's error
            return None, f"{type(exc).__name__}: {exc}"
        if isinstance(result, dict) and set(result) == {"error"}:
            return None, str(result["error"])
        return _plain(result), None

    def file_access(self, name: str, arguments: dict[str, Any]) -> tuple[str, str] | None:
        if not self.file_system:
            return None
        path = (
            arguments.get("file_name")
            or arguments.get("file_name1")
            or arguments.get("source")
            or arguments.get("dir_name")
        )
        if not isinstance(path, str):
            return None
        if name in _FILE_READS:
            return path, "read"
        if name in _FILE_WRITES:
            return path, "write"
        if name in _FILE_CHANGES:
            return path, "modify"
        return None

    def state(self) -> dict[str, Any]:
        return {
            name: {k: _plain(v) for k, v in vars(instance).items() if not k.startswith("_")}
            for name, instance in self.instances.items()
            if name not in _STATELESS
        }


def _plain(value: Any) -> Any:
    """A JSON-able copy of an API's result or state (files and folders as dicts)."""
    try:
        return json.loads(
            json.dumps(value, default=lambda o: {k: v for k, v in vars(o).items() if not k.startswith("_")})
        )
    except (TypeError, ValueError):
        return repr(value)


def expected_states(item: MultiTurnItem) -> list[dict[str, Any]]:
    """The state after each turn when the ground truth is executed."""
    env = BfclEnvironment(item)
    states = []
    for turn in item.ground_truth:
        for call in turn:
            env.execute(call["name"], call["arguments"])
        states.append(env.state())
    return states
