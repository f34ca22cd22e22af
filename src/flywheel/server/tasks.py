"""Routes that read tasks and attach human signals to them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from flywheel.deploy import route
from flywheel.errors import InvalidInput, NotFound
from flywheel.ingest import Ingestor
from flywheel.records import Task, new_id, utcnow
from flywheel.server.auth import require
from flywheel.server.ingest import commit
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


async def _label(
    request: Request, task_id: str, key: ApiKey, event: dict[str, Any], action: str
) -> LabelResponse:
    state = request.app.state
    if not state.store.task_exists(task_id):
        raise NotFound(f"task {task_id!r} not found")
    event = {k: v for k, v in event.items() if v is not None}
    event.setdefault("id", new_id())
    event.setdefault("at", utcnow().isoformat())
    event["task_id"] = task_id
    prepared = state.ingestor.prepare([event])
    if prepared.rejected:
        error = prepared.rejected[0]
        raise InvalidInput(f"{error.field}: {error.message}")
    written = await commit(state.ingestor, prepared)
    state.metrics.record_ingest("labels", Ingestor.result(prepared, written))
    if written.stored:
        state.store.audit(f"key:{key.name}", action, "task", task_id, {"label_id": event["id"]})
    return LabelResponse(id=event["id"], task_id=task_id, stored=bool(written.stored))


@router.post("/v1/tasks/{task_id}/feedback", response_model=LabelResponse, summary="An end user's reaction")
async def post_feedback(
    request: Request, task_id: str, body: FeedbackRequest, key: IngestKey
) -> LabelResponse:
    event = {"type": "feedback", "source": f"key:{key.name}", **body.model_dump(mode="json")}
    return await _label(request, task_id, key, event, "feedback.create")


@router.post(
    "/v1/tasks/{task_id}/corrections", response_model=LabelResponse, summary="A human's corrected output"
)
async def post_correction(
    request: Request, task_id: str, body: CorrectionRequest, key: IngestKey
) -> LabelResponse:
    event = {"type": "correction", "author": f"key:{key.name}", **body.model_dump(mode="json")}
    return await _label(request, task_id, key, event, "correction.create")


@router.post(
    "/v1/tasks/{task_id}/annotations", response_model=LabelResponse, summary="A reviewer's annotation"
)
async def post_annotation(
    request: Request, task_id: str, body: AnnotationRequest, key: ReviewKey
) -> LabelResponse:
    event = {"type": "annotation", "author": f"key:{key.name}", **body.model_dump(mode="json")}
    return await _label(request, task_id, key, event, "annotation.create")


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
def get_artefact_bytes(request: Request, key: IngestKey, ref: str) -> Response:
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
