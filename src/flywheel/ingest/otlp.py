"""OpenTelemetry OTLP/HTTP traces -> flywheel events.

Stock instrumentation works unchanged: the GenAI semantic conventions
(``gen_ai.*``) and OpenInference attributes (``openinference.span.kind``,
``llm.*``, ``tool.*``, ``retrieval.documents.*``, ``input.value``...) are mapped
onto our records:

* a trace is a task (its id is the trace id as a UUID); the trace's root span
  gives the task's input, output and outcome (status ERROR = failure);
* LLM spans (``chat``/``text_completion``/``generate_content``, or kind LLM)
  become ``llm_call`` steps, tool spans (``execute_tool`` or TOOL) become
  ``tool_call`` steps, RETRIEVER spans ``retrieval`` steps;
* the workload is ``flywheel.workload`` (span or resource attribute), else
  ``gen_ai.agent.name``, else ``service.name``; the session is ``session.id`` or
  ``gen_ai.conversation.id``, else the trace's own id.

Other spans (chains, embeddings, HTTP) carry no step of ours and are counted
as ignored. Ids derive from trace and span ids, so a re-sent export is
recognised as duplicate.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from flywheel.errors import InvalidInput

__all__ = ["OtlpEvents", "decode_otlp", "encode_response", "spans_to_events"]

_LLM_OPERATIONS = {"chat", "text_completion", "generate_content", "completion"}
_STATUS_ERROR = Status.STATUS_CODE_ERROR


@dataclass
class OtlpEvents:
    """Events made from an export, and for each event the span it came from."""

    events: list[dict[str, Any]] = field(default_factory=list)
    span_of_event: list[int] = field(default_factory=list)
    spans: int = 0
    ignored_spans: int = 0


def decode_otlp(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    if "json" in content_type:
        try:
            data = orjson.loads(body)
            _hex_ids_to_base64(data)
            json_format.ParseDict(data, request, ignore_unknown_fields=True)
        except (orjson.JSONDecodeError, json_format.ParseError, ValueError, TypeError) as exc:
            raise InvalidInput(f"the body is not an OTLP/JSON trace export: {exc}") from exc
    else:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise InvalidInput(
                f"the body is not an OTLP protobuf trace export: {exc}",
                hint="send Content-Type application/x-protobuf or application/json",
            ) from exc
    return request


def encode_response(rejected_spans: int, message: str, content_type: str) -> bytes:
    response = ExportTraceServiceResponse()
    if rejected_spans:
        response.partial_success.rejected_spans = rejected_spans
        response.partial_success.error_message = message
    if "json" in content_type:
        return orjson.dumps(json_format.MessageToDict(response))
    return response.SerializeToString()


def _hex_ids_to_base64(data: Any) -> None:
    """OTLP/JSON writes ids as hex; protobuf's JSON mapping expects base64."""
    for resource_spans in data.get("resourceSpans") or data.get("resource_spans") or []:
        for scope_spans in resource_spans.get("scopeSpans") or resource_spans.get("scope_spans") or []:
            for span in scope_spans.get("spans") or []:
                for key in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"):
                    value = span.get(key)
                    if isinstance(value, str) and value:
                        span[key] = base64.b64encode(bytes.fromhex(value)).decode()


def _any_value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        return value.double_value
    if which == "bool_value":
        return value.bool_value
    if which == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None


def _time(nanos: int) -> str:
    return datetime.fromtimestamp(nanos / 1e9, UTC).isoformat()


def _json_or_text(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _indexed(attrs: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """Collect flattened OpenInference lists: ``prefix.0.message.role`` -> [{...}]."""
    items: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        if not key.startswith(prefix):
            continue
        index, _, rest = key[len(prefix) :].partition(".")
        if index.isdigit():
            items.setdefault(int(index), {})[rest] = value
    return [items[i] for i in sorted(items)]


def _messages(attrs: dict[str, Any]) -> list[Any]:
    if "gen_ai.input.messages" in attrs:
        value = _json_or_text(attrs["gen_ai.input.messages"])
        return value if isinstance(value, list) else [{"role": "user", "content": value}]
    flat = _indexed(attrs, "llm.input_messages.")
    if flat:
        return [{"role": m.get("message.role", "user"), "content": m.get("message.content")} for m in flat]
    if "input.value" in attrs:
        value = _json_or_text(attrs["input.value"])
        if isinstance(value, dict) and isinstance(value.get("messages"), list):
            return value["messages"]
        if isinstance(value, list):
            return value
        return [{"role": "user", "content": value}]
    return []


def _response(attrs: dict[str, Any]) -> Any:
    if "gen_ai.output.messages" in attrs:
        return _json_or_text(attrs["gen_ai.output.messages"])
    flat = _indexed(attrs, "llm.output_messages.")
    if flat:
        return [
            {"role": m.get("message.role", "assistant"), "content": m.get("message.content")} for m in flat
        ]
    return _json_or_text(attrs.get("output.value"))


def _span_error(span: Span, attrs: dict[str, Any]) -> str | None:
    if span.status.code == _STATUS_ERROR:
        return span.status.message or attrs.get("error.type") or "error"
    return None


def spans_to_events(request: ExportTraceServiceRequest) -> OtlpEvents:
    out = OtlpEvents()
    span_index = -1
    with_root = {
        span.trace_id
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
        if not span.parent_span_id
    }
    for resource_spans in request.resource_spans:
        resource = {kv.key: _any_value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                span_index += 1
                out.spans += 1
                before = len(out.events)
                _span_events(span, resource, span.trace_id in with_root, out.events)
                if len(out.events) == before:
                    out.ignored_spans += 1
                out.span_of_event.extend([span_index] * (len(out.events) - before))
    return out


def _span_events(
    span: Span, resource: dict[str, Any], root_in_export: bool, events: list[dict[str, Any]]
) -> None:
    attrs = {kv.key: _any_value(kv.value) for kv in span.attributes}
    if len(span.trace_id) != 16 or len(span.span_id) != 8:
        # Let validation reject it with a clear message rather than guessing ids.
        events.append({"type": "span", "id": span.span_id.hex() or None})
        return
    task_id = str(uuid.UUID(bytes=span.trace_id))
    step_id = str(uuid.UUID(bytes=hashlib.blake2b(span.trace_id + span.span_id, digest_size=16).digest()))
    workload = (
        attrs.get("flywheel.workload")
        or resource.get("flywheel.workload")
        or attrs.get("gen_ai.agent.name")
        or resource.get("service.name")
        or "default"
    )
    session = attrs.get("session.id") or attrs.get("gen_ai.conversation.id") or task_id
    started = _time(span.start_time_unix_nano)
    ended = _time(span.end_time_unix_nano) if span.end_time_unix_nano else None
    operation = attrs.get("gen_ai.operation.name")
    kind = str(attrs.get("openinference.span.kind", "")).upper()
    error = _span_error(span, attrs)
    common = {"id": step_id, "task_id": task_id, "started_at": started, "ended_at": ended}

    if not span.parent_span_id:
        task: dict[str, Any] = {
            "id": task_id,
            "workload": str(workload),
            "session_id": str(session),
            "input": _json_or_text(attrs.get("input.value")),
            "started_at": started,
            "metadata": {"otel.span_name": span.name},
        }
        if attrs.get("flywheel.agent_version"):
            task["agent_version"] = str(attrs["flywheel.agent_version"])
        if ended:
            events.append(
                {
                    "type": "task_finished",
                    **task,
                    "ended_at": ended,
                    "output": _json_or_text(attrs.get("output.value")),
                    "success": error is None,
                    "error": error,
                }
            )
        else:
            events.append({"type": "task_started", **task})
    elif not root_in_export:
        # The root comes in another export, or never; make sure the task exists.
        events.append(
            {
                "type": "task_started",
                "id": task_id,
                "workload": str(workload),
                "session_id": str(session),
                "started_at": started,
            }
        )

    if operation in _LLM_OPERATIONS or kind == "LLM":
        events.append(
            {
                "type": "llm_call",
                **common,
                "model": str(
                    attrs.get("gen_ai.request.model")
                    or attrs.get("llm.model_name")
                    or attrs.get("gen_ai.response.model")
                    or span.name
                    or "unknown"
                ),
                "messages": _messages(attrs),
                "response": _response(attrs),
                "input_tokens": attrs.get("gen_ai.usage.input_tokens", attrs.get("llm.token_count.prompt")),
                "output_tokens": attrs.get(
                    "gen_ai.usage.output_tokens", attrs.get("llm.token_count.completion")
                ),
                "error": error,
            }
        )
    elif operation == "execute_tool" or kind == "TOOL":
        events.append(
            {
                "type": "tool_call",
                **common,
                "name": str(attrs.get("gen_ai.tool.name") or attrs.get("tool.name") or span.name),
                "arguments": _json_or_text(attrs.get("gen_ai.tool.call.arguments", attrs.get("input.value"))),
                "output": _json_or_text(attrs.get("gen_ai.tool.call.result", attrs.get("output.value"))),
                "error": error,
            }
        )
    elif kind == "RETRIEVER":
        documents = [
            {
                "id": None if d.get("document.id") is None else str(d["document.id"]),
                "content": str(d.get("document.content", "")),
                "score": d.get("document.score"),
            }
            for d in _indexed(attrs, "retrieval.documents.")
        ]
        events.append(
            {
                "type": "retrieval",
                **common,
                "query": str(attrs.get("input.value", "")),
                "documents": documents,
            }
        )
    elif span.parent_span_id and not root_in_export:
        # A span that is neither a task nor a step of ours: drop its task stub too.
        events.pop()
