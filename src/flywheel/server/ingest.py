"""Routes of the way in: ``POST /v1/events`` and ``POST /v1/traces`` (OTLP/HTTP).

The event loop only reads the body (up to the body limit) and hands it on:
decompression, decoding, validation and redaction run in the thread pool,
the write in the group-commit writer, so that a large or hostile batch never
holds up another request. A gzip body is decompressed as a stream, stopped
as soon as it grows past the body limit.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from flywheel.errors import InvalidInput, PayloadTooLarge, StoreUnavailable, UnsupportedMediaType
from flywheel.ingest import Ingestor, PreparedBatch, Sender
from flywheel.ingest.otlp import OtlpRecords, encode_logs_response, encode_response
from flywheel.server.auth import require
from flywheel.server.schemas import EventBatch, IngestResponse
from flywheel.store import ApiKey, WriteResult

router = APIRouter()

IngestKey = Annotated[ApiKey, Depends(require("ingest"))]


async def read_body(request: Request, limit: int) -> bytes:
    """The body as sent (still compressed), refused past ``limit`` bytes."""
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
    return b"".join(chunks)


def decode_body(body: bytes, encoding: str, limit: int) -> bytes:
    """The body of a ``Content-Encoding`` (none, identity or gzip), decompressed as a
    stream that stops once the output passes ``limit`` bytes (a gzip bomb is
    refused after ``limit`` bytes of work, not after it has filled the memory)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported", hint="send gzip, or no Content-Encoding"
        )
    out = bytearray()
    stream = zlib.decompressobj(wbits=31)
    pending = body
    try:
        while True:
            # At most one byte past the limit: enough to know it is over.
            out += stream.decompress(pending, limit + 1 - len(out))
            if len(out) > limit:
                raise PayloadTooLarge(
                    f"the gzip body decompresses to more than the limit of {limit} bytes",
                    hint="the body limit (FLYWHEEL_MAX_BODY_BYTES) applies after decompression: "
                    "send smaller batches",
                )
            if stream.eof:
                rest = stream.unused_data
                if not rest.strip(b"\0"):
                    return bytes(out)
                if rest[:2] != b"\x1f\x8b":
                    raise InvalidInput("the body is not valid gzip: it has data after the gzip stream")
                stream, pending = zlib.decompressobj(wbits=31), rest  # another gzip member
                continue
            pending = stream.unconsumed_tail
            if not pending:
                raise InvalidInput("the body is not valid gzip: the gzip stream is cut short")
    except zlib.error as exc:
        raise InvalidInput(f"the body is not valid gzip: {exc}") from exc


def _sender(key: ApiKey) -> Sender:
    return Sender(name=key.name, scopes=tuple(key.scopes))


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
    events were duplicates, and an id stored before with other content is that
    event's error (a conflict: the first write stays). Labels are written in the
    name of the key (``key:NAME``); an annotation needs the review scope. When
    every event is rejected the answer is 422. A 5xx means a transient fault
    (the database), never the input.
    """
    state = request.app.state
    limit = state.settings.max_body_bytes
    body = await read_body(request, limit)
    encoding = request.headers.get("content-encoding", "")
    ingestor: Ingestor = state.ingestor
    prepared = await run_in_threadpool(
        lambda: ingestor.prepare_body(decode_body(body, encoding, limit), _sender(key))
    )
    written = await commit(ingestor, prepared)
    if written.duplicates:
        result = await run_in_threadpool(ingestor.checked_result, prepared, written)
    else:
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
    limit = state.settings.max_body_bytes
    body = await read_body(request, limit)
    encoding = request.headers.get("content-encoding", "")
    ingestor = state.ingestor
    prepare = ingestor.prepare_traces if signal == "traces" else ingestor.prepare_logs

    def decode() -> tuple[PreparedBatch, OtlpRecords]:
        return prepare(decode_body(body, encoding, limit), content_type)

    prepared, _ = await run_in_threadpool(decode)
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
