"""Any OpenAI-compatible endpoint (OpenAI, vLLM, NIM, llama.cpp server, Ollama)
as a ``ChatModel``: the teacher, or a user's production model."""

from __future__ import annotations

import json
import time
from typing import Any

from flywheel.errors import ConfigError
from flywheel.models.base import ChatRequest, ChatResult, confidence_from_logprobs

__all__ = ["OpenAIModel"]


class OpenAIModel:
    def __init__(
        self, model: str, *, base_url: str | None = None, api_key: str | None = None, client: Any = None
    ) -> None:
        if client is None:
            try:
                import openai
            except ImportError as exc:
                raise ConfigError(
                    "the openai client is not installed", hint="pip install 'data-flywheel[openai]'"
                ) from exc
            client = openai.OpenAI(base_url=base_url, api_key=api_key or "unused")
        self.client = client
        self.name = model

    def complete(self, request: ChatRequest) -> ChatResult:
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        for example in request.few_shot:
            messages.append({"role": "user", "content": example.question})
            messages.append({"role": "assistant", "content": json.dumps(example.calls)})
        messages += request.messages
        started = time.perf_counter()
        try:
            response = self.client.chat.completions.create(
                model=self.name,
                messages=messages,
                tools=request.tools or None,
                temperature=0,
                max_tokens=request.max_tokens,
                logprobs=True,
            )
        except Exception as exc:  # the endpoint's failure is the task's error, not ours
            return ChatResult(
                [], "", self.name, 0, 0, time.perf_counter() - started, None, f"{type(exc).__name__}: {exc}"
            )
        seconds = time.perf_counter() - started
        choice = response.choices[0]
        calls, error = [], None
        for call in choice.message.tool_calls or []:
            try:
                calls.append(
                    {"name": call.function.name, "arguments": json.loads(call.function.arguments or "{}")}
                )
            except json.JSONDecodeError as exc:
                error = f"tool call arguments are not JSON: {exc}"
        logprobs = [t.logprob for t in (choice.logprobs.content or [])] if choice.logprobs else []
        usage = response.usage
        return ChatResult(
            calls=calls,
            text=choice.message.content or "",
            model=self.name,
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
            seconds=seconds,
            confidence=confidence_from_logprobs(logprobs),
            error=error,
            malformed=error is not None,
        )
