"""One interface for chat with tools, whatever runs the model."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "ChatModel",
    "ChatRequest",
    "ChatResult",
    "FewShot",
    "last_user_text",
    "parse_calls",
    "salvage_calls",
]


@dataclass(frozen=True)
class FewShot:
    """An example for in-context learning: a question, the calls that answer it,
    and (optionally) the functions that were on offer."""

    question: str
    calls: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ChatRequest:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]  # OpenAI format
    system: str = ""
    few_shot: list[FewShot] = field(default_factory=list)
    max_tokens: int = 256


@dataclass
class ChatResult:
    calls: list[dict[str, Any]]  # [{"name", "arguments"}]
    text: str
    model: str
    input_tokens: int
    output_tokens: int
    seconds: float
    confidence: float | None = None  # geometric mean probability of the generated tokens
    error: str | None = None
    cpu_seconds: float | None = None  # measured for local models (priced by CPU time)
    # the model answered, but nothing usable (output that does not parse): a wrong
    # answer rather than a failed call; ``error`` says what was wrong with it
    malformed: bool = False

    @property
    def tokens_per_second(self) -> float:
        return self.output_tokens / self.seconds if self.seconds > 0 else 0.0

    def as_message(self) -> dict[str, Any]:
        """The answer as an OpenAI assistant message (tool calls with JSON arguments)."""
        message: dict[str, Any] = {"role": "assistant", "content": None if self.calls else self.text}
        if self.calls:
            message["tool_calls"] = [
                {
                    "id": f"call_{i}",
                    "type": "function",
                    "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
                }
                for i, c in enumerate(self.calls)
            ]
        return message


class ChatModel(Protocol):
    name: str

    def complete(self, request: ChatRequest) -> ChatResult: ...


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The content of the last user message: the request being answered."""
    return next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "")


def confidence_from_logprobs(logprobs: list[float]) -> float | None:
    if not logprobs:
        return None
    return math.exp(sum(logprobs) / len(logprobs))


def parse_calls(text: str) -> list[dict[str, Any]]:
    """Calls from a model's JSON text: a list of {"name", "arguments"} (or one object)."""
    data = json.loads(text)
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise ValueError("calls must be a JSON list")
    calls = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValueError(f"not a call: {item!r}")
        arguments = item.get("arguments") or {}
        if isinstance(arguments, str):
            arguments = json.loads(arguments)
        calls.append({"name": item["name"], "arguments": arguments})
    return calls


def complete_calls(text: str) -> list[dict[str, Any]]:
    """Every complete call at the start of a list that may be cut off, repeats kept."""
    decoder = json.JSONDecoder()
    calls: list[dict[str, Any]] = []
    index = text.find("[") + 1
    while 0 < index < len(text):
        while index < len(text) and text[index] in " ,\n\t":
            index += 1
        try:
            item, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            break
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            calls.append({"name": item["name"], "arguments": item.get("arguments") or {}})
    return calls


def salvage_calls(text: str) -> list[dict[str, Any]]:
    """The complete calls at the start of a list that was cut off (a small model
    that keeps repeating itself until ``max_tokens``), exact repeats dropped."""
    calls: list[dict[str, Any]] = []
    for call in complete_calls(text):
        if call not in calls:
            calls.append(call)
    return calls
