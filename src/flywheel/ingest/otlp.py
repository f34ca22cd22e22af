"""OpenTelemetry OTLP/HTTP traces and logs -> flywheel tasks and steps.

Stock instrumentation works unchanged: the GenAI semantic conventions
(``gen_ai.*`` attributes, and the message content as log events or span
events), OpenInference (``openinference.span.kind``, ``llm.*``, ``tool.*``,
``input.value``...) and OpenLLMetry (``gen_ai.prompt.N.*``, ``llm.request.*``,
``traceloop.*``).

A trace is read whole. Each span and each log record is kept as it came (after
redaction) in ``otel_records``, and the trace's task and steps are assembled
from all the records of the trace every time one of them arrives, in the same
transaction (``assemble_trace``): children before their root, logs before or
after their span, an export re-sent or split differently, all give the same
task. The assembly:

* a trace is a task (its id is the trace id as a UUID) when it holds a span of
  ours (a model call, a tool, a retriever, an agent); the root span gives the
  outcome (status ERROR = failure), its ``input.value``/``output.value`` the
  task's input and output, else the first user message and the last answer;
* model-call spans become ``llm_call`` steps with normalised messages, offered
  tools, the answer as a chat completion, token usage and the model named by
  the request/response attributes (``flywheel.messages``); tool spans become
  ``tool_call`` steps and retriever spans ``retrieval`` steps; steps are
  numbered by start time;
* workload, session and user come from any span of the trace (``flywheel.workload``,
  ``gen_ai.agent.name``, ``service.name``; ``session.id``, ``gen_ai.conversation.id``,
  ``user.id`` and OpenLLMetry's association properties);
* errors are ``Type: message``, the traceback kept apart (``error_detail``).

Ids derive from trace, span and content, so a re-sent export is recognised as
a duplicate.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from flywheel.errors import InvalidInput
from flywheel.messages import (
    assistant_text,
    normalize_completion,
    normalize_messages,
    normalize_tools,
    parse_json,
    unflatten,
)

__all__ = [
    "OtlpRecords",
    "assemble_trace",
    "decode_logs",
    "decode_traces",
    "encode_logs_response",
    "encode_response",
    "log_records",
    "single_span_events",
    "span_records",
    "task_id_of",
]

_LLM_OPERATIONS = {"chat", "text_completion", "generate_content", "completion"}
_STATUS_ERROR = Status.STATUS_CODE_ERROR
_OURS = ("gen_ai.", "llm.", "openinference.", "traceloop.", "flywheel.", "tool.", "retrieval.")
_SESSION_KEYS = (
    "session.id",
    "gen_ai.conversation.id",
    "traceloop.association.properties.session_id",
    "langfuse.session.id",
)
_USER_KEYS = ("user.id", "enduser.id", "traceloop.association.properties.user_id", "langfuse.user.id")
_MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}


@dataclass
class OtlpRecords:
    """The records of an export (spans or log records), and what was skipped."""

    records: list[dict[str, Any]] = field(default_factory=list)
    received: int = 0
    ignored: int = 0
    #: for each record, its index among the export's spans or log records
    index_of_record: list[int] = field(default_factory=list)


# ------------------------------------------------------------------ decoding


def _decode(body: bytes, content_type: str, message: Message, what: str) -> Any:
    if "json" in content_type:
        try:
            data = orjson.loads(body)
            if not isinstance(data, dict):
                raise InvalidInput(f"the body is not an OTLP/JSON {what} export: it must be a JSON object")
            _hex_ids_to_base64(data)
            json_format.ParseDict(data, message, ignore_unknown_fields=True)
        except (orjson.JSONDecodeError, json_format.ParseError, ValueError, TypeError, AttributeError) as exc:
            raise InvalidInput(f"the body is not an OTLP/JSON {what} export: {exc}") from exc
    else:
        try:
            message.ParseFromString(body)
        except DecodeError as exc:
            raise InvalidInput(
                f"the body is not an OTLP protobuf {what} export: {exc}",
                hint="send Content-Type application/x-protobuf or application/json",
            ) from exc
    return message


def decode_traces(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    return _decode(body, content_type, ExportTraceServiceRequest(), "trace")  # type: ignore[no-any-return]


def decode_logs(body: bytes, content_type: str) -> ExportLogsServiceRequest:
    return _decode(body, content_type, ExportLogsServiceRequest(), "logs")  # type: ignore[no-any-return]


def encode_response(rejected_spans: int, message: str, content_type: str) -> bytes:
    response = ExportTraceServiceResponse()
    if rejected_spans:
        response.partial_success.rejected_spans = rejected_spans
        response.partial_success.error_message = message
    if "json" in content_type:
        return orjson.dumps(json_format.MessageToDict(response))
    return response.SerializeToString()  # type: ignore[no-any-return]


def encode_logs_response(rejected: int, message: str, content_type: str) -> bytes:
    response = ExportLogsServiceResponse()
    if rejected:
        response.partial_success.rejected_log_records = rejected
        response.partial_success.error_message = message
    if "json" in content_type:
        return orjson.dumps(json_format.MessageToDict(response))
    return response.SerializeToString()  # type: ignore[no-any-return]


_ID_KEYS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def _hex_ids_to_base64(data: Any) -> None:
    """OTLP/JSON writes ids as hex; protobuf's JSON mapping expects base64."""
    for outer_key, inner_key, item_key in (
        ("resourceSpans", "scopeSpans", "spans"),
        ("resource_spans", "scope_spans", "spans"),
        ("resourceLogs", "scopeLogs", "logRecords"),
        ("resource_logs", "scope_logs", "log_records"),
    ):
        for resource in _list(data.get(outer_key)):
            for scope in _list(resource.get(inner_key) if isinstance(resource, dict) else None):
                for item in _list(scope.get(item_key) if isinstance(scope, dict) else None):
                    if not isinstance(item, dict):
                        continue
                    for holder in [item, *[x for x in _list(item.get("links")) if isinstance(x, dict)]]:
                        for key in _ID_KEYS:
                            value = holder.get(key)
                            if isinstance(value, str) and value:
                                # already base64, or garbage that validation names
                                with contextlib.suppress(ValueError):
                                    holder[key] = base64.b64encode(bytes.fromhex(value)).decode()


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


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


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in pairs}


def task_id_of(trace_id: bytes) -> str:
    return str(uuid.UUID(bytes=trace_id))


def _uuid(*parts: bytes) -> str:
    return str(uuid.UUID(bytes=hashlib.blake2b(b"".join(parts), digest_size=16).digest()))


def _is_ours(attrs: dict[str, Any]) -> bool:
    return any(key.startswith(_OURS) or key in _SESSION_KEYS or key in _USER_KEYS for key in attrs)


def span_records(request: ExportTraceServiceRequest) -> OtlpRecords:
    """One record per span that can matter to a task: roots, and spans carrying
    GenAI / OpenInference / OpenLLMetry / session attributes. Others are ignored."""
    out = OtlpRecords()
    index = -1
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            for span in scope_spans.spans:
                index += 1
                out.received += 1
                attrs = _attributes(span.attributes)
                if len(span.trace_id) != 16 or len(span.span_id) != 8:
                    # Let validation reject it with a clear message rather than guessing ids.
                    out.records.append({"id": None, "problem": "trace_id must be 16 bytes and span_id 8"})
                    out.index_of_record.append(index)
                    continue
                if span.parent_span_id and not _is_ours(attrs):
                    out.ignored += 1
                    continue
                data = {
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex() or None,
                    "name": span.name,
                    "start": span.start_time_unix_nano,
                    "end": span.end_time_unix_nano or None,
                    "status": int(span.status.code),
                    "status_message": span.status.message or None,
                    "attributes": attrs,
                    "events": [
                        {"name": e.name, "time": e.time_unix_nano, "attributes": _attributes(e.attributes)}
                        for e in span.events
                    ],
                    "resource": resource,
                    "scope": scope,
                }
                out.records.append(
                    {
                        "id": _uuid(b"span", span.trace_id, span.span_id),
                        "task_id": task_id_of(span.trace_id),
                        "kind": "span",
                        "span_id": data["span_id"],
                        "data": data,
                    }
                )
                out.index_of_record.append(index)
    return out


def _is_genai_event(name: str, attrs: dict[str, Any], body: Any) -> bool:
    """A GenAI event (by its name, or content attributes in its attributes or body)."""
    if name.startswith("gen_ai."):
        return True
    keys = set(attrs) | (set(body) if isinstance(body, dict) else set())
    return any(k.startswith(("gen_ai.", "llm.")) for k in keys)


def log_records(request: ExportLogsServiceRequest) -> OtlpRecords:
    """One record per GenAI event that belongs to a span (they carry the message
    content); log records outside a trace, and an application's other logs, are
    ignored."""
    out = OtlpRecords()
    index = -1
    for resource_logs in request.resource_logs:
        resource = _attributes(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            scope = scope_logs.scope.name
            for record in scope_logs.log_records:
                index += 1
                out.received += 1
                if not record.trace_id or not record.span_id:
                    out.ignored += 1
                    continue
                if len(record.trace_id) != 16 or len(record.span_id) != 8:
                    out.records.append({"id": None, "problem": "trace_id must be 16 bytes and span_id 8"})
                    out.index_of_record.append(index)
                    continue
                attrs = _attributes(record.attributes)
                name = getattr(record, "event_name", "") or attrs.get("event.name") or ""
                body = _any_value(record.body) if record.HasField("body") else None
                if not _is_genai_event(str(name), attrs, body):
                    out.ignored += 1  # an application's own logs: nothing of a task
                    continue
                data = {
                    "span_id": record.span_id.hex(),
                    "time": record.time_unix_nano or record.observed_time_unix_nano,
                    "index": index,  # the order of the messages when times tie
                    "event_name": str(name),
                    "attributes": attrs,
                    "body": body,
                    "resource": resource,
                    "scope": scope,
                }
                # The id leaves the record's place in its export out: a retry batched
                # differently is still recognised.
                content = orjson.dumps(
                    {k: v for k, v in data.items() if k != "index"},
                    option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
                    default=str,
                )
                out.records.append(
                    {
                        "id": _uuid(b"log", record.trace_id, record.span_id, content),
                        "task_id": task_id_of(record.trace_id),
                        "kind": "log",
                        "span_id": data["span_id"],
                        "data": data,
                    }
                )
                out.index_of_record.append(index)
    return out


# ------------------------------------------------------------------ assembly


def _time(nanos: int | None) -> str | None:
    """An OTLP time as ISO 8601; None (refused by validation, with the field named)
    when it is missing or beyond what a datetime holds."""
    if not nanos:
        return None
    try:
        return datetime.fromtimestamp(nanos / 1e9, UTC).isoformat()
    except (OverflowError, ValueError, OSError):
        return None


def _first(attrs: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        value = attrs.get(key)
        if value is not None and value != "":
            return value
    return None


def _tokens(attrs: dict[str, Any], *keys: str) -> int | None:
    value = _first(attrs, *keys)
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and 0 <= value < 2**63 else None


def _entity(attrs: dict[str, Any], *keys: str) -> Any:
    """An input or output attribute's value: ``traceloop.entity.*`` hold JSON always
    (a JSON string too), the others JSON when they look like it."""
    for key in keys:
        value = attrs.get(key)
        if value is None or value == "":
            continue
        if key.startswith("traceloop.") and isinstance(value, str):
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError:
                return value
        return parse_json(value)
    return None


def _prefixed(attrs: dict[str, Any], prefix: str) -> Any:
    """``prefix.0.x`` ... unflattened; None when no key has the prefix."""
    flat = {k[len(prefix) :]: v for k, v in attrs.items() if k.startswith(prefix)}
    return unflatten(flat) if flat else None


def _kind(attrs: dict[str, Any]) -> str | None:
    operation = attrs.get("gen_ai.operation.name")
    kind = str(attrs.get("openinference.span.kind", "")).upper()
    traceloop = str(attrs.get("traceloop.span.kind", "")).lower()
    request_type = attrs.get("llm.request.type")
    if operation in _LLM_OPERATIONS or kind == "LLM" or request_type in ("chat", "completion"):
        return "llm_call"
    if operation == "execute_tool" or kind == "TOOL" or traceloop == "tool":
        return "tool_call"
    if kind == "RETRIEVER":
        return "retrieval"
    if operation in ("invoke_agent", "create_agent") or kind == "AGENT" or traceloop in ("agent", "workflow"):
        return "agent"
    return None


def _error(span: dict[str, Any]) -> tuple[str | None, str | None]:
    """A short ``Type: message`` and the whole traceback, when the span failed."""
    if span["status"] != _STATUS_ERROR:
        return None, None
    attrs = span["attributes"]
    exceptions = [e["attributes"] for e in span["events"] if e["name"] == "exception"]
    detail = None
    if exceptions:
        last = exceptions[-1]
        kind = str(last.get("exception.type") or attrs.get("error.type") or "Error").rsplit(".", 1)[-1]
        message = str(last.get("exception.message") or "").strip()
        detail = last.get("exception.stacktrace") or None
    else:
        text = str(span["status_message"] or "").strip()
        lines = [line for line in text.splitlines() if line.strip()]
        if len(lines) > 1:  # a traceback: its last line says what was raised
            detail, text = text, lines[-1].strip()
        kind_and_message = text.split(": ", 1)
        if len(kind_and_message) == 2 and " " not in kind_and_message[0]:
            kind, message = kind_and_message[0].rsplit(".", 1)[-1], kind_and_message[1]
        else:
            kind = str(attrs.get("error.type") or "").rsplit(".", 1)[-1]
            message = text
        if not kind and not message:
            return "error", detail
    first_line = message.splitlines()[0] if message else ""
    short = f"{kind}: {first_line}" if kind and first_line else (kind or first_line)
    return short[:1000], detail


def _events_of(span: dict[str, Any], logs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], Any]]:
    """The span's GenAI events (log records, then span events), oldest first:
    ``(name, attributes, body)``."""
    found = [
        (log["time"] or 0, log.get("index", 0), log["event_name"], log["attributes"], log["body"])
        for log in logs
        if log["span_id"] == span["span_id"]
    ]
    found += [
        (event["time"] or 0, i, event["name"], event["attributes"], None)
        for i, event in enumerate(span["events"])
    ]
    found.sort(key=lambda item: (item[0], item[1]))
    return [(name, attrs, body) for _, _, name, attrs, body in found]


def _llm_payload(span: dict[str, Any], logs: list[dict[str, Any]]) -> dict[str, Any]:
    attrs = span["attributes"]
    events = _events_of(span, logs)
    details: dict[str, Any] = {}
    for _, event_attrs, body in events:
        for source in (event_attrs, body if isinstance(body, dict) else {}):
            for key in (
                "gen_ai.input.messages",
                "gen_ai.output.messages",
                "gen_ai.system_instructions",
                "gen_ai.tool.definitions",
                "gen_ai.prompt",
                "gen_ai.completion",
            ):
                if key in source and key not in details:
                    details[key] = source[key]

    def attribute(key: str) -> Any:
        return attrs[key] if key in attrs else details.get(key)

    request = parse_json(attrs.get("input.value"))
    request = request if isinstance(request, dict) else {}
    invocation = parse_json(attrs.get("llm.invocation_parameters"))
    invocation = invocation if isinstance(invocation, dict) else {}

    # Messages: GenAI attributes, OpenInference, OpenLLMetry, GenAI events, the raw request.
    messages: list[dict[str, Any]] = []
    if attribute("gen_ai.input.messages") is not None:
        messages = normalize_messages(
            attribute("gen_ai.input.messages"), system_instructions=attribute("gen_ai.system_instructions")
        )
    elif (flat := _prefixed(attrs, "llm.input_messages.")) is not None:
        messages = normalize_messages(flat)
    elif isinstance(prompt := _prefixed(attrs, "gen_ai.prompt."), list):
        messages = normalize_messages(prompt)
    elif any(name in _MESSAGE_EVENTS for name, _, _ in events):
        for name, event_attrs, body in events:
            if name in _MESSAGE_EVENTS:
                content = body if body is not None else event_attrs
                if not isinstance(content, dict):
                    content = {"content": content}
                if "role" not in content:
                    content = {**content, "role": _MESSAGE_EVENTS[name]}
                messages.extend(normalize_messages([content]))
    elif attribute("gen_ai.prompt") is not None:  # the older span event
        messages = normalize_messages(attribute("gen_ai.prompt"))
    elif isinstance(request.get("messages"), list):
        messages = normalize_messages(request["messages"])
    elif request.get("prompt") is not None:
        messages = normalize_messages(request["prompt"])

    tools = (
        normalize_tools(attribute("gen_ai.tool.definitions"))
        or normalize_tools(_prefixed(attrs, "llm.tools."))
        or normalize_tools(_prefixed(attrs, "llm.request.functions."))
        or normalize_tools(request.get("tools") or request.get("functions"))
        or normalize_tools(invocation.get("tools") or invocation.get("functions"))
    )

    input_tokens = _tokens(
        attrs,
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.prompt_tokens",
        "llm.token_count.prompt",
        "llm.usage.prompt_tokens",
    )
    output_tokens = _tokens(
        attrs,
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.token_count.completion",
        "llm.usage.completion_tokens",
    )
    usage = None
    if input_tokens is not None or output_tokens is not None:
        usage = {"prompt_tokens": input_tokens, "completion_tokens": output_tokens}
        if input_tokens is not None and output_tokens is not None:
            usage["total_tokens"] = input_tokens + output_tokens
    response_model = _first(attrs, "gen_ai.response.model")
    request_model = (
        _first(attrs, "gen_ai.request.model", "llm.model_name", "llm.request.model")
        or invocation.get("model")
        or request.get("model")
    )

    # The answer: GenAI attributes, OpenInference, OpenLLMetry, GenAI events, output.value.
    completion = None
    if attribute("gen_ai.output.messages") is not None:
        completion = normalize_completion(attribute("gen_ai.output.messages"))
    elif (flat := _prefixed(attrs, "llm.output_messages.")) is not None:
        completion = normalize_completion(flat)
    elif isinstance(answer := _prefixed(attrs, "gen_ai.completion."), list):
        completion = normalize_completion(answer)
    elif choices := [(a, b) for name, a, b in events if name == "gen_ai.choice"]:
        completion = normalize_completion(
            [
                body
                if isinstance(body, dict)
                else {"message": {"role": "assistant", "content": body}}
                if body is not None
                else attrs_
                for attrs_, body in choices
            ]
        )
    elif attribute("gen_ai.completion") is not None:
        completion = normalize_completion(attribute("gen_ai.completion"))
    elif attrs.get("output.value") is not None:
        completion = normalize_completion(attrs["output.value"])
    if completion is not None:
        reasons = attrs.get("gen_ai.response.finish_reasons") or attrs.get("llm.finish_reason")
        reasons = reasons if isinstance(reasons, list) else [reasons]
        for choice, reason in zip(completion["choices"], reasons, strict=False):
            if choice["finish_reason"] is None and isinstance(reason, str):
                choice["finish_reason"] = {"tool_call": "tool_calls"}.get(reason, reason)
        if response_model and "model" not in completion:
            completion["model"] = str(response_model)
        if usage and "usage" not in completion:
            completion["usage"] = {k: v for k, v in usage.items() if v is not None}
        if not completion.get("id") and attrs.get("gen_ai.response.id"):
            completion["id"] = str(attrs["gen_ai.response.id"])
    return {
        "model": str(request_model or response_model or "unknown")[:200],
        "messages": messages,
        "tools": tools,
        "response": completion,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
    }


def _tool_payload(span: dict[str, Any]) -> dict[str, Any]:
    attrs = span["attributes"]
    name = _first(attrs, "gen_ai.tool.name", "tool.name", "traceloop.entity.name") or span["name"]
    name = str(name)
    if name.startswith("execute_tool "):
        name = name[len("execute_tool ") :]
    # (OpenInference's tool.parameters is the tool's schema, not the arguments)
    raw_arguments = _entity(attrs, "gen_ai.tool.call.arguments", "input.value", "traceloop.entity.input")
    arguments, call_id = _unwrapped_input(raw_arguments)
    output = _entity(attrs, "gen_ai.tool.call.result", "output.value", "traceloop.entity.output")
    output, output_call_id = _tool_output(output)
    call_id = _first(attrs, "gen_ai.tool.call.id") or call_id or output_call_id
    return {"name": name[:200], "arguments": arguments, "output": output, "_call_id": call_id}


def _unwrapped_input(value: Any) -> tuple[Any, str | None]:
    """A tool's or an agent's input without its framework's wrapper: OpenLLMetry's
    ``{"args": [...], "kwargs": {...}}`` and LangChain's ``{"inputs": ..., "kwargs":
    {"tool_call_id"}}``; and the tool call id a wrapper holds."""
    if not isinstance(value, dict):
        return value, None
    kwargs: dict[str, Any] = value["kwargs"] if isinstance(value.get("kwargs"), dict) else {}
    found = kwargs.get("tool_call_id")
    call_id = str(found) if found else None
    wrapper = {"inputs", "input_str", "kwargs", "tags", "metadata"}
    if (
        "inputs" in value
        and set(value) <= wrapper
        and ("input_str" in value or {"tags", "kwargs"} <= set(value))
    ):
        return value["inputs"], call_id  # a LangChain run's inputs, as OpenLLMetry wraps them
    if set(value) == {"args", "kwargs"} and isinstance(value["args"], list):
        args, rest = value["args"], {k: v for k, v in kwargs.items() if k != "tool_call_id"}
        if rest and not args:
            return rest, call_id
        if len(args) == 1 and not rest:
            return args[0], call_id
        return value, call_id
    return value, None


def _tool_output(value: Any) -> tuple[Any, str | None]:
    """A tool's result as its content: a serialised LangChain ToolMessage gives its
    ``content`` (and the call id), OpenLLMetry's ``{"output": ...}`` its output."""
    if isinstance(value, dict):
        message = None
        if value.get("lc") and isinstance(value.get("kwargs"), dict):
            message = value["kwargs"]
        elif value.get("type") == "tool" and isinstance(value.get("data"), dict):
            message = value["data"]
        elif value.get("type") == "tool" and "content" in value:
            message = value
        if message is not None:
            call_id = message.get("tool_call_id")
            return parse_json(message.get("content")), str(call_id) if call_id else None
        for key in ("output", "outputs"):  # OpenLLMetry's wrapper of a LangChain run's result
            inner = parse_json(value.get(key))
            langchain = isinstance(inner, dict) and bool(inner.get("lc") or inner.get("type") == "tool")
            if key in value and set(value) <= {key, "kwargs"} and ("kwargs" in value or langchain):
                return _tool_output(inner)
    return value, None


def _retrieval_payload(span: dict[str, Any]) -> dict[str, Any]:
    attrs = span["attributes"]
    documents = _prefixed(attrs, "retrieval.documents.")
    out = []
    for item in documents if isinstance(documents, list) else []:
        doc = item.get("document") if isinstance(item, dict) else None
        if not isinstance(doc, dict):
            continue
        score = doc.get("score")
        out.append(
            {
                "id": None if doc.get("id") is None else str(doc["id"]),
                "content": str(doc.get("content", "")),
                "score": score if isinstance(score, int | float) and not isinstance(score, bool) else None,
            }
        )
    query = _first(attrs, "input.value", "gen_ai.prompt")
    return {"query": "" if query is None else str(query), "documents": out}


def _has_llm_descendant(span: dict[str, Any], children: dict[str, list[dict[str, Any]]]) -> bool:
    stack = list(children.get(span["span_id"], []))
    while stack:
        child = stack.pop()
        if child["kind"] == "llm_call":
            return True
        stack.extend(children.get(child["span_id"], []))
    return False


def _first_user_text(messages: list[dict[str, Any]]) -> Any:
    for message in messages:
        if message.get("role") == "user":
            return message.get("content")
    return None


def assemble_trace(task_id: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The task and steps (as events) that a trace's records make; [] when the
    trace holds nothing of ours yet. A pure function of the records, whatever
    their order."""
    spans = sorted(
        (dict(r["data"]) for r in records if r["kind"] == "span"),
        key=lambda s: (s["start"] or 0, s["span_id"]),
    )
    logs = [r["data"] for r in records if r["kind"] == "log"]
    if not spans:
        return []
    for span in spans:
        span["kind"] = _kind(span["attributes"])
    children: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        if span["parent_span_id"]:
            children.setdefault(span["parent_span_id"], []).append(span)
    if not any(s["kind"] for s in spans) and not any(
        k.startswith(("gen_ai.", "llm.", "flywheel.", "input.", "output."))
        for s in spans
        for k in s["attributes"]
    ):
        return []  # a trace of HTTP or database spans only: not a task of ours
    root = next((s for s in spans if not s["parent_span_id"]), None)
    ordered = [root, *[s for s in spans if s is not root]] if root else spans

    def anywhere(*keys: str, resource: bool = False) -> Any:
        for span in ordered:
            value = _first(span["attributes"], *keys)
            if value is None and resource:
                value = _first(span["resource"], *keys)
            if value is not None:
                return value
        return None

    workload = (
        anywhere("flywheel.workload", resource=True)
        or anywhere("gen_ai.agent.name")
        or anywhere("service.name", resource=True)
        or "default"
    )
    session = anywhere(*_SESSION_KEYS) or task_id
    user = anywhere(*_USER_KEYS)
    agent_version = anywhere("flywheel.agent_version", resource=True)

    events: list[dict[str, Any]] = []
    steps: list[dict[str, Any]] = []
    llm_payloads: list[dict[str, Any]] = []
    for span in spans:
        kind = span["kind"]
        if kind not in ("llm_call", "tool_call", "retrieval"):
            continue
        if kind == "llm_call":
            if _has_llm_descendant(span, children):
                continue  # a framework's wrapper around the model call: keep the call itself
            payload = _llm_payload(span, logs)
            llm_payloads.append(payload)
        elif kind == "tool_call":
            payload = _tool_payload(span)
        else:
            payload = _retrieval_payload(span)
        error, detail = _error(span)
        if kind != "retrieval":
            payload["error"] = error
        step = {
            "type": kind,
            "id": _uuid(bytes.fromhex(task_id.replace("-", "")), bytes.fromhex(span["span_id"])),
            "task_id": task_id,
            "seq": len(steps),
            "started_at": _time(span["start"]),
            "ended_at": _time(span["end"]),
            **payload,
        }
        if detail:
            step["error_detail"] = str(detail)
        steps.append(step)

    # A tool span that does not carry the arguments the model gave (LangChain's
    # single-argument input), or its call id, gets them from the model's call.
    calls: dict[str, dict[str, Any]] = {}
    for payload in llm_payloads:
        for choice in (payload["response"] or {}).get("choices") or []:
            for call in choice["message"].get("tool_calls") or []:
                if call.get("id"):
                    calls[call["id"]] = call["function"]
    for step in steps:
        call_id = step.pop("_call_id", None)
        if step["type"] != "tool_call":
            continue
        function = calls.get(str(call_id)) if call_id else None
        if function is not None and not isinstance(step["arguments"], dict):
            parsed = parse_json(function["arguments"])
            if isinstance(parsed, dict):
                step["arguments"] = parsed

    metadata: dict[str, Any] = {}
    if user is not None:
        metadata["user_id"] = str(user)
    if root is not None:
        metadata["otel.span_name"] = root["name"]
    scopes = sorted({s["scope"] for s in spans if s["scope"]})
    if scopes:
        metadata["otel.scopes"] = scopes

    first_messages = llm_payloads[0]["messages"] if llm_payloads else []
    last_response = llm_payloads[-1]["response"] if llm_payloads else None
    root_is_call = root is not None and root["kind"] == "llm_call"
    task_input = task_output = None
    if root is not None and not root_is_call:
        task_input = _unwrapped_input(
            _entity(root["attributes"], "input.value", "traceloop.entity.input", "gen_ai.task.input")
        )[0]
        task_output = _tool_output(
            _entity(root["attributes"], "output.value", "traceloop.entity.output", "gen_ai.task.output")
        )[0]
    if task_input is None:
        task_input = _first_user_text(first_messages)
    if task_output is None:
        task_output = assistant_text(last_response)
    task: dict[str, Any] = {
        "id": task_id,
        "workload": str(workload)[:200],
        "session_id": str(session)[:200],
        "input": task_input,
        "started_at": _time(root["start"] if root else spans[0]["start"]),
        "metadata": metadata,
    }
    if agent_version is not None:
        task["agent_version"] = str(agent_version)
    if root is not None and root["end"]:
        error, detail = _error(root)
        if detail:
            metadata["error_detail"] = str(detail)
        events.append(
            {
                "type": "task_finished",
                **task,
                "ended_at": _time(root["end"]),
                "output": task_output,
                "success": error is None,
                "error": error,
            }
        )
    else:
        events.append({"type": "task_started", **task})
    return events + steps


def single_span_events(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The events one span would make alone: what ingestion validates before it
    keeps the span (a span that cannot make a valid step is refused)."""
    return assemble_trace(record["task_id"], [record])
