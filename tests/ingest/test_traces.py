"""A trace is read whole: whatever order its spans and GenAI log events arrive in,
and however they are split into exports, the stored task is the same."""

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from flywheel.ingest import Ingestor
from flywheel.store import Store

TRACE = bytes(range(100, 116))
TASK = str(uuid.UUID(bytes=TRACE))
T0 = 1_790_000_000_000_000_000
ROOT, CALL1, TOOL, CALL2 = b"\x01" * 8, b"\x02" * 8, b"\x03" * 8, b"\x04" * 8


def value(v):
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, dict):
        return AnyValue(
            kvlist_value=KeyValueList(values=[KeyValue(key=k, value=value(x)) for k, x in v.items()])
        )
    if isinstance(v, list):
        from opentelemetry.proto.common.v1.common_pb2 import ArrayValue

        return AnyValue(array_value=ArrayValue(values=[value(x) for x in v]))
    return AnyValue(string_value=v)


def kvs(attrs):
    return [KeyValue(key=k, value=value(v)) for k, v in attrs.items()]


def spans():
    """An agent (root) that calls the model, runs the tool the model asked for, and
    calls the model again; content in GenAI log events (openai-v2's default mode)."""

    def llm(span_id, start, end, out_tokens):
        return Span(
            trace_id=TRACE,
            span_id=span_id,
            parent_span_id=ROOT,
            name="chat gpt-4o-mini",
            start_time_unix_nano=start,
            end_time_unix_nano=end,
            attributes=kvs(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                    "gen_ai.usage.input_tokens": 50,
                    "gen_ai.usage.output_tokens": out_tokens,
                }
            ),
        )

    return [
        Span(
            trace_id=TRACE,
            span_id=ROOT,
            name="weather-agent",
            start_time_unix_nano=T0,
            end_time_unix_nano=T0 + 90,
            attributes=kvs({"gen_ai.operation.name": "invoke_agent"}),
        ),
        llm(CALL1, T0 + 10, T0 + 20, 7),
        Span(
            trace_id=TRACE,
            span_id=TOOL,
            parent_span_id=ROOT,
            name="execute_tool get_weather",
            start_time_unix_nano=T0 + 30,
            end_time_unix_nano=T0 + 40,
            attributes=kvs(
                {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": "get_weather",
                    "gen_ai.tool.call.arguments": '{"city": "Paris"}',
                    "session.id": "sess-9",
                    "user.id": "ada",
                }
            ),
        ),
        llm(CALL2, T0 + 50, T0 + 60, 5),
    ]


CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
}


def logs():
    def event(span_id, at, name, body):
        return LogRecord(
            trace_id=TRACE,
            span_id=span_id,
            time_unix_nano=at,
            event_name=name,
            body=value(body),
            attributes=kvs({"gen_ai.system": "openai"}),
        )

    return [
        event(CALL1, T0 + 11, "gen_ai.system.message", {"content": "You are a weather bot."}),
        event(CALL1, T0 + 12, "gen_ai.user.message", {"content": "Weather in Paris?"}),
        event(
            CALL1,
            T0 + 19,
            "gen_ai.choice",
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {"role": "assistant", "tool_calls": [CALL]},
            },
        ),
        event(CALL2, T0 + 51, "gen_ai.system.message", {"content": "You are a weather bot."}),
        event(CALL2, T0 + 52, "gen_ai.user.message", {"content": "Weather in Paris?"}),
        event(CALL2, T0 + 53, "gen_ai.assistant.message", {"tool_calls": [CALL]}),
        event(CALL2, T0 + 54, "gen_ai.tool.message", {"content": "18C and sunny", "id": "call_1"}),
        event(
            CALL2,
            T0 + 59,
            "gen_ai.choice",
            {"index": 0, "finish_reason": "stop", "message": {"content": "It is 18C and sunny in Paris."}},
        ),
    ]


def trace_export(items):
    resource = Resource(attributes=kvs({"service.name": "weather"}))
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=items)])]
    ).SerializeToString()


def logs_export(items):
    return ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=items)])]
    ).SerializeToString()


def ingest(ingestor, exports):
    for kind, items in exports:
        if kind == "traces":
            prepared, _ = ingestor.prepare_traces(trace_export(items), "application/x-protobuf")
        else:
            prepared, _ = ingestor.prepare_logs(logs_export(items), "application/x-protobuf")
        assert not prepared.rejected
        ingestor.write(prepared)


def stored(store):
    task = store.get_task(TASK)
    return (
        task.model_dump(exclude={"steps", "redactions"}),
        [s.model_dump(exclude={"redactions"}) for s in task.steps],
    )


def test_default_mode_logs_are_joined_to_their_spans(store, settings):
    ingestor = Ingestor(store, settings)
    ingest(ingestor, [("logs", logs()), ("traces", spans())])
    task = store.get_task(TASK)
    assert task.workload == "weather"
    assert task.session_id == "sess-9"  # from a child span
    assert task.metadata["user_id"] == "ada"
    assert task.input == "Weather in Paris?"  # the first user message
    assert task.output == "It is 18C and sunny in Paris."  # the last answer
    assert task.success is True
    assert [(s.seq, s.kind, s.name) for s in task.steps] == [
        (0, "llm_call", "gpt-4o-mini"),
        (1, "tool_call", "get_weather"),
        (2, "llm_call", "gpt-4o-mini"),
    ]
    first, tool, last = (s.data for s in task.steps)
    assert first["messages"] == [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    assert first["response"]["choices"][0]["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [CALL],
    }
    assert first["response"]["model"] == "gpt-4o-mini-2024-07-18"
    assert (first["input_tokens"], first["output_tokens"]) == (50, 7)
    assert last["messages"][2:] == [
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "content": "18C and sunny", "tool_call_id": "call_1"},
    ]
    assert tool["arguments"] == {"city": "Paris"}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(range(12)), cuts=st.sets(st.integers(1, 11), max_size=5), resend=st.booleans())
def test_any_order_and_split_gives_the_same_task(store, settings, order, cuts, resend):
    reference = Store(store.engine)
    items = [("traces", s) for s in spans()] + [("logs", r) for r in logs()]
    ingestor = Ingestor(store, settings)
    # the reference: everything in one export each, spans first
    with store.engine.begin() as conn:
        from flywheel.store import tables as t

        for table in (t.tasks, t.steps, t.otel_records):
            conn.execute(table.delete())
    ingest(ingestor, [("traces", spans()), ("logs", logs())])
    expected = stored(reference)
    with store.engine.begin() as conn:
        for table in (t.tasks, t.steps, t.otel_records):
            conn.execute(table.delete())
    shuffled = [items[i] for i in order]
    exports, current = [], []
    for i, item in enumerate(shuffled):
        if i in cuts and current:
            exports.append(current)
            current = []
        current.append(item)
    exports.append(current)
    batches = []
    for export in exports:
        for kind in ("traces", "logs"):
            part = [x for k, x in export if k == kind]
            if part:
                batches.append((kind, part))
    ingest(ingestor, batches + (batches[:1] if resend else []))
    task, steps = stored(store)
    assert task == expected[0]
    assert steps == expected[1]


def test_a_failed_call_names_its_model_and_keeps_the_traceback_apart(store, settings):
    failed = Span(
        trace_id=TRACE,
        span_id=CALL1,
        name="ChatCompletion",
        start_time_unix_nano=T0,
        end_time_unix_nano=T0 + 5,
        status=Status(
            code=Status.STATUS_CODE_ERROR,
            message='Traceback (most recent call last):\n  File "x.py", line 1\n'
            "openai.InternalServerError: Error code: 500 - {'error': 'boom'}",
        ),
        attributes=kvs(
            {
                "openinference.span.kind": "LLM",
                "llm.invocation_parameters": '{"model": "gpt-4o"}',
                "llm.input_messages.0.message.role": "user",
                "llm.input_messages.0.message.content": "hi",
            }
        ),
    )
    ingestor = Ingestor(store, settings)
    ingest(ingestor, [("traces", [failed])])
    task = store.get_task(TASK)
    (step,) = task.steps
    assert step.name == "gpt-4o"
    assert step.error == "InternalServerError: Error code: 500 - {'error': 'boom'}"
    assert step.data["error_detail"].startswith("Traceback")
    assert task.success is False
    assert task.error == step.error
    assert task.metadata["error_detail"].startswith("Traceback")


def test_a_trace_without_spans_of_ours_is_no_task(store, settings):
    http = Span(
        trace_id=TRACE,
        span_id=ROOT,
        name="GET /health",
        start_time_unix_nano=T0,
        end_time_unix_nano=T0 + 5,
        attributes=kvs({"http.method": "GET"}),
    )
    ingest(Ingestor(store, settings), [("traces", [http])])
    assert not store.task_exists(TASK)


def test_a_bad_span_is_refused_alone_and_its_neighbours_kept(store, settings):
    good = spans()
    bad_times = Span(
        trace_id=bytes(range(16)),
        span_id=CALL1,
        name="chat",
        start_time_unix_nano=2**63 - 1,
        end_time_unix_nano=2**63 - 1,
        attributes=kvs({"gen_ai.operation.name": "chat"}),
    )
    no_time = Span(
        trace_id=bytes(range(1, 17)),
        span_id=CALL1,
        name="chat",
        attributes=kvs({"gen_ai.operation.name": "chat"}),
    )
    bad_ids = Span(trace_id=b"\x01" * 3, span_id=CALL1, name="chat", start_time_unix_nano=T0)
    nul = Span(
        trace_id=bytes(range(2, 18)),
        span_id=CALL1,
        name="chat",
        start_time_unix_nano=T0,
        end_time_unix_nano=T0 + 5,
        attributes=kvs(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "m\x00odel",
                "gen_ai.input.messages": '[{"role":"user","content":"a\\u0000b"}]',
            }
        ),
    )
    ingestor = Ingestor(store, settings)
    prepared, _ = ingestor.prepare_traces(
        trace_export([*good, bad_times, no_time, bad_ids, nul]), "application/x-protobuf"
    )
    assert sorted(e.index for e in prepared.rejected) == [4, 5, 6]
    assert "started_at" in prepared.rejected[0].field
    ingestor.write(prepared)
    assert [s.kind for s in store.get_task(TASK).steps] == ["llm_call", "tool_call", "llm_call"]
    (step,) = store.get_task(str(uuid.UUID(bytes=bytes(range(2, 18))))).steps
    assert "\x00" not in step.name and step.data["messages"][0]["content"].startswith("a")


def test_a_span_id_of_digits_is_not_redacted(store, settings):
    """An id that happens to look like a card number is an id, not content."""
    digits = bytes.fromhex("4111111111111111")
    call = Span(
        trace_id=TRACE,
        span_id=digits,
        name="chat",
        start_time_unix_nano=T0,
        end_time_unix_nano=T0 + 5,
        attributes=kvs(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "m",
                "gen_ai.input.messages": '[{"role":"user","content":"card 4111111111111111"}]',
            }
        ),
    )
    ingestor = Ingestor(store, settings)
    prepared, _ = ingestor.prepare_traces(trace_export([call]), "application/x-protobuf")
    assert not prepared.rejected
    ingestor.write(prepared)
    (step,) = store.get_task(TASK).steps
    assert "4111111111111111" not in step.data["messages"][0]["content"]  # the content is redacted


def test_a_task_completed_later_is_new_to_incremental_curation(store, settings):
    ingestor = Ingestor(store, settings)
    ingest(ingestor, [("traces", spans()[1:])])
    first = store.get_task(TASK)
    with store.engine.connect() as conn:
        from flywheel.store import tables as t

        before = conn.execute(t.tasks.select().where(t.tasks.c.id == TASK)).mappings().one()["ingested_at"]
    ingest(ingestor, [("traces", spans()[:1]), ("logs", logs())])
    with store.engine.connect() as conn:
        after = conn.execute(t.tasks.select().where(t.tasks.c.id == TASK)).mappings().one()["ingested_at"]
    assert first.ended_at is None and store.get_task(TASK).ended_at is not None
    assert after > before


def test_a_log_resent_in_another_batch_is_a_duplicate_and_other_logs_are_ignored(store, settings):
    ingestor = Ingestor(store, settings)
    events = logs()
    ingest(ingestor, [("traces", spans()), ("logs", events)])
    expected = stored(store)
    app_log = LogRecord(trace_id=TRACE, span_id=CALL1, time_unix_nano=T0 + 13, body=value("GET /health 200"))
    for resend in ([events[1]], [events[2], events[0]], [app_log]):
        prepared, otlp = ingestor.prepare_logs(logs_export(resend), "application/x-protobuf")
        result = ingestor.write(prepared)
        assert result.stored == 0
    assert otlp.ignored == 1
    assert stored(store) == expected
