"""OTLP/HTTP traces: protobuf and JSON, GenAI conventions and OpenInference attributes."""

import base64

import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from tests.server.conftest import auth

TRACE = bytes(range(16))
ROOT = b"\x01" * 8
T0 = 1_790_000_000_000_000_000


def kv(key, value):
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def agent_trace(tool_fails=False):
    spans = [
        Span(
            trace_id=TRACE,
            span_id=ROOT,
            name="invoke_agent support",
            start_time_unix_nano=T0,
            end_time_unix_nano=T0 + 9_000_000,
            attributes=[
                kv("gen_ai.operation.name", "invoke_agent"),
                kv("openinference.span.kind", "AGENT"),
                kv("input.value", "Where is order 7?"),
                kv("output.value", "It ships today."),
                kv("session.id", "sess-1"),
            ],
        ),
        Span(
            trace_id=TRACE,
            span_id=b"\x02" * 8,
            parent_span_id=ROOT,
            name="chat gpt-4o",
            start_time_unix_nano=T0 + 1,
            end_time_unix_nano=T0 + 2_000_000,
            attributes=[
                kv("gen_ai.operation.name", "chat"),
                kv("gen_ai.request.model", "gpt-4o"),
                kv("gen_ai.usage.input_tokens", 120),
                kv("gen_ai.usage.output_tokens", 40),
                kv("gen_ai.input.messages", '[{"role": "user", "content": "Where is order 7?"}]'),
            ],
        ),
        Span(
            trace_id=TRACE,
            span_id=b"\x03" * 8,
            parent_span_id=ROOT,
            name="execute_tool lookup",
            start_time_unix_nano=T0 + 3_000_000,
            end_time_unix_nano=T0 + 4_000_000,
            status=Status(code=Status.STATUS_CODE_ERROR, message="timeout") if tool_fails else Status(),
            attributes=[
                kv("gen_ai.operation.name", "execute_tool"),
                kv("gen_ai.tool.name", "lookup_order"),
                kv("input.value", '{"order_id": 7}'),
                kv("output.value", '{"status": "shipped"}'),
            ],
        ),
        Span(
            trace_id=TRACE,
            span_id=b"\x04" * 8,
            parent_span_id=ROOT,
            name="retrieve",
            start_time_unix_nano=T0 + 5_000_000,
            end_time_unix_nano=T0 + 6_000_000,
            attributes=[
                kv("openinference.span.kind", "RETRIEVER"),
                kv("input.value", "shipping times"),
                kv("retrieval.documents.0.document.content", "Orders ship in 2 days"),
                kv("retrieval.documents.0.document.score", 0.91),
                kv("retrieval.documents.1.document.content", "Refunds take 5 days"),
                kv("retrieval.documents.1.document.score", 0.42),
            ],
        ),
        Span(
            trace_id=TRACE,
            span_id=b"\x05" * 8,
            parent_span_id=ROOT,
            name="GET /internal",
            start_time_unix_nano=T0 + 7,
            end_time_unix_nano=T0 + 8,
        ),
    ]
    resource = Resource(attributes=[kv("service.name", "support-bot")])
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=spans)])]
    )


def task_id():
    import uuid

    return str(uuid.UUID(bytes=TRACE))


def test_protobuf_export_becomes_a_task_with_steps(client, store, keys):
    response = client.post(
        "/v1/traces",
        content=agent_trace(tool_fails=True).SerializeToString(),
        headers={**auth(keys["ingest"]), "Content-Type": "application/x-protobuf"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    parsed = ExportTraceServiceResponse.FromString(response.content)
    assert parsed.partial_success.rejected_spans == 0
    task = store.get_task(task_id())
    assert (task.workload, task.session_id) == ("support-bot", "sess-1")
    assert (task.input, task.output, task.success) == ("Where is order 7?", "It ships today.", True)
    assert task.duration_ms == 9.0
    kinds = [(s.kind, s.name) for s in task.steps]
    assert kinds == [("llm_call", "gpt-4o"), ("tool_call", "lookup_order"), ("retrieval", None)]
    llm, tool, retrieval = task.steps
    assert llm.data["input_tokens"] == 120 and llm.data["messages"][0]["content"] == "Where is order 7?"
    assert tool.error == "timeout" and tool.data["arguments"] == {"order_id": 7}
    assert [d["score"] for d in retrieval.data["documents"]] == [0.91, 0.42]


def test_reexport_is_idempotent(client, store, keys):
    body = agent_trace().SerializeToString()
    headers = {**auth(keys["ingest"]), "Content-Type": "application/x-protobuf"}
    client.post("/v1/traces", content=body, headers=headers)
    client.post("/v1/traces", content=body, headers=headers)
    assert store.stats()["tasks"] == 1
    assert len(store.get_task(task_id()).steps) == 3


def test_children_before_their_root_still_form_one_task(client, store, keys):
    export = agent_trace()
    spans = export.resource_spans[0].scope_spans[0].spans
    root, children = spans[0], list(spans[1:])
    headers = {**auth(keys["ingest"]), "Content-Type": "application/x-protobuf"}
    first = ExportTraceServiceRequest()
    first.CopyFrom(export)
    del first.resource_spans[0].scope_spans[0].spans[:]
    first.resource_spans[0].scope_spans[0].spans.extend(children)
    client.post("/v1/traces", content=first.SerializeToString(), headers=headers)
    assert store.get_task(task_id()).success is None
    second = ExportTraceServiceRequest()
    second.CopyFrom(export)
    del second.resource_spans[0].scope_spans[0].spans[:]
    second.resource_spans[0].scope_spans[0].spans.append(root)
    client.post("/v1/traces", content=second.SerializeToString(), headers=headers)
    task = store.get_task(task_id())
    assert (task.session_id, task.success, len(task.steps)) == ("sess-1", True, 3)


def test_json_export_with_hex_ids(client, store, keys):
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "flywheel.workload", "value": {"stringValue": "triage"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": TRACE.hex(),
                                "spanId": ROOT.hex(),
                                "name": "llm",
                                "startTimeUnixNano": str(T0),
                                "endTimeUnixNano": str(T0 + 1_000_000),
                                "status": {"code": 2, "message": "rate limited"},
                                "attributes": [
                                    {"key": "openinference.span.kind", "value": {"stringValue": "LLM"}},
                                    {"key": "llm.model_name", "value": {"stringValue": "claude"}},
                                    {
                                        "key": "llm.input_messages.0.message.role",
                                        "value": {"stringValue": "user"},
                                    },
                                    {
                                        "key": "llm.input_messages.0.message.content",
                                        "value": {"stringValue": "hi"},
                                    },
                                    {"key": "llm.token_count.prompt", "value": {"intValue": "7"}},
                                ],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    response = client.post(
        "/v1/traces",
        content=orjson.dumps(body),
        headers={**auth(keys["ingest"]), "Content-Type": "application/json"},
    )
    assert response.status_code == 200 and response.json() == {}
    task = store.get_task(task_id())
    assert task.workload == "triage" and task.success is False and task.error == "rate limited"
    assert task.steps[0].data["messages"] == [{"role": "user", "content": "hi"}]
    assert task.steps[0].data["input_tokens"] == 7


def test_bad_spans_are_counted_in_partial_success(client, keys):
    export = agent_trace()
    bad = export.resource_spans[0].scope_spans[0].spans.add()
    bad.trace_id = b"short"
    bad.span_id = b"\x09" * 8
    response = client.post(
        "/v1/traces",
        content=export.SerializeToString(),
        headers={**auth(keys["ingest"]), "Content-Type": "application/x-protobuf"},
    )
    parsed = ExportTraceServiceResponse.FromString(response.content)
    assert parsed.partial_success.rejected_spans == 1


def test_garbage_is_400(client, keys):
    headers = {**auth(keys["ingest"]), "Content-Type": "application/x-protobuf"}
    assert client.post("/v1/traces", content=b"\xff\x00garbage", headers=headers).status_code == 400
    headers["Content-Type"] = "application/json"
    assert client.post("/v1/traces", content=b"[1,", headers=headers).status_code == 400
    assert base64  # ids in JSON are hex, checked above


def test_stock_opentelemetry_sdk_exporter_works_unchanged(settings, tmp_path, store, keys):
    """The official OTel SDK and OTLP/HTTP exporter, pointed at a real `flywheel serve`."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource as SdkResource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from tests.live import LiveServer

    server = LiveServer(settings.database_url, tmp_path / "server").start()
    try:
        provider = TracerProvider(resource=SdkResource.create({"service.name": "otel-agent"}))
        exporter = OTLPSpanExporter(
            endpoint=f"{server.url}/v1/traces", headers={"Authorization": f"Bearer {keys['ingest']}"}
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span(
            "invoke_agent", attributes={"gen_ai.operation.name": "invoke_agent", "input.value": "hello"}
        ) as root:
            with tracer.start_as_current_span(
                "chat", attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "m1"}
            ):
                pass
            with tracer.start_as_current_span(
                "execute_tool",
                attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"},
            ):
                pass
            trace_id = root.get_span_context().trace_id
        provider.shutdown()
    finally:
        server.stop()
    import uuid

    task = store.get_task(str(uuid.UUID(int=trace_id)))
    assert task.workload == "otel-agent" and task.input == "hello" and task.success is True
    assert sorted((s.kind, s.name) for s in task.steps) == [("llm_call", "m1"), ("tool_call", "search")]
