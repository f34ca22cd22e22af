"""Four agent flows, run as a user of each instrumentation would write them.

    python -m tests.conformance.flows INSTRUMENTATION --openai-url URL [--flows plain,tool,error,stream]
                                      [--capture DIR]

Each run instruments ``openai`` (or LangChain) globally, so one process runs
one instrumentation; the caller starts one process per instrumentation. The
flows talk to the fake OpenAI server (``fake_openai.py``) at ``--openai-url``
(one is started in this process when it is omitted):

* ``plain``: a system and a user message, one answer;
* ``tool``: ``get_weather`` offered, the model calls it, the tool runs, its
  result goes back with the call's ``tool_call_id``, the final answer;
* ``error``: the model answers HTTP 400; the agent fails;
* ``stream``: a streamed answer, usage in the last chunk.

Every flow runs under a root "agent" span (or task) carrying a session id
and a user id the way the instrumentation supports. Spans and logs go out
through the stock OTLP/HTTP exporters, configured by the standard
``OTEL_EXPORTER_OTLP_*`` variables; with ``--capture DIR`` they are written
instead, one OTLP/JSON file per flow and signal
(``DIR/<instrumentation>/<flow>.traces.json`` and ``.logs.json``).

The ``sdk`` and ``sdk-langchain`` instrumentations are ours
(``fw.instrument_openai`` and ``FlywheelCallbackHandler``), configured by
``FLYWHEEL_URL`` and ``FLYWHEEL_API_KEY``: the reference the others are
compared with.

One JSON line per flow goes to stdout: ``{"flow", "trace_id", "task_id",
"session_id", "user_id", "answer", "error"}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

FLOWS = ("plain", "tool", "error", "stream")
MODEL = "gpt-4o-mini"
AGENT = "weather-agent"
USER_ID = "user-42"
SYSTEM = "You are a helpful weather assistant. Answer in one sentence."
QUESTIONS = {
    "plain": "What is the capital of France?",
    "tool": "What is the weather in Paris?",
    "error": "Please FAIL this request.",
    "stream": "Which city is the capital of France?",
}
WEATHER = {"Paris": "18 degrees and sunny"}
TOOL_DESCRIPTION = "Get the current weather in a city."
# What LangChain's ``@tool`` makes of ``get_weather(city: str) -> str`` (convert_to_openai_tool):
# the openai flows offer the very same definition, so every flow sends the same requests.
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": TOOL_DESCRIPTION,
            "parameters": {
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "type": "object",
            },
        },
    }
]

# Environment each instrumentation is run with (set before it is instrumented).
INSTRUMENTATIONS: dict[str, dict[str, str]] = {
    "sdk": {},
    "sdk-langchain": {},
    "openai-v2": {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"},
    "openai-v2-latest-span": {
        "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY",
    },
    "openai-v2-latest-span-event": {
        "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_AND_EVENT",
    },
    "openinference-openai": {},
    "openinference-langchain": {},
    "openllmetry-openai": {"TRACELOOP_TRACE_CONTENT": "true"},
    "openllmetry-langchain": {"TRACELOOP_TRACE_CONTENT": "true"},
}


def session_id(instrumentation: str, flow: str) -> str:
    return f"session-{instrumentation}-{flow}"


def get_weather(city: str) -> str:
    return WEATHER.get(city, "unknown")


# ------------------------------------------------------------------ hooks
#
# A flow is written once, against three hooks that each instrumentation
# implements the way its users do: the root "agent" around the flow, the
# span (or step) around a tool, and the output of the root.


class Hooks:
    """Root and tool spans by hand, with plain OpenTelemetry (overridden per convention)."""

    def __init__(self, name: str, flow: str) -> None:
        self.name = name
        self.flow = flow
        self.session = session_id(name, flow)

    @contextlib.contextmanager
    def root(self, question: str) -> Iterator[Any]:
        yield None

    def output(self, root: Any, answer: str) -> None:
        pass

    @contextlib.contextmanager
    def tool(self, call_id: str, name: str, arguments: str) -> Iterator[Callable[[str], None]]:
        yield lambda result: None


class GenAIHooks(Hooks):
    """GenAI semantic conventions by hand: the agent and tool spans a user of openai-v2 adds
    (``opentelemetry-util-genai`` has helpers for them, but their API changes from one beta
    to the next)."""

    @contextlib.contextmanager
    def root(self, question: str) -> Iterator[Any]:
        from opentelemetry import trace

        tracer = trace.get_tracer("weather-agent")
        attributes = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": AGENT,
            "gen_ai.conversation.id": self.session,
            "user.id": USER_ID,
        }
        with tracer.start_as_current_span(f"invoke_agent {AGENT}", attributes=attributes) as span:
            yield span

    @contextlib.contextmanager
    def tool(self, call_id: str, name: str, arguments: str) -> Iterator[Callable[[str], None]]:
        from opentelemetry import trace

        tracer = trace.get_tracer("weather-agent")
        attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.type": "function",
            "gen_ai.tool.call.id": call_id,
            "gen_ai.tool.call.arguments": arguments,
        }
        with tracer.start_as_current_span(f"execute_tool {name}", attributes=attributes) as span:
            yield lambda result: span.set_attribute("gen_ai.tool.call.result", result)


class OpenInferenceHooks(Hooks):
    """OpenInference's own tracer: an AGENT span and a TOOL span, under ``using_attributes``."""

    @contextlib.contextmanager
    def root(self, question: str) -> Iterator[Any]:
        from openinference.instrumentation import OITracer, TraceConfig, using_attributes
        from opentelemetry import trace

        self.tracer = OITracer(trace.get_tracer("weather-agent"), config=TraceConfig())
        with (
            using_attributes(session_id=self.session, user_id=USER_ID),
            self.tracer.start_as_current_span(AGENT, openinference_span_kind="agent") as span,
        ):
            span.set_input(question)
            yield span

    def output(self, root: Any, answer: str) -> None:
        root.set_output(answer)

    @contextlib.contextmanager
    def tool(self, call_id: str, name: str, arguments: str) -> Iterator[Callable[[str], None]]:
        with self.tracer.start_as_current_span(name, openinference_span_kind="tool") as span:
            span.set_tool(
                name=name, description=TOOL_DESCRIPTION, parameters=TOOLS[0]["function"]["parameters"]
            )
            span.set_input(arguments, mime_type="application/json")
            yield lambda result: span.set_output(result)


class OpenLLMetryHooks(Hooks):
    """The spans ``traceloop-sdk``'s ``@workflow`` / ``@tool`` decorators write, by hand:
    the SDK itself is not installed (it pulls ~40 instrumentations and gRPC). Its
    association properties (session, user) go on the workflow span."""

    @contextlib.contextmanager
    def root(self, question: str) -> Iterator[Any]:
        from opentelemetry import trace

        tracer = trace.get_tracer("weather-agent")
        prefix = "traceloop.association.properties."
        attributes = {
            "traceloop.span.kind": "workflow",
            "traceloop.workflow.name": AGENT,
            "traceloop.entity.name": AGENT,
            "traceloop.entity.input": json.dumps({"args": [question], "kwargs": {}}),
            prefix + "session_id": self.session,
            prefix + "user_id": USER_ID,
        }
        with tracer.start_as_current_span(f"{AGENT}.workflow", attributes=attributes) as span:
            yield span

    def output(self, root: Any, answer: str) -> None:
        root.set_attribute("traceloop.entity.output", json.dumps(answer))

    @contextlib.contextmanager
    def tool(self, call_id: str, name: str, arguments: str) -> Iterator[Callable[[str], None]]:
        from opentelemetry import trace

        tracer = trace.get_tracer("weather-agent")
        attributes = {
            "traceloop.span.kind": "tool",
            "traceloop.workflow.name": AGENT,
            "traceloop.entity.name": name,
            "traceloop.entity.input": json.dumps({"args": [], "kwargs": json.loads(arguments)}),
        }
        with tracer.start_as_current_span(f"{name}.tool", attributes=attributes) as span:
            yield lambda result: span.set_attribute("traceloop.entity.output", json.dumps(result))


class SdkHooks(Hooks):
    """Ours: ``fw.task`` around the flow, ``task.tool_call`` for the tool."""

    def __init__(self, name: str, flow: str, fw: Any) -> None:
        super().__init__(name, flow)
        self.fw = fw
        self.task: Any = None

    @contextlib.contextmanager
    def root(self, question: str) -> Iterator[Any]:
        with self.fw.task(session_id=self.session, input=question, metadata={"user_id": USER_ID}) as task:
            self.task = task
            yield task

    def output(self, root: Any, answer: str) -> None:
        root.finish(answer, success=True)

    @contextlib.contextmanager
    def tool(self, call_id: str, name: str, arguments: str) -> Iterator[Callable[[str], None]]:
        import time

        started = time.time()
        results: list[str] = []
        yield results.append
        self.task.tool_call(
            name=name,
            arguments=json.loads(arguments),
            output=results[0],
            started_at=started,
            ended_at=time.time(),
        )


# ------------------------------------------------------------ the flows


def run_openai_flow(flow: str, client: Any, hooks: Hooks) -> str:
    """One flow with the ``openai`` client, as an agent written against it does."""
    question = QUESTIONS[flow]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": question},
    ]
    with hooks.root(question) as root:
        if flow == "tool":
            first = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
            message = first.choices[0].message
            messages.append(message.model_dump(exclude_none=True))
            for call in message.tool_calls or []:
                with hooks.tool(call.id, call.function.name, call.function.arguments) as done:
                    result = get_weather(**json.loads(call.function.arguments))
                    done(result)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
            final = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
            answer = final.choices[0].message.content
        elif flow == "stream":
            stream = client.chat.completions.create(
                model=MODEL, messages=messages, stream=True, stream_options={"include_usage": True}
            )
            answer = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        else:  # plain, error (the fake answers 400: the call raises, the agent fails)
            answer = client.chat.completions.create(model=MODEL, messages=messages).choices[0].message.content
        hooks.output(root, answer)
    return str(answer)


def langchain_agent(flow: str, openai_url: str) -> Any:
    """The flow as a LangChain runnable: ``ChatOpenAI``, a ``@tool``, ``bind_tools``."""
    from langchain_core.messages import HumanMessage, SystemMessage
    from langchain_core.runnables import chain
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool("get_weather", description=TOOL_DESCRIPTION)
    def weather_tool(city: str) -> str:
        return get_weather(city)

    llm = ChatOpenAI(model=MODEL, base_url=openai_url, api_key="sk-fake", stream_usage=True)

    @chain
    def weather_agent(question: str) -> str:
        messages: list[Any] = [SystemMessage(SYSTEM), HumanMessage(question)]
        if flow == "tool":
            model = llm.bind_tools([weather_tool])
            reply = model.invoke(messages)
            messages.append(reply)
            for call in reply.tool_calls:
                messages.append(weather_tool.invoke(call))  # a ToolMessage with the call's id
            return str(model.invoke(messages).content)
        if flow == "stream":
            return "".join(str(chunk.content) for chunk in llm.stream(messages))
        return str(llm.invoke(messages).content)

    return weather_agent


# ------------------------------------------------------------ telemetry


def root_spans() -> Any:
    """A span processor that notes the trace id of each root span (to find the task)."""
    from opentelemetry.sdk.trace import SpanProcessor

    class RootSpans(SpanProcessor):
        def __init__(self) -> None:
            self.trace_ids: list[int] = []

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            if span.parent is None:
                self.trace_ids.append(span.context.trace_id)

    return RootSpans()


class Telemetry:
    """Tracer and logger providers with OTLP/HTTP exporters, or in-memory ones for ``--capture``."""

    def __init__(self, capture: Path | None, workload: str | None = None) -> None:
        from opentelemetry import trace
        from opentelemetry._logs import set_logger_provider
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, SimpleLogRecordProcessor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        attributes = {"service.name": AGENT}
        if workload:
            attributes["flywheel.workload"] = workload
        resource = Resource.create(attributes)
        self.capture = capture
        self.roots = root_spans()
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(self.roots)
        self.logger_provider = LoggerProvider(resource=resource)
        if capture is not None:
            from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

            self.spans = InMemorySpanExporter()
            self.logs = InMemoryLogRecordExporter()
            self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
            self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self.logs))
        else:
            from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            self.tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            self.logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
        trace.set_tracer_provider(self.tracer_provider)
        set_logger_provider(self.logger_provider)

    def flush(self, instrumentation: str, flow: str) -> None:
        self.tracer_provider.force_flush()
        self.logger_provider.force_flush()
        if self.capture is None:
            return
        from google.protobuf.json_format import MessageToDict
        from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        folder = self.capture / instrumentation
        folder.mkdir(parents=True, exist_ok=True)
        spans = self.spans.get_finished_spans()
        logs = self.logs.get_finished_logs()
        self.spans.clear()
        self.logs.clear()
        (folder / f"{flow}.traces.json").write_text(
            json.dumps(otlp_json(MessageToDict(encode_spans(spans))), indent=1)
        )
        if logs:
            (folder / f"{flow}.logs.json").write_text(
                json.dumps(otlp_json(MessageToDict(encode_logs(logs))), indent=1)
            )

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()


def otlp_json(data: Any) -> Any:
    """Protobuf's JSON mapping writes ids in base64; OTLP/JSON writes them in hex."""
    import base64

    if isinstance(data, list):
        return [otlp_json(v) for v in data]
    if isinstance(data, dict):
        return {
            k: base64.b64decode(v).hex()
            if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str)
            else otlp_json(v)
            for k, v in data.items()
        }
    return data


def instrument(name: str) -> None:
    """Instrument ``openai`` or LangChain globally, as the package's docs say."""
    if name in ("openai-v2", "openai-v2-latest-span", "openai-v2-latest-span-event"):
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        OpenAIInstrumentor().instrument()
    elif name == "openinference-openai":
        from openinference.instrumentation.openai import OpenAIInstrumentor as OIOpenAI

        OIOpenAI().instrument()
    elif name == "openinference-langchain":
        from openinference.instrumentation.langchain import LangChainInstrumentor

        LangChainInstrumentor().instrument()
    elif name == "openllmetry-openai":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor as TLOpenAI

        TLOpenAI().instrument()
    elif name == "openllmetry-langchain":
        from opentelemetry.instrumentation.langchain import LangchainInstrumentor

        LangchainInstrumentor().instrument()


def hooks_for(name: str, flow: str) -> Hooks:
    if name.startswith("openai-v2"):
        return GenAIHooks(name, flow)
    if name == "openinference-openai":
        return OpenInferenceHooks(name, flow)
    if name == "openllmetry-openai":
        return OpenLLMetryHooks(name, flow)
    raise ValueError(f"no hooks for {name}")


def run(
    name: str, flows: list[str], openai_url: str, capture: Path | None, workload: str | None = None
) -> list[dict[str, Any]]:
    os.environ.update(INSTRUMENTATIONS[name])
    results: list[dict[str, Any]] = []
    if name in ("sdk", "sdk-langchain"):
        return run_sdk(name, flows, openai_url, workload or AGENT)
    telemetry = Telemetry(capture, workload)
    instrument(name)
    for flow in flows:
        before = len(telemetry.roots.trace_ids)
        answer, error = None, None
        try:
            if name.endswith("-langchain"):
                answer = run_langchain_flow(name, flow, openai_url)
            else:
                import openai

                client = openai.OpenAI(base_url=openai_url, api_key="sk-fake")
                answer = run_openai_flow(flow, client, hooks_for(name, flow))
        except Exception as exc:  # the error flow fails, as the agent would
            error = f"{type(exc).__name__}: {exc}"
        telemetry.flush(name, flow)
        trace_ids = telemetry.roots.trace_ids[before:]
        trace_id = f"{trace_ids[0]:032x}" if trace_ids else None
        results.append(
            {
                "flow": flow,
                "trace_id": trace_id,
                "task_id": str(uuid.UUID(hex=trace_id)) if trace_id else None,
                "session_id": session_id(name, flow),
                "user_id": USER_ID,
                "answer": answer,
                "error": error,
            }
        )
    telemetry.shutdown()
    return results


def run_langchain_flow(name: str, flow: str, openai_url: str) -> str:
    agent = langchain_agent(flow, openai_url)
    session = session_id(name, flow)
    if name == "openinference-langchain":
        from openinference.instrumentation import using_attributes

        with using_attributes(session_id=session, user_id=USER_ID):
            return str(agent.invoke(QUESTIONS[flow]))
    # OpenLLMetry: LangChain metadata become association properties.
    return str(
        agent.invoke(QUESTIONS[flow], config={"metadata": {"session_id": session, "user_id": USER_ID}})
    )


def run_sdk(name: str, flows: list[str], openai_url: str, workload: str) -> list[dict[str, Any]]:
    import flywheel

    fw = flywheel.init(workload)
    results: list[dict[str, Any]] = []
    for flow in flows:
        answer, error, task_id = None, None, None
        try:
            if name == "sdk-langchain":
                from flywheel.integrations.langchain import FlywheelCallbackHandler

                handler = FlywheelCallbackHandler(fw, session_id=session_id(name, flow))
                agent = langchain_agent(flow, openai_url)
                config: Any = {"callbacks": [handler], "metadata": {"user_id": USER_ID}}
                answer = str(agent.invoke(QUESTIONS[flow], config=config))
            else:
                import openai

                client = fw.instrument_openai(openai.OpenAI(base_url=openai_url, api_key="sk-fake"))
                hooks = SdkHooks(name, flow, fw)
                try:
                    answer = run_openai_flow(flow, client, hooks)
                finally:
                    task_id = hooks.task.id if hooks.task else None
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        results.append(
            {
                "flow": flow,
                "trace_id": None,
                "task_id": task_id,
                "session_id": session_id(name, flow),
                "user_id": USER_ID,
                "answer": answer,
                "error": error,
            }
        )
    fw.flush()
    fw.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("instrumentation", choices=sorted(INSTRUMENTATIONS))
    parser.add_argument(
        "--openai-url", help="the fake OpenAI server's base URL (.../v1); else one is started"
    )
    parser.add_argument("--flows", default=",".join(FLOWS))
    parser.add_argument("--capture", type=Path, help="write OTLP/JSON files here instead of exporting")
    parser.add_argument("--workload", help="the flywheel workload (resource attribute flywheel.workload)")
    args = parser.parse_args(argv)
    flows = [f for f in args.flows.split(",") if f]
    unknown = set(flows) - set(FLOWS)
    if unknown:
        parser.error(f"unknown flows: {sorted(unknown)}")
    fake = None
    url = args.openai_url
    if not url:
        from tests.conformance.fake_openai import FakeOpenAI

        fake = FakeOpenAI().start()
        url = fake.url
    try:
        for result in run(args.instrumentation, flows, url, args.capture, args.workload):
            print(json.dumps(result), flush=True)
    finally:
        if fake is not None:
            fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
