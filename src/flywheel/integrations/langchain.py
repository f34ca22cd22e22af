"""LangChain / LangGraph capture: a callback handler that logs runs as tasks.

    from flywheel.integrations.langchain import FlywheelCallbackHandler
    handler = FlywheelCallbackHandler(fw)
    graph.invoke(inputs, config={"callbacks": [handler]})

The outermost run (a chain or graph) is a task; chat-model and LLM calls
inside it become ``llm_call`` steps, tools ``tool_call`` steps, retrievers
``retrieval`` steps, agent actions ``reasoning`` steps. A model or tool called
on its own is a task of its own. Needs the ``langchain`` extra.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any
from uuid import UUID

try:
    from langchain_core.callbacks import BaseCallbackHandler
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "flywheel.integrations.langchain needs langchain-core: pip install 'data-flywheel[langchain]'"
    ) from exc

from flywheel.sdk.client import Flywheel
from flywheel.sdk.task import TaskHandle

__all__ = ["FlywheelCallbackHandler"]

log = logging.getLogger(__name__)


def _message(message: Any) -> dict[str, Any]:
    """A LangChain message as an OpenAI-style chat message."""
    role = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}.get(
        getattr(message, "type", ""), getattr(message, "type", "user")
    )
    out: dict[str, Any] = {"role": role, "content": getattr(message, "content", str(message))}
    tool_calls = getattr(message, "tool_calls", None)
    if tool_calls:
        out["tool_calls"] = [
            {
                "id": c.get("id"),
                "type": "function",
                "function": {"name": c["name"], "arguments": c.get("args", {})},
            }
            for c in tool_calls
        ]
    if getattr(message, "tool_call_id", None):
        out["tool_call_id"] = message.tool_call_id
    return out


class FlywheelCallbackHandler(BaseCallbackHandler):
    """Logs LangChain runs through a ``Flywheel`` client. Never raises into the chain."""

    raise_error = False

    def __init__(self, fw: Flywheel, *, session_id: str | None = None) -> None:
        self.fw = fw
        self.session_id = session_id
        self._lock = threading.Lock()
        self._root: dict[UUID, UUID] = {}  # run -> its outermost run
        self._tasks: dict[UUID, TaskHandle] = {}  # outermost run -> task
        self._starts: dict[UUID, tuple[float, dict[str, Any]]] = {}  # run -> (start, details)

    # ---------------------------------------------------------------- runs

    def _task_for(
        self, run_id: UUID, parent_run_id: UUID | None, input: Any, metadata: Any = None
    ) -> TaskHandle:
        """The task of the run's outermost run; a new run's LangChain ``metadata``
        may name the session (``session_id``, ``thread_id``, ``conversation_id``)
        and the user (``user_id``)."""
        with self._lock:
            root = self._root.get(parent_run_id, parent_run_id) if parent_run_id else run_id
            self._root[run_id] = root
            task = self._tasks.get(root)
            if task is None:
                given = metadata if isinstance(metadata, dict) else {}
                session = self.session_id or next(
                    (str(given[k]) for k in ("session_id", "thread_id", "conversation_id") if given.get(k)),
                    None,
                )
                task_metadata: dict[str, Any] = {"source": "langchain"}
                if given.get("user_id"):
                    task_metadata["user_id"] = str(given["user_id"])
                task = TaskHandle(
                    self.fw,
                    id=None,
                    session_id=session,
                    input=input,
                    agent_version=None,
                    metadata=task_metadata,
                )
                task._start()
                self._tasks[root] = task
            return task

    def _end(self, run_id: UUID, output: Any, error: BaseException | None) -> None:
        with self._lock:
            root = self._root.pop(run_id, None)
            task = self._tasks.pop(run_id, None) if root == run_id else None
        if task is not None:
            if error is not None:
                task.finish(output, success=False, error=f"{type(error).__name__}: {error}")
            else:
                task.finish(output, success=True)

    def _guard(self, func: Any, *args: Any, **kwargs: Any) -> None:
        try:
            func(*args, **kwargs)
        except Exception:
            log.exception("flywheel: could not log a LangChain event")

    def on_chain_start(
        self, serialized: Any, inputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kw: Any
    ) -> None:
        self._guard(self._task_for, run_id, parent_run_id, inputs, kw.get("metadata"))

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kw: Any) -> None:
        self._guard(self._end, run_id, outputs, None)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kw: Any) -> None:
        self._guard(self._end, run_id, None, error)

    # -------------------------------------------------------------- models

    def on_chat_model_start(
        self,
        serialized: Any,
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kw: Any,
    ) -> None:
        def start() -> None:
            flat = [_message(m) for batch in messages for m in batch]
            self._task_for(run_id, parent_run_id, flat, kw.get("metadata"))
            params = kw.get("invocation_params") or {}
            model = (
                params.get("model")
                or params.get("model_name")
                or (kw.get("metadata") or {}).get("ls_model_name")
            )
            self._starts[run_id] = (
                time.time(),
                {
                    "messages": flat,
                    "tools": params.get("tools"),
                    "model": model or (serialized or {}).get("name") or "unknown",
                },
            )

        self._guard(start)

    def on_llm_start(
        self,
        serialized: Any,
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kw: Any,
    ) -> None:
        def start() -> None:
            messages = [{"role": "user", "content": p} for p in prompts]
            self._task_for(run_id, parent_run_id, messages, kw.get("metadata"))
            params = kw.get("invocation_params") or {}
            self._starts[run_id] = (
                time.time(),
                {
                    "messages": messages,
                    "tools": None,
                    "model": params.get("model") or params.get("model_name") or "unknown",
                },
            )

        self._guard(start)

    def _llm_done(self, run_id: UUID, response: Any, error: BaseException | None) -> None:
        started, details = self._starts.pop(
            run_id, (time.time(), {"messages": [], "tools": None, "model": "unknown"})
        )
        body: Any = None
        usage: dict[str, Any] = {}
        if response is not None:
            generations = [g for batch in response.generations for g in batch]
            body = [
                _message(g.message) if hasattr(g, "message") else {"role": "assistant", "content": g.text}
                for g in generations
            ]
            usage = (response.llm_output or {}).get("token_usage") or {}
            for g in generations:
                meta = getattr(getattr(g, "message", None), "usage_metadata", None)
                if meta:
                    usage = {
                        "prompt_tokens": meta.get("input_tokens"),
                        "completion_tokens": meta.get("output_tokens"),
                    }
        with self._lock:
            task = self._tasks.get(self._root.get(run_id, run_id))
        if task is not None:
            task.llm_call(
                model=str(details["model"]),
                messages=details["messages"],
                tools=details["tools"],
                response=body[0] if body and len(body) == 1 else body,
                usage=usage or None,
                error=f"{type(error).__name__}: {error}" if error else None,
                started_at=started,
            )
        self._end(run_id, body[0] if body and len(body) == 1 else body, error)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kw: Any) -> None:
        self._guard(self._llm_done, run_id, response, None)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kw: Any) -> None:
        self._guard(self._llm_done, run_id, None, error)

    # --------------------------------------------------------------- tools

    def on_tool_start(
        self,
        serialized: Any,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        inputs: Any = None,
        **kw: Any,
    ) -> None:
        def start() -> None:
            self._task_for(
                run_id, parent_run_id, inputs if inputs is not None else input_str, kw.get("metadata")
            )
            name = (serialized or {}).get("name") or kw.get("name") or "tool"
            self._starts[run_id] = (
                time.time(),
                {"name": name, "arguments": inputs if inputs is not None else input_str},
            )

        self._guard(start)

    def _tool_done(self, run_id: UUID, output: Any, error: BaseException | None) -> None:
        started, details = self._starts.pop(run_id, (time.time(), {"name": "tool", "arguments": None}))
        content = getattr(output, "content", output)
        with self._lock:
            task = self._tasks.get(self._root.get(run_id, run_id))
        if task is not None:
            task.tool_call(
                name=str(details["name"]),
                arguments=details["arguments"],
                output=content,
                error=f"{type(error).__name__}: {error}" if error else None,
                started_at=started,
            )
        self._end(run_id, content, error)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kw: Any) -> None:
        self._guard(self._tool_done, run_id, output, None)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kw: Any) -> None:
        self._guard(self._tool_done, run_id, None, error)

    # ---------------------------------------------------------- retrievers

    def on_retriever_start(
        self, serialized: Any, query: str, *, run_id: UUID, parent_run_id: UUID | None = None, **kw: Any
    ) -> None:
        def start() -> None:
            self._task_for(run_id, parent_run_id, query, kw.get("metadata"))
            self._starts[run_id] = (time.time(), {"query": query})

        self._guard(start)

    def on_retriever_end(self, documents: Any, *, run_id: UUID, **kw: Any) -> None:
        def done() -> None:
            started, details = self._starts.pop(run_id, (time.time(), {"query": ""}))
            docs = [
                {
                    "id": getattr(d, "id", None),
                    "content": getattr(d, "page_content", str(d)),
                    "score": (getattr(d, "metadata", {}) or {}).get("score"),
                    "source": (getattr(d, "metadata", {}) or {}).get("source"),
                }
                for d in documents
            ]
            with self._lock:
                task = self._tasks.get(self._root.get(run_id, run_id))
            if task is not None:
                task.retrieval(query=details["query"], documents=docs, started_at=started)
            self._end(run_id, docs, None)

        self._guard(done)

    def on_agent_action(self, action: Any, *, run_id: UUID, **kw: Any) -> None:
        def reason() -> None:
            with self._lock:
                task = self._tasks.get(self._root.get(run_id, run_id))
            text = getattr(action, "log", "") or ""
            if task is not None and text.strip():
                task.reasoning(text.strip())

        self._guard(reason)
