"""Capture of an OpenAI (or OpenAI-compatible) client's chat completions.

``instrument(fw, client)`` wraps ``client.chat.completions.create`` of a sync
or async client. Each call becomes an ``llm_call`` step (messages, tools
offered, the response with its tool calls, token usage, latency, error) of
the current task, or of a task of its own when none is open. Streams are
passed through chunk by chunk and logged when they end.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

from flywheel.sdk.task import TaskHandle, current_task

if TYPE_CHECKING:
    from flywheel.sdk.client import Flywheel

__all__ = ["instrument"]

_MARK = "__flywheel_instrumented__"


def instrument(fw: Flywheel, client: Any) -> Any:
    completions = client.chat.completions
    original = completions.create
    if getattr(original, _MARK, False):
        return client
    if _is_async(completions, original):

        @functools.wraps(original)
        async def create_async(*args: Any, **kwargs: Any) -> Any:
            started = time.time()
            try:
                result = await original(*args, **kwargs)
            except Exception as exc:
                _log(fw, kwargs, None, started, f"{type(exc).__name__}: {exc}")
                raise
            if kwargs.get("stream"):
                return _AsyncStream(result, fw, kwargs, started)
            _log(fw, kwargs, result, started, None)
            return result

        setattr(create_async, _MARK, True)
        completions.create = create_async
    else:

        @functools.wraps(original)
        def create(*args: Any, **kwargs: Any) -> Any:
            started = time.time()
            try:
                result = original(*args, **kwargs)
            except Exception as exc:
                _log(fw, kwargs, None, started, f"{type(exc).__name__}: {exc}")
                raise
            if kwargs.get("stream"):
                return _Stream(result, fw, kwargs, started)
            _log(fw, kwargs, result, started, None)
            return result

        setattr(create, _MARK, True)
        completions.create = create
    return client


def _is_async(resource: Any, func: Any) -> bool:
    import inspect

    # openai wraps ``create`` in decorators that hide the coroutine; the class tells.
    return inspect.iscoroutinefunction(func) or type(resource).__name__.startswith("Async")


def _dump(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json", exclude_none=True) if callable(dump) else value


def _log(fw: Flywheel, request: dict[str, Any], response: Any, started: float, error: str | None) -> None:
    try:
        body = _dump(response) if response is not None else None
        usage = (body or {}).get("usage") if isinstance(body, dict) else None
        messages = [_dump(m) for m in request.get("messages") or []]
        step: dict[str, Any] = {
            "model": str(request.get("model") or (body or {}).get("model") or "unknown"),
            "messages": messages,
            "tools": [_dump(t) for t in request["tools"]] if request.get("tools") else None,
            "response": body,
            "usage": usage,
            "error": error,
            "started_at": started,
            "ended_at": time.time(),
        }
        task = current_task()
        if task is not None and task.client is fw:
            task.llm_call(**step)
            return
        # No task open: the call is a task of its own.
        with TaskHandle(
            fw, id=None, session_id=None, input=messages, agent_version=None, metadata={"source": "openai"}
        ) as own:
            own.started_at = started
            own.llm_call(**step)
            message = _first_message(body)
            own.finish(message, success=error is None, error=error)
    except Exception:  # never break the agent's call
        import logging

        logging.getLogger(__name__).exception("flywheel: could not log a chat completion")


def _first_message(body: Any) -> Any:
    try:
        return body["choices"][0]["message"]
    except (TypeError, KeyError, IndexError):
        return None


class _Accumulator:
    """Rebuilds a chat completion from its streamed chunks."""

    def __init__(self) -> None:
        self.id: str | None = None
        self.model: str | None = None
        self.content: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: Any = None
        self.role = "assistant"

    def add(self, chunk: Any) -> None:
        data = _dump(chunk)
        self.id = self.id or data.get("id")
        self.model = self.model or data.get("model")
        if data.get("usage"):
            self.usage = data["usage"]
        for choice in data.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self.content.append(delta["content"])
            for call in delta.get("tool_calls") or []:
                slot = self.tool_calls.setdefault(
                    call.get("index", 0),
                    {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                )
                if call.get("id"):
                    slot["id"] = call["id"]
                function = call.get("function") or {}
                if function.get("name"):
                    slot["function"]["name"] += function["name"]
                if function.get("arguments"):
                    slot["function"]["arguments"] += function["arguments"]
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": self.role, "content": "".join(self.content) or None}
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
        }
        if self.usage:
            body["usage"] = self.usage
        return body


class _Stream:
    def __init__(self, stream: Any, fw: Flywheel, request: dict[str, Any], started: float) -> None:
        self._stream = stream
        self._fw = fw
        self._request = request
        self._started = started
        self._acc = _Accumulator()
        self._done = False

    def _end(self, error: str | None) -> None:
        if not self._done:
            self._done = True
            _log(self._fw, self._request, self._acc.completion(), self._started, error)

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> Any:
        try:
            chunk = next(self._stream)
        except StopIteration:
            self._end(None)
            raise
        except Exception as exc:
            self._end(f"{type(exc).__name__}: {exc}")
            raise
        self._acc.add(chunk)
        return chunk

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._end(None)
        close = getattr(self._stream, "close", None)
        if callable(close):
            close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _AsyncStream(_Stream):
    def __aiter__(self) -> _AsyncStream:
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await self._stream.__anext__()
        except StopAsyncIteration:
            self._end(None)
            raise
        except Exception as exc:
            self._end(f"{type(exc).__name__}: {exc}")
            raise
        self._acc.add(chunk)
        return chunk

    async def __aenter__(self) -> _AsyncStream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._end(None)
        close = getattr(self._stream, "close", None)
        if callable(close):
            result = close()
            if hasattr(result, "__await__"):
                await result
