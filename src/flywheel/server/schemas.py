"""Request and response bodies of the HTTP API (pydantic, so they appear in /openapi.json)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from flywheel.records import (
    CORRECTION_RULE,
    FEEDBACK_RULE,
    AgentVersion,
    AnnotationBody,
    CorrectedToolCall,
    Event,
    Id,
    NotBool,
    Task,
)


class EventBatch(BaseModel):
    """``POST /v1/events``: up to ``FLYWHEEL_MAX_BATCH_EVENTS`` events (a bare array also works)."""

    model_config = ConfigDict(extra="forbid")
    events: list[Event]


class RejectedEvent(BaseModel):
    index: int = Field(description="position of the event in the batch")
    id: str | None
    field: str = Field(description="where the problem is, e.g. 'started_at' or 'messages.0'")
    message: str


class IngestResponse(BaseModel):
    received: int
    accepted: int = Field(description="stored + duplicates: these are committed")
    stored: int = Field(description="new events committed by this request")
    duplicates: int = Field(description="events already stored (a retried batch)")
    rejected: list[RejectedEvent]
    unpriced_calls: int = Field(
        description="llm_calls that reported tokens but no cost and whose model has no price "
        "(built-in or FLYWHEEL_PRICES): stored with a null cost, not guessed"
    )


class TaskList(BaseModel):
    tasks: list[Task]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


AT = (
    "when it happened (default: when it is received); at most an hour ahead of the server's "
    "clock, and within years 1 to 9999 in UTC"
)


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=FEEDBACK_RULE)
    id: Id | None = Field(None, description="client-generated id, for idempotent retries")
    thumbs: Annotated[Literal[-1, 1], NotBool] | None = None
    rating: Annotated[int, Field(ge=1, le=5), NotBool] | None = None
    comment: str | None = None
    edited: bool = False
    edited_output: Any = None
    retried: bool = False
    abandoned: bool = False
    at: datetime | None = Field(None, description=AT)


class CorrectionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=CORRECTION_RULE)
    id: Id | None = None
    output: Any = None
    tool_calls: list[CorrectedToolCall] | None = None
    at: datetime | None = Field(None, description=AT)


class AnnotationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: Id | None = None
    annotation: AnnotationBody
    at: datetime | None = Field(None, description=AT)


class LabelResponse(BaseModel):
    id: str
    task_id: str
    stored: bool = Field(description="false when this id was stored before (a retry)")


class AgentConfigResponse(BaseModel):
    workload: str
    session_id: str | None
    version: AgentVersion | None = Field(description="null when no version is deployed yet")


class ErrorBody(BaseModel):
    type: str
    message: str
    hint: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
