"""A simulated teacher for offline runs: it answers from the workload's ground
truth, wrong on a configurable share of requests. Clearly named as simulated
(``replay-teacher``) wherever it appears; nothing in the product depends on it."""

from __future__ import annotations

import random
from typing import Any

from flywheel.models.base import ChatRequest, ChatResult, last_user_text

__all__ = ["ReplayTeacher"]


class ReplayTeacher:
    def __init__(
        self, answers: dict[str, list[dict[str, Any]]], *, error_rate: float = 0.1, seed: int = 0
    ) -> None:
        """``answers`` maps a question to its right calls."""
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError("error_rate must be between 0 and 1")
        self.answers = answers
        self.error_rate = error_rate
        self.rng = random.Random(seed)
        self.name = f"replay-teacher(simulated, error_rate={error_rate})"

    def complete(self, request: ChatRequest) -> ChatResult:
        question = last_user_text(request.messages)
        calls = [dict(c) for c in self.answers.get(question, [])]
        if calls and self.rng.random() < self.error_rate:
            wrong = dict(calls[0]["arguments"])
            if wrong:
                key = sorted(wrong)[0]
                wrong[key] = "??" if not isinstance(wrong[key], str) else wrong[key] + "?"
            calls[0] = {"name": calls[0]["name"], "arguments": wrong}
        return ChatResult(calls, "", self.name, 0, 0, 0.0, 0.9, None)
