"""The tool-calling agent loop.

An agent version's config (model, system prompt, few-shot examples, knowledge,
tool policy, rules) becomes an ``AgentConfig``; ``ToolAgent`` answers a task
with it and logs every step through the SDK:

* single-turn: one model call whose tool calls are the answer;
* multi-turn: for each user turn, call the model, execute its calls in the
  task's environment, feed results (and errors) back, and go on until the
  model answers without calls, repeats the same calls more than
  ``max_repeats`` steps in a row, or the step budget is spent. A call that fails
  is retried (the error fed back) up to ``max_retries`` times; when a tool
  keeps failing, a fallback tool (``tool_policy.fallback``) is used if set.

The outcome's ``success`` is the agent's own view (no error, an answer given);
whether the answer was right is for users, reviewers and evaluation to say.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from flywheel.agents.few_shot_pool import FewShotPool
from flywheel.agents.knowledge import KnowledgeIndex, Retrieved
from flywheel.models.base import ChatModel, ChatRequest, ChatResult, FewShot, last_user_text
from flywheel.models.pricing import PriceTable
from flywheel.records import AgentVersion
from flywheel.sdk.task import TaskHandle

__all__ = ["AgentConfig", "AgentOutcome", "Environment", "FewShotPool", "ToolAgent"]


@dataclass
class AgentConfig:
    model: str = "local"
    system_prompt: str = ""
    few_shot: list[FewShot] = field(default_factory=list)
    knowledge: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    tool_policy: dict[str, Any] = field(default_factory=dict)  # deny, prefer, fallback
    max_retries: int = 1
    max_steps: int = 6
    # The same calls this many steps in a row end the turn: a small model stuck
    # repeating itself (a retry after an error is the second; the third changes
    # nothing but the bill).
    max_repeats: int = 2
    max_tokens: int = 256
    adapter: str | None = None  # a LoRA adapter (GGUF) for the local model
    few_shot_pool: FewShotPool | None = None  # per-request examples (instead of few_shot)
    knowledge_index: KnowledgeIndex | None = None  # the pinned snapshot retrieved from per request
    version_id: str | None = None

    @classmethod
    def from_version(
        cls,
        version: AgentVersion | None,
        *,
        artefacts: Callable[[str], bytes] | None = None,
        **defaults: Any,
    ) -> AgentConfig:
        """``artefacts`` reads the artefacts a version pins (``store.artefacts.reader``
        or the SDK's ``fw.artefact``)."""
        if version is None:
            return cls(**defaults)
        return cls.from_config(version.config, version.id, artefacts=artefacts, **defaults)

    @classmethod
    def from_config(
        cls,
        data: dict[str, Any],
        version_id: str | None = None,
        *,
        artefacts: Callable[[str], bytes] | None = None,
        **defaults: Any,
    ) -> AgentConfig:
        """The config of a version's bundle (``version_id`` keys per-process caches)."""
        config = dict(data)
        shots = [FewShot(s["question"], s["calls"], s.get("tools") or []) for s in config.pop("few_shot", [])]
        pool_data = config.pop("few_shot_pool", None)
        pool = _pool(version_id or "", pool_data, artefacts) if pool_data else None
        snapshot = config.pop("knowledge_snapshot", None)
        index = KnowledgeIndex.pinned(snapshot, artefacts) if snapshot else None
        derived = ("few_shot", "few_shot_pool", "knowledge_index", "version_id")
        known = {f for f in cls.__dataclass_fields__ if f not in derived}
        values = {**defaults, **{k: v for k, v in config.items() if k in known}}
        return cls(**values, few_shot=shots, few_shot_pool=pool, knowledge_index=index, version_id=version_id)

    def retrieve(
        self, messages: list[dict[str, Any]], exclude: frozenset[str] = frozenset()
    ) -> list[Retrieved]:
        """The knowledge items retrieved for this request (none without a snapshot),
        leaving out those whose source is in ``exclude``."""
        if self.knowledge_index is None:
            return []
        return self.knowledge_index.search(last_user_text(messages), exclude)

    def system_for(self, messages: list[dict[str, Any]], exclude: frozenset[str] = frozenset()) -> str:
        """The system prompt of this request: the version's, with the knowledge
        retrieved for it (less the sources in ``exclude``) and its intent's tool hint."""
        system = self.system()
        retrieved = self.retrieve(messages, exclude)
        if retrieved:
            facts = "\n".join(f"- {r.text}" for r in retrieved)
            system = f"{system}\n\nRelevant knowledge:\n{facts}".strip()
        hint = self.tool_hint(messages)
        return f"{system}\n\n{hint}".strip() if hint else system

    def tool_hint(self, messages: list[dict[str, Any]]) -> str:
        """The tool policy's hint for the intent this request belongs to (nearest
        intent centroid above the policy's threshold), or ""."""
        intents = self.tool_policy.get("intents") or []
        if not intents:
            return ""
        import numpy as np

        from flywheel.models.embedding import Embedder

        centroids = _centroids(self.version_id or "", intents)
        query = np.asarray(Embedder().embed([last_user_text(messages)])[0], dtype=np.float32)
        similarity = centroids @ query
        best = int(np.argmax(similarity))
        if similarity[best] < float(self.tool_policy.get("threshold", 0.6)):
            return ""
        intent = intents[best]
        return (
            f"For this kind of request prefer {', '.join(intent['prefer'])}; "
            f"avoid {', '.join(intent['avoid'])} (it often fails here)."
        )

    def shots_for(self, messages: list[dict[str, Any]]) -> list[FewShot]:
        """The examples this request is shown: chosen for it, or the version's fixed ones."""
        if self.few_shot_pool is not None:
            return self.few_shot_pool.select(last_user_text(messages))
        return self.few_shot

    def system(self) -> str:
        parts = [self.system_prompt.strip()] if self.system_prompt.strip() else []
        if self.rules:
            parts.append("Rules:\n" + "\n".join(f"- {rule}" for rule in self.rules))
        prefer, deny = self.tool_policy.get("prefer") or [], self.tool_policy.get("deny") or []
        if prefer:
            parts.append("Prefer these tools when they fit: " + ", ".join(prefer) + ".")
        if deny:
            parts.append("Never use: " + ", ".join(deny) + ".")
        if self.knowledge:
            parts.append("Facts:\n" + "\n".join(f"- {fact}" for fact in self.knowledge))
        return "\n\n".join(parts)


_pools: dict[str, FewShotPool] = {}
_intent_centroids: dict[str, Any] = {}


def _centroids(version_id: str, intents: list[dict[str, Any]]) -> Any:
    """A version's intent centroids as unit rows, decoded once per process."""
    import base64

    import numpy as np

    if version_id not in _intent_centroids or not version_id:
        rows = [
            np.frombuffer(base64.b64decode(i["centroid"]), dtype=np.float16).astype(np.float32)
            for i in intents
        ]
        matrix = np.stack(rows)
        matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-9)
        if not version_id:
            return matrix
        _intent_centroids[version_id] = matrix
    return _intent_centroids[version_id]


def _pool(version_id: str, data: dict[str, Any], artefacts: Callable[[str], bytes] | None) -> FewShotPool:
    """A version's pool, decoded once per process (configs are immutable)."""
    if not version_id:
        return FewShotPool.from_config(data, artefacts)
    if version_id not in _pools:
        _pools[version_id] = FewShotPool.from_config(data, artefacts)
    return _pools[version_id]


class Environment(Protocol):
    """Executes tool calls for a multi-turn task."""

    def execute(self, name: str, arguments: dict[str, Any]) -> tuple[Any, str | None]: ...

    def file_access(self, name: str, arguments: dict[str, Any]) -> tuple[str, str] | None:
        """(path, mode) when the call reads or writes a file, else None."""
        ...


@dataclass
class AgentOutcome:
    calls: list[dict[str, Any]]  # what the agent answered (single-turn) or executed (multi-turn)
    success: bool
    confidence: float | None
    error: str | None = None
    cost: float = 0.0
    model_calls: int = 0


class ToolAgent:
    def __init__(self, model: ChatModel, config: AgentConfig, *, prices: PriceTable | None = None) -> None:
        self.model = model
        self.config = config
        self.prices = prices or PriceTable()

    def offered_tools(self, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The tools the policy lets the model see."""
        deny = set(self.config.tool_policy.get("deny") or [])
        return [t for t in tools if t.get("function", t).get("name") not in deny]

    def _ask(
        self,
        task: TaskHandle,
        outcome: AgentOutcome,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        note: str = "",
    ) -> ChatResult:
        """One model call, logged as a step and counted (calls, cost) in ``outcome``."""
        system = self.config.system_for(messages)
        if note:
            system = f"{system}\n\n{note}".strip()
        request = ChatRequest(
            messages=messages,
            tools=tools,
            system=system,
            few_shot=self.config.shots_for(messages),
            max_tokens=self.config.max_tokens,
        )
        result = self.model.complete(request)
        cost = self.prices.cost(result.model, result.input_tokens, result.output_tokens, result.cpu_seconds)
        outcome.model_calls += 1
        outcome.cost += cost or 0.0
        sent = ([{"role": "system", "content": system}] if system else []) + messages
        task.llm_call(
            model=result.model,
            messages=sent,
            tools=tools,
            response=result.as_message(),
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            cost=cost,
            error=result.error,
            latency_ms=result.seconds * 1000,
        )
        return result

    def _log_retrieval(self, task: TaskHandle, messages: list[dict[str, Any]]) -> None:
        """The retrieval step of a request (once per request; the prompt uses the same items)."""
        if self.config.knowledge_index is None:
            return
        query = last_user_text(messages)
        started = time.time()
        found = self.config.retrieve(messages)
        task.retrieval(
            query=query,
            documents=[
                {"id": r.id, "content": r.text, "score": round(r.score, 4), "source": r.source} for r in found
            ],
            started_at=started,
            ended_at=time.time(),
        )

    def answer(
        self, task: TaskHandle, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> AgentOutcome:
        """Single-turn: the calls of one model answer (retried when unusable)."""
        offered = self.offered_tools(tools)
        outcome = AgentOutcome([], False, None)
        note = ""
        self._log_retrieval(task, messages)
        for attempt in range(1 + self.config.max_retries):
            result = self._ask(task, outcome, messages, offered, note)
            outcome.calls, outcome.confidence, outcome.error = result.calls, result.confidence, result.error
            if result.error is None:
                outcome.success = True
                break
            task.reasoning(f"Attempt {attempt + 1} failed ({result.error}); asking again.")
            note = f"Your previous answer could not be used: {result.error}. Answer with complete JSON."
        task.finish(
            outcome.calls, success=outcome.success, confidence=outcome.confidence, error=outcome.error
        )
        return outcome

    def converse(
        self,
        task: TaskHandle,
        turns: list[list[dict[str, Any]]],
        tools: list[dict[str, Any]],
        env: Environment,
        on_turn_end: Callable[[int], None] | None = None,
    ) -> AgentOutcome:
        """Multi-turn: execute calls in ``env`` turn by turn, feeding results back."""
        offered = self.offered_tools(tools)
        fallback = self.config.tool_policy.get("fallback")
        messages: list[dict[str, Any]] = []
        outcome = AgentOutcome([], True, None)
        confidences: list[float] = []
        attempts: dict[str, int] = {}
        for index, turn in enumerate(turns):
            messages.extend(turn)
            self._log_retrieval(task, messages)
            previous, repeats = None, 0
            for _ in range(self.config.max_steps):
                result = self._ask(task, outcome, messages, offered)
                if result.confidence is not None:
                    confidences.append(result.confidence)
                if result.error is not None:
                    outcome.error = result.error
                    messages.append(
                        {"role": "user", "content": f"(your answer could not be used: {result.error})"}
                    )
                    continue
                if not result.calls:
                    break
                repeats = repeats + 1 if result.calls == previous else 1
                previous = result.calls
                if repeats > self.config.max_repeats:
                    names = ", ".join(c["name"] for c in result.calls)
                    task.reasoning(f"{names} asked for {repeats} times in a row; ending the turn.")
                    break
                messages.append(result.as_message())
                for i, call in enumerate(result.calls):
                    outcome.calls.append(call)
                    output, error = self._execute(task, env, call, attempts)
                    if (
                        error is not None
                        and fallback
                        and attempts.get(call["name"], 0) > self.config.max_retries
                    ):
                        task.reasoning(f"{call['name']} keeps failing; falling back to {fallback}.")
                        output, error = self._execute(
                            task, env, {"name": fallback, "arguments": {}}, attempts, fallback=True
                        )
                    messages.append(
                        {
                            "role": "tool",
                            "tool_call_id": f"call_{i}",
                            "content": json.dumps(error or output, default=str)[:2000],
                        }
                    )
            if on_turn_end is not None:
                on_turn_end(index)
        outcome.confidence = min(confidences) if confidences else None
        outcome.success = outcome.error is None
        task.finish(
            outcome.calls, success=outcome.success, confidence=outcome.confidence, error=outcome.error
        )
        return outcome

    def _execute(
        self,
        task: TaskHandle,
        env: Environment,
        call: dict[str, Any],
        attempts: dict[str, int],
        *,
        fallback: bool = False,
    ) -> tuple[Any, str | None]:
        name, arguments = call["name"], call.get("arguments") or {}
        attempt = attempts.get(name, 0) + 1
        output, error = env.execute(name, arguments)
        # A tool called again after an error is a retry; a success resets the count.
        attempts[name] = attempt if error else 0
        task.tool_call(
            name=name, arguments=arguments, output=output, error=error, attempt=attempt, fallback=fallback
        )
        access = env.file_access(name, arguments)
        if access is not None:
            path, mode = access
            size = len(output) if isinstance(output, str) else None
            task.file_access(path=path, mode=mode, bytes=size, error=error)
        return output, error
