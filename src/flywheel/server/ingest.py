"""Routes of the way in: ``POST /v1/events`` and ``POST /v1/traces`` (OTLP/HTTP)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from flywheel.errors import InvalidInput, PayloadTooLarge, StoreUnavailable
from flywheel.ingest import Ingestor, PreparedBatch
from flywheel.ingest.otlp import encode_logs_response, encode_response
from flywheel.server.auth import require
from flywheel.server.schemas import EventBatch, IngestResponse
from flywheel.store import ApiKey, WriteResult

router = APIRouter()

IngestKey = Annotated[ApiKey, Depends(require("ingest"))]


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    if request.headers.get("content-encoding", "").lower() == "gzip":
        import gzip
        import zlib

        try:
            return gzip.decompress(b"".join(chunks))
        except (OSError, EOFError, zlib.error) as exc:
            raise InvalidInput(f"the body is not valid gzip: {exc}") from exc
    return b"".join(chunks)


async def commit(ingestor: Ingestor, prepared: PreparedBatch) -> WriteResult:
    """Write through the group-commit writer; returns once the rows are committed."""
    assert ingestor.writer is not None
    try:
        return await asyncio.wrap_future(ingestor.writer.submit(prepared.rows))
    except Exception as exc:
        raise StoreUnavailable(
            f"the events could not be stored: {exc}", hint="nothing was committed; retry later"
        ) from exc


@router.post(
    "/v1/events",
    response_model=IngestResponse,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EventBatch"}}},
        }
    },
    responses={
        413: {"description": "body or batch too large"},
        422: {"description": "every event was rejected"},
    },
    summary="Ingest a batch of events",
)
async def post_events(request: Request, key: IngestKey) -> Response:
    """Store a batch; a 200 means every accepted event is committed.

    Bad events are answered one by one (index, field, message) and the good
    ones are kept; a retried batch stores nothing twice and says how many
    events were duplicates. When every event is rejected the answer is 422.
    """
    state = request.app.state
    body = await read_body(request, state.settings.max_body_bytes)
    prepared = state.ingestor.prepare_body(body)
    written = await commit(state.ingestor, prepared)
    result = Ingestor.result(prepared, written)
    state.metrics.record_ingest("events", result)
    status = 422 if result.rejected and not (result.stored + result.duplicates) else 200
    return Response(
        IngestResponse(**result.as_dict()).model_dump_json(), status, media_type="application/json"
    )


EventBatch.model_rebuild()


_OTLP_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}


async def _otlp(request: Request, signal: str) -> Response:
    """One OTLP/HTTP export: decoded, checked record by record, committed with
    the assembly of every trace it touches; bad records are counted in
    ``partial_success``, the rest kept."""
    state = request.app.state
    content_type = request.headers.get("content-type", "application/x-protobuf").lower()
    body = await read_body(request, state.settings.max_body_bytes)
    ingestor = state.ingestor
    prepare = ingestor.prepare_traces if signal == "traces" else ingestor.prepare_logs
    prepared, otlp = prepare(body, content_type)
    written = await commit(ingestor, prepared)
    result = Ingestor.result(prepared, written)
    state.metrics.record_ingest("otlp", result)
    message = "; ".join(f"{signal[:-1]} {e.index}: {e.field}: {e.message}" for e in prepared.rejected[:5])
    media = "application/json" if "json" in content_type else "application/x-protobuf"
    encode = encode_response if signal == "traces" else encode_logs_response
    return Response(encode(len(prepared.rejected), message, content_type), 200, media_type=media)


@router.post(
    "/v1/traces",
    summary="Ingest OpenTelemetry traces (OTLP/HTTP, protobuf or JSON)",
    openapi_extra=_OTLP_BODY,
    response_class=Response,
)
async def post_traces(request: Request, key: IngestKey) -> Response:
    """OTLP/HTTP trace export. GenAI semantic conventions, OpenInference and
    OpenLLMetry attributes become tasks and steps, a trace read whole; the answer
    is an ``ExportTraceServiceResponse`` whose ``partial_success`` counts the
    spans that were rejected. A 200 means the spans are committed."""
    return await _otlp(request, "traces")


@router.post(
    "/v1/logs",
    summary="Ingest OpenTelemetry logs (OTLP/HTTP, protobuf or JSON): GenAI events",
    openapi_extra=_OTLP_BODY,
    response_class=Response,
)
async def post_logs(request: Request, key: IngestKey) -> Response:
    """OTLP/HTTP logs export. GenAI events (``gen_ai.user.message``,
    ``gen_ai.choice``, ``gen_ai.client.inference.operation.details``...) carry
    the content of a model call; each is joined to its span by trace and span
    id, whichever arrives first. Log records outside a trace are ignored. The
    answer is an ``ExportLogsServiceResponse``; a 200 means they are committed."""
    return await _otlp(request, "logs")
