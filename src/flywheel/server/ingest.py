"""Routes of the way in: ``POST /v1/events`` and ``POST /v1/traces`` (OTLP/HTTP)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from flywheel.errors import InvalidInput, PayloadTooLarge, StoreUnavailable
from flywheel.ingest import Ingestor, PreparedBatch
from flywheel.ingest.otlp import decode_otlp, encode_response, spans_to_events
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


@router.post(
    "/v1/traces",
    summary="Ingest OpenTelemetry traces (OTLP/HTTP, protobuf or JSON)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": {"type": "object"}},
            },
        }
    },
    response_class=Response,
)
async def post_traces(request: Request, key: IngestKey) -> Response:
    """OTLP/HTTP trace export. GenAI semantic conventions and OpenInference
    attributes become tasks and steps; the answer is an ``ExportTraceServiceResponse``
    whose ``partial_success`` counts the spans that were rejected."""
    state = request.app.state
    content_type = request.headers.get("content-type", "application/x-protobuf").lower()
    body = await read_body(request, state.settings.max_body_bytes)
    export = spans_to_events(decode_otlp(body, content_type))
    prepared = state.ingestor.prepare(export.events)
    written = await commit(state.ingestor, prepared)
    result = Ingestor.result(prepared, written)
    state.metrics.record_ingest("otlp", result)
    bad_spans = {export.span_of_event[e.index] for e in prepared.rejected}
    message = "; ".join(f"{e.field}: {e.message}" for e in prepared.rejected[:5])
    media = "application/json" if "json" in content_type else "application/x-protobuf"
    return Response(encode_response(len(bad_spans), message, content_type), 200, media_type=media)
