"""A task being logged: the handle an agent writes its steps to."""

from __future__ import annotations

import contextvars
import functools
import inspect
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from flywheel.records import new_id

if TYPE_CHECKING:
    from flywheel.sdk.client import Flywheel

__all__ = ["TaskContext", "TaskHandle", "current_task"]

F = TypeVar("F", bound=Callable[..., Any])

_current: contextvars.ContextVar[TaskHandle | None] = contextvars.ContextVar("flywheel_task", default=None)


def current_task() -> TaskHandle | None:
    """The task being logged in this thread or coroutine, if any."""
    return _current.get()


def _times(started_at: float | None, ended_at: float | None, latency_ms: float | None) -> tuple[float, float]:
    end = time.time() if ended_at is None else ended_at
    if started_at is None:
        return (end if latency_ms is None else end - latency_ms / 1000), end
    return started_at, end


class TaskHandle:
    """One task: ``llm_call``, ``tool_call``, ``file_access``, ``reasoning``,
    ``retrieval`` log its steps in order, ``finish`` its outcome.

    Times are Unix seconds (``time.time()``); each step method takes
    ``started_at``/``ended_at`` or ``latency_ms``, else the step is stamped now.
    Nothing here raises into the agent or waits for the network.
    """

    def __init__(
        self,
        client: Flywheel,
        *,
        id: str | None,
        session_id: str | None,
        input: Any,
        agent_version: str | None,
        metadata: dict[str, Any] | None,
    ) -> None:
        self.client = client
        self.id = id or new_id()
        self.session_id = session_id or self.id
        self.input = input
        self.agent_version = agent_version
        self.metadata = metadata or {}
        self.started_at = time.time()
        self.finished = False
        self._seq = 0
        self._token: contextvars.Token[TaskHandle | None] | None = None

    # ------------------------------------------------------------ steps

    def _step(self, kind: str, started_at: float, ended_at: float, fields: dict[str, Any]) -> str:
        # The agent's hot path: a few dict stores, one orjson call, one deque append.
        self._seq += 1
        fields["type"] = kind
        fields["id"] = step_id = new_id()
        fields["task_id"] = self.id
        fields["seq"] = self._seq
        fields["started_at"] = started_at
        fields["ended_at"] = ended_at
        self.client._emit(fields)
        return step_id

    def llm_call(
        self,
        *,
        model: str,
        messages: list[Any] | None = None,
        tools: list[Any] | None = None,
        response: Any = None,
        usage: Any = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cost: float | None = None,
        error: str | None = None,
        started_at: float | None = None,
        ended_at: float | None = None,
        latency_ms: float | None = None,
    ) -> str:
        """Log a model call. ``usage`` may be an OpenAI usage object or dict."""
        if usage is not None:
            get = usage.get if isinstance(usage, dict) else lambda k, d=None: getattr(usage, k, d)
            input_tokens = (
                input_tokens if input_tokens is not None else get("prompt_tokens", get("input_tokens"))
            )
            output_tokens = (
                output_tokens if output_tokens is not None else get("completion_tokens", get("output_tokens"))
            )
        start, end = _times(started_at, ended_at, latency_ms)
        return self._step(
            "llm_call",
            start,
            end,
            {
                "model": model,
                "messages": messages or [],
                "tools": tools,
                "response": response,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cost": cost,
                "error": error,
            },
        )

    def tool_call(
        self,
        *,
        name: str,
        arguments: Any = None,
        output: Any = None,
        error: str | None = None,
        attempt: int = 1,
        fallback: bool = False,
        started_at: float | None = None,
        ended_at: float | None = None,
        latency_ms: float | None = None,
    ) -> str:
        start, end = _times(started_at, ended_at, latency_ms)
        return self._step(
            "tool_call",
            start,
            end,
            {
                "name": name,
                "arguments": arguments,
                "output": output,
                "error": error,
                "attempt": attempt,
                "fallback": fallback,
            },
        )

    def file_access(
        self,
        *,
        path: str,
        mode: str = "read",
        bytes: int | None = None,
        error: str | None = None,
        started_at: float | None = None,
        ended_at: float | None = None,
        latency_ms: float | None = None,
    ) -> str:
        start, end = _times(started_at, ended_at, latency_ms)
        return self._step(
            "file_access", start, end, {"path": path, "mode": mode, "bytes": bytes, "error": error}
        )

    def reasoning(self, text: str, *, started_at: float | None = None) -> str:
        start, end = _times(started_at, None, None)
        return self._step("reasoning", start, end, {"text": text})

    def retrieval(
        self,
        *,
        query: str,
        documents: list[Any] | None = None,
        started_at: float | None = None,
        ended_at: float | None = None,
        latency_ms: float | None = None,
    ) -> str:
        """``documents``: dicts with ``content`` and optionally ``id``, ``score``, ``source``."""
        start, end = _times(started_at, ended_at, latency_ms)
        docs = [d if isinstance(d, dict) else {"content": str(d)} for d in documents or []]
        return self._step("retrieval", start, end, {"query": query, "documents": docs})

    # ---------------------------------------------------------- outcome

    def _start(self) -> None:
        self.client._emit(
            {
                "type": "task_started",
                "id": self.id,
                "workload": self.client.workload,
                "session_id": self.session_id,
                "input": self.input,
                "agent_version": self.agent_version,
                "started_at": self.started_at,
                "metadata": self.metadata,
            }
        )

    def finish(
        self,
        output: Any = None,
        *,
        success: bool | None = True,
        confidence: float | None = None,
        error: str | None = None,
    ) -> None:
        """Record the outcome. Called once; later calls are ignored."""
        if self.finished:
            return
        self.finished = True
        self.client._emit(
            {
                "type": "task_finished",
                "id": self.id,
                "workload": self.client.workload,
                "session_id": self.session_id,
                "input": self.input,
                "agent_version": self.agent_version,
                "started_at": self.started_at,
                "ended_at": max(time.time(), self.started_at),
                "output": output,
                "success": success,
                "confidence": confidence,
                "error": error,
                "metadata": self.metadata,
            }
        )

    # --------------------------------------------------- context manager

    def __enter__(self) -> TaskHandle:
        self._start()
        self._token = _current.set(self)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        if not self.finished:
            if exc is not None:
                self.finish(success=False, error=f"{type(exc).__name__}: {exc}")
            else:
                self.finish(success=None)

    async def __aenter__(self) -> TaskHandle:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)


class TaskContext(TaskHandle):
    """What ``fw.task(...)`` returns: a task handle that is also a decorator.

    As a decorator each call of the function is its own task; the function's
    arguments are its input (unless ``input=`` was given), its return value the
    output, an exception a failure. Inside, ``flywheel.current_task()`` is the handle.
    """

    def __call__(self, func: F) -> F:
        params: dict[str, Any] = {
            "id": None,
            "session_id": self.session_id if self.session_id != self.id else None,
            "agent_version": self.agent_version,
            "metadata": self.metadata,
        }
        fixed_input = self.input
        client = self.client
        signature = inspect.signature(func)

        def _input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if fixed_input is not None:
                return fixed_input
            try:
                bound = signature.bind_partial(*args, **kwargs)
                return dict(bound.arguments)
            except TypeError:
                return {"args": list(args), "kwargs": kwargs}

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with TaskHandle(client, input=_input(args, kwargs), **params) as task:
                    result = await func(*args, **kwargs)
                    task.finish(result, success=True)
                    return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with TaskHandle(client, input=_input(args, kwargs), **params) as task:
                result = func(*args, **kwargs)
                task.finish(result, success=True)
                return result

        return wrapper  # type: ignore[return-value]
