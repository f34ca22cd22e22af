"""Routes that read tasks and attach human signals to them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from flywheel.deploy import route
from flywheel.errors import InvalidInput, NotFound
from flywheel.records import Task, utcnow
from flywheel.review.labels import StoredLabel, label_id, store_label
from flywheel.server.auth import require
from flywheel.server.schemas import (
    AgentConfigResponse,
    AnnotationRequest,
    CorrectionRequest,
    FeedbackRequest,
    LabelResponse,
    TaskList,
)
from flywheel.store import ApiKey

router = APIRouter()

ReadKey = Annotated[ApiKey, Depends(require("review"))]
IngestKey = Annotated[ApiKey, Depends(require("ingest", "review"))]
ReviewKey = Annotated[ApiKey, Depends(require("review"))]


@router.get("/v1/tasks", response_model=TaskList, summary="List tasks, newest first")
def list_tasks(
    request: Request,
    key: ReadKey,
    workload: str | None = None,
    session_id: str | None = None,
    agent_version: str | None = None,
    success: bool | None = None,
    finished: bool | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: str | None = None,
) -> TaskList:
    tasks, next_cursor = request.app.state.store.list_tasks(
        workload=workload,
        session_id=session_id,
        agent_version=agent_version,
        success=success,
        finished=finished,
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
    )
    return TaskList(tasks=tasks, next_cursor=next_cursor)


@router.get("/v1/tasks/{task_id}", response_model=Task, summary="One task with its steps and labels")
def get_task(request: Request, task_id: str, key: ReadKey) -> Task:
    return request.app.state.store.get_task(task_id)


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="Distinguishes two labels of the same content on purpose; a retry sends "
        "the same value (or none) and stores nothing twice.",
    ),
]

M = TypeVar("M", bound=BaseModel)

_LABEL_NOTE = (
    "\n\nThe label's author is the key that sends it (`key:NAME`). Its id is the body's `id` "
    "when given; else it is derived from the key, the task, the content (with `at` if given) "
    "and the `Idempotency-Key` header, so a retried label is stored once (`stored: false`)."
)


def _label_body(model: type[BaseModel]) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


async def _parse(request: Request, model: type[M]) -> M:
    """The request body as ``model``; read only now, after the key was checked, and
    within the body limit (``flywheel.server.guard``)."""
    body = await request.body()
    try:
        return model.model_validate_json(body or b"null")
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        ]
        raise InvalidInput("; ".join(problems)) from exc


async def _label(
    request: Request,
    task_id: str,
    key: ApiKey,
    event: dict[str, Any],
    action: str,
    nonce: str | None,
) -> LabelResponse:
    state = request.app.state
    author = f"key:{key.name}"
    event = {k: v for k, v in event.items() if v is not None}
    event["task_id"] = task_id
    if "id" not in event:
        event["id"] = label_id(author, task_id, event, nonce)
    event.setdefault("at", utcnow().isoformat())

    def write() -> StoredLabel:
        if not state.store.task_exists(task_id):
            raise NotFound(f"task {task_id!r} not found")
        return store_label(state.store, state.ingestor, event, actor=author, action=action)

    label = await run_in_threadpool(write)
    state.metrics.record_ingest("labels", label.result)
    return LabelResponse(id=label.id, task_id=task_id, stored=label.stored)


@router.post(
    "/v1/tasks/{task_id}/feedback",
    response_model=LabelResponse,
    summary="An end user's reaction",
    description="Thumbs, a rating, a comment, or an implicit signal (edited, retried, abandoned); "
    "its `source` is the key that sends it." + _LABEL_NOTE,
    openapi_extra=_label_body(FeedbackRequest),
)
async def post_feedback(
    request: Request, task_id: str, key: IngestKey, idempotency_key: IdempotencyKey = None
) -> LabelResponse:
    body = await _parse(request, FeedbackRequest)
    event = {**body.model_dump(mode="json"), "type": "feedback", "source": f"key:{key.name}"}
    return await _label(request, task_id, key, event, "feedback.create", idempotency_key)


@router.post(
    "/v1/tasks/{task_id}/corrections",
    response_model=LabelResponse,
    summary="A human's corrected output",
    description="The fixed output or tool calls of a task." + _LABEL_NOTE,
    openapi_extra=_label_body(CorrectionRequest),
)
async def post_correction(
    request: Request, task_id: str, key: IngestKey, idempotency_key: IdempotencyKey = None
) -> LabelResponse:
    body = await _parse(request, CorrectionRequest)
    event = {**body.model_dump(mode="json"), "type": "correction", "author": f"key:{key.name}"}
    return await _label(request, task_id, key, event, "correction.create", idempotency_key)


@router.post(
    "/v1/tasks/{task_id}/annotations",
    response_model=LabelResponse,
    summary="A reviewer's annotation",
    description="One of the four annotation kinds; needs a key of scope review (or admin)." + _LABEL_NOTE,
    openapi_extra=_label_body(AnnotationRequest),
)
async def post_annotation(
    request: Request, task_id: str, key: ReviewKey, idempotency_key: IdempotencyKey = None
) -> LabelResponse:
    body = await _parse(request, AnnotationRequest)
    event = {**body.model_dump(mode="json"), "type": "annotation", "author": f"key:{key.name}"}
    return await _label(request, task_id, key, event, "annotation.create", idempotency_key)


@router.get("/v1/stats", summary="Counts per workload")
def get_stats(request: Request, key: ReadKey, workload: str | None = None) -> dict[str, Any]:
    return request.app.state.store.stats(workload)


@router.get("/v1/agent-config", response_model=AgentConfigResponse, summary="The version serving a session")
def get_agent_config(
    request: Request, key: IngestKey, workload: str, session_id: str | None = None
) -> AgentConfigResponse:
    version = route(request.app.state.store, workload, session_id)
    return AgentConfigResponse(workload=workload, session_id=session_id, version=version)


@router.get(
    "/v1/artefacts/{ref}",
    response_class=Response,
    summary="The bytes of an artefact a version pins (LoRA adapter, knowledge snapshot)",
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def get_artefact_bytes(
    request: Request,
    key: IngestKey,
    ref: Annotated[str, Path(pattern=r"^sha256:[0-9a-f]{64}$", description="sha256: and 64 hex digits")],
) -> Response:
    from flywheel.store.artefacts import get_artefact

    meta, data = get_artefact(request.app.state.store, ref)
    return Response(
        data,
        media_type="application/octet-stream",
        headers={
            "X-Artefact-Kind": str(meta["kind"]),
            "Cache-Control": "public, max-age=31536000, immutable",
        },
    )
