"""The vocabulary of data-flywheel: every record, as it crosses a boundary.

Two families live here:

* **Events** are what agents send (SDK, ``POST /v1/events``, imports). Each one
  carries a client-generated id, so a retried batch is recognised and never
  stored twice. ``Event`` is the tagged union of all of them, keyed by ``type``.
* **Records** are what the store gives back (``Task`` with its ``Step`` list,
  ``FeedbackRecord``, ``AgentVersion``, ``AuditEvent`` ...).

This module imports nothing of ours.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from random import getrandbits
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    model_validator,
)

__all__ = [
    "CORRECTION_RULE",
    "FEEDBACK_RULE",
    "MAX_CLOCK_SKEW",
    "MAX_SEQ",
    "Adoption",
    "AgentVersion",
    "AnnotationBody",
    "AnnotationEvent",
    "AnnotationKind",
    "AuditEvent",
    "CorrectedToolCall",
    "CorrectionEvent",
    "CurationTask",
    "Event",
    "EventType",
    "FeedbackEvent",
    "FileAccessEvent",
    "Id",
    "KnowledgeRelevance",
    "LLMCallEvent",
    "MissingKnowledge",
    "NotBool",
    "Preference",
    "ReasoningEvent",
    "RetrievalEvent",
    "RetrievedDocument",
    "Step",
    "StepKind",
    "Task",
    "TaskFinishedEvent",
    "TaskStartedEvent",
    "ToolCallEvent",
    "event_adapter",
    "events_adapter",
    "new_id",
    "utcnow",
]

#: How far in the future a client's timestamp may be before it is refused.
MAX_CLOCK_SKEW = timedelta(hours=1)

#: Longest id, workload or session name we accept.
MAX_NAME = 200


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """A UUIDv7 as a string: time-ordered, so ids sort by creation and index well.

    The 74 random bits come from ``random`` (reseeded in forked children): ids
    must be unique, not secret, and this is on the agent's hot path.
    """
    ms = time.time_ns() // 1_000_000
    r = getrandbits(74)
    h = f"{(ms << 80) | 0x7000 << 64 | (r >> 62) << 64 | 0x2 << 62 | (r & 0x3FFFFFFFFFFFFFFF):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _aware_and_not_future(value: datetime) -> datetime:
    try:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            f"timestamp {value.isoformat()} is out of range: in UTC it falls outside years 1 to 9999"
        ) from None
    if value > datetime.now(UTC) + MAX_CLOCK_SKEW:
        raise ValueError(
            f"timestamp {value.isoformat()} is in the future "
            f"(more than {int(MAX_CLOCK_SKEW.total_seconds())} s ahead of the server clock)"
        )
    return value


Timestamp = Annotated[datetime, AfterValidator(_aware_and_not_future)]


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"{str(value).lower()} is a boolean; a number is expected here")
    return value


#: A number that a JSON ``true`` or ``false`` must not pass for (pydantic's lax
#: mode reads them as 1 and 0).
NotBool = BeforeValidator(_not_bool)

#: The most a step's ``seq`` may be: the store keeps it in a 32-bit integer column.
MAX_SEQ = 2**31 - 1
Id = Annotated[str, Field(min_length=1, max_length=MAX_NAME, pattern=r"^[^\x00-\x20/?#%\\\x7f]+$")]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]


class StepKind(StrEnum):
    LLM_CALL = "llm_call"
    TOOL_CALL = "tool_call"
    FILE_ACCESS = "file_access"
    REASONING = "reasoning"
    RETRIEVAL = "retrieval"


class EventType(StrEnum):
    TASK_STARTED = "task_started"
    TASK_FINISHED = "task_finished"
    LLM_CALL = "llm_call"
    TOOL_CALL = "tool_call"
    FILE_ACCESS = "file_access"
    REASONING = "reasoning"
    RETRIEVAL = "retrieval"
    FEEDBACK = "feedback"
    CORRECTION = "correction"
    ANNOTATION = "annotation"


class AnnotationKind(StrEnum):
    PREFERENCE = "preference"
    ADOPTION = "adoption"
    KNOWLEDGE_RELEVANCE = "knowledge_relevance"
    MISSING_KNOWLEDGE = "missing_knowledge"


def _document_rules(schema: dict[str, Any]) -> None:
    """The JSON schema says what validation checks beyond the fields' types.

    A union's tag (an event's ``type``, an annotation's ``kind``) has a default for
    Python callers, but pydantic picks the member of the union by it: a body must
    name it. A model's own rule (``FEEDBACK_RULE``, ``CORRECTION_RULE``) is added
    where the model declares it."""
    for tag in ("type", "kind"):
        prop = schema.get("properties", {}).get(tag, {})
        if "const" in prop:
            prop.pop("default", None)
            required = schema.setdefault("required", [])
            if tag not in required:
                required.insert(0, tag)


def _with(rule: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """``_document_rules`` and a model's own ``rule``."""

    def extra(schema: dict[str, Any]) -> None:
        _document_rules(schema)
        schema.update(rule)

    return extra


#: What ``FeedbackEvent`` checks beyond its fields (and ``FeedbackRequest``), as JSON schema:
#: some signal, and an ``edited_output`` only with ``edited: true``.
FEEDBACK_RULE: dict[str, Any] = {
    "allOf": [
        {
            "anyOf": [
                {"required": ["thumbs"], "properties": {"thumbs": {"type": "integer"}}},
                {"required": ["rating"], "properties": {"rating": {"type": "integer"}}},
                {"required": ["comment"], "properties": {"comment": {"type": "string", "minLength": 1}}},
                *(
                    {"required": [flag], "properties": {flag: {"const": True}}}
                    for flag in ("edited", "retried", "abandoned")
                ),
            ]
        },
        {
            "anyOf": [
                {"properties": {"edited_output": {"type": "null"}}},
                {"required": ["edited"], "properties": {"edited": {"const": True}}},
            ]
        },
    ]
}

#: What ``CorrectionEvent`` checks beyond its fields (and ``CorrectionRequest``).
CORRECTION_RULE: dict[str, Any] = {
    "anyOf": [
        {
            "required": ["output"],
            "properties": {"output": {"type": ["string", "number", "boolean", "array", "object"]}},
        },
        {"required": ["tool_calls"], "properties": {"tool_calls": {"type": "array"}}},
    ]
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_document_rules)


# --------------------------------------------------------------------- tasks


class TaskStartedEvent(_Strict):
    """A task began. ``id`` is the task id (the caller's or a generated UUIDv7)."""

    type: Literal["task_started"] = "task_started"
    id: Id
    workload: Name
    session_id: Id
    input: Any = None
    agent_version: Id | None = None
    started_at: Timestamp
    metadata: dict[str, Any] = Field(default_factory=dict)


class TaskFinishedEvent(_Strict):
    """A task ended with an outcome. Repeats the task's identity so that the
    task is complete even if its start event was lost."""

    type: Literal["task_finished"] = "task_finished"
    id: Id
    workload: Name
    session_id: Id
    input: Any = None
    agent_version: Id | None = None
    started_at: Timestamp
    ended_at: Timestamp
    output: Any = None
    success: bool | None = Field(description="None when the outcome is unknown")
    confidence: Annotated[float, Field(ge=0.0, le=1.0), NotBool] | None = None
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _ends_after_start(self) -> TaskFinishedEvent:
        if self.ended_at < self.started_at:
            raise ValueError("ended_at is before started_at")
        return self


# --------------------------------------------------------------------- steps


class _StepEvent(_Strict):
    id: Id
    task_id: Id
    seq: Annotated[int, Field(ge=0, le=MAX_SEQ), NotBool] = 0
    started_at: Timestamp
    ended_at: Timestamp | None = None
    error: str | None = Field(None, description="what went wrong, short: `Type: message`")
    error_detail: str | None = Field(None, description="the whole traceback, when there is one")

    @model_validator(mode="after")
    def _ends_after_start(self) -> _StepEvent:
        if self.ended_at is not None and self.ended_at < self.started_at:
            raise ValueError("ended_at is before started_at")
        return self


class LLMCallEvent(_StepEvent):
    type: Literal["llm_call"] = "llm_call"
    model: Name
    messages: list[Any] = Field(default_factory=list)
    tools: list[Any] | None = None
    response: Any = None
    input_tokens: Annotated[int, Field(ge=0), NotBool] | None = None
    output_tokens: Annotated[int, Field(ge=0), NotBool] | None = None
    cost: Annotated[float, Field(ge=0.0), NotBool] | None = None


class ToolCallEvent(_StepEvent):
    type: Literal["tool_call"] = "tool_call"
    name: Name
    arguments: Any = None
    output: Any = None
    attempt: Annotated[int, Field(ge=1), NotBool] = 1
    fallback: bool = False


class FileAccessEvent(_StepEvent):
    type: Literal["file_access"] = "file_access"
    path: Annotated[str, Field(min_length=1, max_length=4096)]
    mode: Literal["read", "write", "modify"]
    bytes: Annotated[int, Field(ge=0), NotBool] | None = None


class ReasoningEvent(_StepEvent):
    type: Literal["reasoning"] = "reasoning"
    text: str


class RetrievedDocument(_Strict):
    id: str | None = None
    content: str
    score: Annotated[float, NotBool] | None = None
    source: str | None = None


class RetrievalEvent(_StepEvent):
    type: Literal["retrieval"] = "retrieval"
    query: str
    documents: list[RetrievedDocument] = Field(default_factory=list)


# ------------------------------------------------------------ human signals


class FeedbackEvent(_Strict):
    """An end user's reaction: explicit (thumbs, rating, comment) or implicit
    (edited the output, retried, abandoned)."""

    model_config = ConfigDict(json_schema_extra=_with(FEEDBACK_RULE))

    type: Literal["feedback"] = "feedback"
    id: Id
    task_id: Id
    thumbs: Annotated[Literal[-1, 1], NotBool] | None = None
    rating: Annotated[int, Field(ge=1, le=5), NotBool] | None = None
    comment: str | None = None
    edited: bool = False
    edited_output: Any = None
    retried: bool = False
    abandoned: bool = False
    source: Name = "user"
    at: Timestamp

    @model_validator(mode="after")
    def _says_something(self) -> FeedbackEvent:
        if (
            self.thumbs is None
            and self.rating is None
            and not self.comment
            and not (self.edited or self.retried or self.abandoned)
        ):
            raise ValueError(
                "feedback carries no signal: give thumbs, rating, comment, edited, retried or abandoned"
            )
        if self.edited_output is not None and not self.edited:
            raise ValueError("edited_output is given but edited is false")
        return self


class CorrectedToolCall(_Strict):
    name: Name
    arguments: dict[str, Any] = Field(default_factory=dict)


class CorrectionEvent(_Strict):
    """A human's fixed version of a task's output or tool calls."""

    model_config = ConfigDict(json_schema_extra=_with(CORRECTION_RULE))

    type: Literal["correction"] = "correction"
    id: Id
    task_id: Id
    output: Any = None
    tool_calls: list[CorrectedToolCall] | None = None
    author: Name = "unknown"
    at: Timestamp

    @model_validator(mode="after")
    def _corrects_something(self) -> CorrectionEvent:
        if self.output is None and self.tool_calls is None:
            raise ValueError("a correction needs output or tool_calls")
        return self


class Preference(_Strict):
    kind: Literal["preference"] = "preference"
    response_a: Any
    response_b: Any
    preferred: Literal["a", "b", "tie"]
    reason: str | None = None


class Adoption(_Strict):
    kind: Literal["adoption"] = "adoption"
    adopted: bool
    rationale: str


class KnowledgeRelevance(_Strict):
    kind: Literal["knowledge_relevance"] = "knowledge_relevance"
    document_id: str
    relevant: bool
    note: str | None = None


class MissingKnowledge(_Strict):
    kind: Literal["missing_knowledge"] = "missing_knowledge"
    text: Annotated[str, Field(min_length=1)]


AnnotationBody = Annotated[
    Preference | Adoption | KnowledgeRelevance | MissingKnowledge,
    Field(discriminator="kind"),
]


class AnnotationEvent(_Strict):
    type: Literal["annotation"] = "annotation"
    id: Id
    task_id: Id
    annotation: AnnotationBody
    author: Name = "unknown"
    at: Timestamp


Event = Annotated[
    TaskStartedEvent
    | TaskFinishedEvent
    | LLMCallEvent
    | ToolCallEvent
    | FileAccessEvent
    | ReasoningEvent
    | RetrievalEvent
    | FeedbackEvent
    | CorrectionEvent
    | AnnotationEvent,
    Field(discriminator="type"),
]

event_adapter: TypeAdapter[Event] = TypeAdapter(Event)
events_adapter: TypeAdapter[list[Event]] = TypeAdapter(list[Event])

STEP_EVENT_TYPES = frozenset(k.value for k in StepKind)


# ------------------------------------------------------------------ records


class Step(BaseModel):
    """One step of a task as stored: the common fields plus the kind's payload."""

    id: str
    task_id: str
    seq: int
    kind: StepKind
    started_at: datetime
    ended_at: datetime | None
    latency_ms: float | None
    name: str | None = Field(None, description="model of an llm_call, tool of a tool_call")
    error: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    redactions: int = 0


class Task(BaseModel):
    """A task as stored, with its outcome and, when asked for, its steps and labels."""

    id: str
    workload: str
    session_id: str
    agent_version: str | None
    input: Any
    output: Any
    success: bool | None
    confidence: float | None
    error: str | None
    started_at: datetime
    ended_at: datetime | None
    duration_ms: float | None
    metadata: dict[str, Any] = Field(default_factory=dict)
    redactions: int = 0
    steps: list[Step] = Field(default_factory=list)
    feedback: list[dict[str, Any]] = Field(default_factory=list)
    corrections: list[dict[str, Any]] = Field(default_factory=list)
    annotations: list[dict[str, Any]] = Field(default_factory=list)


@dataclass(slots=True)
class CurationTask:
    """A task as curation reads it in bulk (``Store.iter_curation_tasks``): the
    outcome, the last model call's messages, tools and response, the tool calls
    summarised by the store, and the labels. Light enough for a million."""

    id: str
    workload: str
    session_id: str
    success: bool | None
    confidence: float | None
    started_at: datetime
    ended_at: datetime | None
    duration_ms: float | None
    last_call: dict[str, Any] | None  # {"messages", "tools", "response"} of the last llm_call
    tool_errors: int = 0
    retries: int = 0  # tool calls that were a later attempt
    fallback: bool = False
    output_json: str | None = None  # decoded on use (``output``)
    intent: str | None = None  # the task's ``intent`` (else ``category``) metadata
    feedback: list[dict[str, Any]] = dataclass_field(default_factory=list)
    corrections: list[dict[str, Any]] = dataclass_field(default_factory=list)
    annotations: list[dict[str, Any]] = dataclass_field(default_factory=list)

    @property
    def output(self) -> Any:
        import orjson

        return None if self.output_json is None else orjson.loads(self.output_json)


class AgentVersion(BaseModel):
    """An immutable bundle that an agent runs with. ``id`` is a content hash."""

    id: str
    workload: str
    number: int
    parent_id: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    dataset_id: str | None = None
    strategy: str | None = None


class AuditEvent(BaseModel):
    """Who (a user, an API key, an agent) did what to which record, and when."""

    id: str
    at: datetime
    actor: str
    action: str
    record_type: str
    record_id: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
