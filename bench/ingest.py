"""Ingestion benchmark: how fast do logged steps become committed, queryable rows?

    python bench/ingest.py [--tasks 2000] [--backends sqlite,postgresql]

For each backend it starts a real `flywheel serve` (one process) on a fresh
database and measures, in the same run:

* SDK path: an agent logs N tasks of 6 steps through the SDK over HTTP; the
  clock stops when `fw.flush()` returns (every event acknowledged, so committed);
* OTLP path: N traces of 6 spans (GenAI + OpenInference attributes, ~500 B of
  content per LLM span, like ../shared/tools/otlp_load.py) posted as protobuf
  by 2 client threads, 600 spans a request;
* baseline: the same rows (as the ingestion path stores them) written by a
  plain DB-API `executemany` into the same tables, committed every 1,000 rows.

The figure is the ratio ingestion / executemany. Then the agent-side cost:
microseconds on the agent's thread per logged step, beside an OpenTelemetry SDK
span with BatchSpanProcessor + OTLP/HTTP exporter, same attributes, same run.

Prints a table and writes JSON to bench/results/ingest-<backend>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from sqlalchemy import create_engine, func, select, text

import flywheel
from flywheel.config import Settings
from flywheel.ingest import Ingestor
from flywheel.store import Store, tables

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("FLYWHEEL_TEST_PG", "postgresql+psycopg://root@127.0.0.1:5432/test")
RNG = random.Random(7)


_POOL: dict[int, list[str]] = {}


def text_of(n: int) -> str:
    """Content of n characters, drawn from a pre-made pool so that making the load
    costs the agent next to nothing."""
    if n not in _POOL:
        _POOL[n] = ["".join(RNG.choice("abcdefgh ") for _ in range(n)) for _ in range(64)]
    return RNG.choice(_POOL[n])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def commit_id() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
    except OSError:
        return "unknown"


class Server:
    def __init__(self, database_url: str, home: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "FLYWHEEL_DATABASE_URL": database_url,
            "FLYWHEEL_HOME": str(home),
            "FLYWHEEL_PORT": str(self.port),
        }
        env.pop("FLYWHEEL_URL", None)
        self.log = open(home / "server.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flywheel.cli", "serve"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        for _ in range(300):
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start; see {home / 'server.log'}")

    def rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(20)
        self.log.close()


# ---------------------------------------------------------------- workloads


def log_tasks(fw: flywheel.Flywheel, n: int, prefix: str) -> None:
    """N agent tasks of 6 steps each, content sized like the OTLP load."""
    for i in range(n):
        with fw.task(session_id=f"{prefix}{i % 97}", input=text_of(200)) as task:
            for _ in range(2):
                task.llm_call(
                    model="gpt-4o",
                    messages=[{"role": "user", "content": text_of(500)}],
                    response={"role": "assistant", "content": text_of(300)},
                    input_tokens=120,
                    output_tokens=40,
                    latency_ms=2,
                )
            for _ in range(2):
                task.tool_call(
                    name="lookup", arguments={"q": text_of(100)}, output=text_of(200), latency_ms=1
                )
            task.retrieval(query=text_of(80), documents=[{"content": text_of(100), "score": 0.5}])
            task.reasoning(text_of(100))
            task.finish(output=text_of(200), success=True, confidence=0.8)


def kv(k: str, v: object) -> KeyValue:
    if isinstance(v, bool):
        return KeyValue(key=k, value=AnyValue(bool_value=v))
    if isinstance(v, int):
        return KeyValue(key=k, value=AnyValue(int_value=v))
    return KeyValue(key=k, value=AnyValue(string_value=str(v)))


def otlp_batches(n_tasks: int, per_batch: int = 600) -> list[tuple[int, bytes]]:
    t0 = time.time_ns()
    spans: list[Span] = []
    out = []
    res = Resource(attributes=[kv("service.name", "bench-agent")])

    def emit() -> None:
        body = ExportTraceServiceRequest(
            resource_spans=[ResourceSpans(resource=res, scope_spans=[ScopeSpans(spans=spans)])]
        )
        out.append((len(spans), body.SerializeToString()))

    for i in range(n_tasks):
        tid, root, t = RNG.randbytes(16), RNG.randbytes(8), t0 + i * 1000
        spans.append(
            Span(
                trace_id=tid,
                span_id=root,
                name="invoke_agent",
                start_time_unix_nano=t,
                end_time_unix_nano=t + 5_000_000,
                attributes=[
                    kv("gen_ai.operation.name", "invoke_agent"),
                    kv("openinference.span.kind", "AGENT"),
                    kv("input.value", text_of(200)),
                    kv("output.value", text_of(200)),
                    kv("session.id", f"s{i % 97}"),
                ],
            )
        )
        for _ in range(2):
            spans.append(
                Span(
                    trace_id=tid,
                    span_id=RNG.randbytes(8),
                    parent_span_id=root,
                    name="chat gpt-4o",
                    start_time_unix_nano=t + 1,
                    end_time_unix_nano=t + 2_000_000,
                    attributes=[
                        kv("gen_ai.operation.name", "chat"),
                        kv("gen_ai.request.model", "gpt-4o"),
                        kv("gen_ai.usage.input_tokens", 120),
                        kv("gen_ai.usage.output_tokens", 40),
                        kv("openinference.span.kind", "LLM"),
                        kv("input.value", text_of(500)),
                        kv("output.value", text_of(300)),
                    ],
                )
            )
        for _ in range(2):
            spans.append(
                Span(
                    trace_id=tid,
                    span_id=RNG.randbytes(8),
                    parent_span_id=root,
                    name="execute_tool lookup",
                    start_time_unix_nano=t + 3,
                    end_time_unix_nano=t + 1_000_000,
                    status=Status(
                        code=Status.STATUS_CODE_ERROR if RNG.random() < 0.1 else Status.STATUS_CODE_OK
                    ),
                    attributes=[
                        kv("gen_ai.operation.name", "execute_tool"),
                        kv("gen_ai.tool.name", "lookup"),
                        kv("openinference.span.kind", "TOOL"),
                        kv("input.value", text_of(100)),
                        kv("output.value", text_of(200)),
                    ],
                )
            )
        spans.append(
            Span(
                trace_id=tid,
                span_id=RNG.randbytes(8),
                parent_span_id=root,
                name="retrieve",
                start_time_unix_nano=t + 4,
                end_time_unix_nano=t + 500_000,
                attributes=[kv("openinference.span.kind", "RETRIEVER"), kv("input.value", text_of(80))],
            )
        )
        if len(spans) >= per_batch:
            emit()
            spans = []
    if spans:
        emit()
    return out


def post_otlp(url: str, key: str, batches: list[tuple[int, bytes]], clients: int = 2) -> tuple[int, int]:
    headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {key}"}
    lock, index, acked, errors = threading.Lock(), [0], [0], [0]

    def client() -> None:
        with httpx.Client(timeout=120) as c:
            while True:
                with lock:
                    i = index[0]
                    index[0] += 1
                if i >= len(batches):
                    return
                n, body = batches[i]
                r = c.post(f"{url}/v1/traces", content=body, headers=headers)
                with lock:
                    if r.status_code == 200:
                        acked[0] += n
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return acked[0], errors[0]


def count_steps(store: Store) -> int:
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(tables.steps)).scalar_one()


# ----------------------------------------------------------------- baseline


def baseline_rows(settings: Settings, store: Store, n_tasks: int) -> tuple[list[dict], list[dict]]:
    """The rows ingestion would store for N tasks, with fresh ids."""
    events: list[bytes] = []

    class Capture:
        def __call__(self, body: bytes):  # a transport that keeps the bodies
            events.extend(orjson.dumps(e) for e in orjson.loads(body)["events"])
            from flywheel.sdk.pipeline import Delivery, SendOutcome

            return Delivery(SendOutcome.DELIVERED)

        def close(self) -> None:
            pass

    fw = flywheel.init(
        "bench-baseline", settings=settings.model_copy(update={"home": settings.home / "baseline"})
    )
    fw.pipeline.transport = Capture()
    log_tasks(fw, n_tasks, "b")
    fw.flush()
    fw.close()
    prepared = Ingestor(store, settings).prepare([orjson.loads(e) for e in events])
    rows = prepared.rows
    tasks = {r["id"]: r for r in rows.tasks_started}
    tasks.update({r["id"]: r for r in rows.tasks_finished})
    return list(tasks.values()), rows.steps


def executemany(database_url: str, task_rows: list[dict], step_rows: list[dict], chunk: int = 1000) -> float:
    """Plain DB-API executemany of the same rows, committed every ``chunk`` rows."""

    def prep(rows: list[dict], json_cols: set[str]) -> tuple[list[str], list[tuple]]:
        cols = list(rows[0])
        out = []
        for r in rows:
            out.append(
                tuple(
                    orjson.dumps(r[c]).decode() if c in json_cols and r[c] is not None else r[c] for c in cols
                )
            )
        return cols, out

    task_cols, tasks = prep(task_rows, {"input", "output", "metadata"})
    step_cols, steps = prep(step_rows, {"data"})
    engine = create_engine(database_url)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        mark = "?" if engine.dialect.name == "sqlite" else "%s"
        if engine.dialect.name == "sqlite":
            cursor.execute("PRAGMA synchronous=FULL")
        started = time.perf_counter()
        for table, cols, rows in (("tasks", task_cols, tasks), ("steps", step_cols, steps)):
            sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join([mark] * len(cols))})"
            for i in range(0, len(rows), chunk):
                cursor.executemany(sql, rows[i : i + chunk])
                raw.commit()
        return time.perf_counter() - started
    finally:
        raw.close()
        engine.dispose()


# ---------------------------------------------------------- agent-side cost


def sdk_cost(settings: Settings, url: str | None, key: str, n: int) -> float:
    """Microseconds on the agent's thread per logged LLM call (500 + 300 B of content).

    With ``url`` the flusher sends to the server meanwhile; without, it discards."""
    from flywheel.sdk.pipeline import Delivery, SendOutcome

    fw = flywheel.init(
        "bench-cost",
        settings=settings.model_copy(update={"url": url, "api_key": key, "home": settings.home / "cost"}),
    )
    if url is None:
        fw.pipeline.transport = lambda body: Delivery(SendOutcome.DELIVERED)
    prompt, answer = text_of(500), text_of(300)
    with fw.task(input="x") as task:
        started = time.perf_counter()
        for _ in range(n):
            task.llm_call(
                model="gpt-4o",
                messages=[{"role": "user", "content": prompt}],
                response={"role": "assistant", "content": answer},
                input_tokens=120,
                output_tokens=40,
                latency_ms=2,
            )
        elapsed = time.perf_counter() - started
    fw.flush(120)
    fw.close()
    return elapsed / n * 1e6


def otel_cost(url: str | None, key: str, n: int) -> float:
    """The same LLM call as an OpenTelemetry span (GenAI + OpenInference attributes),
    BatchSpanProcessor with default settings, exported by OTLP/HTTP or discarded."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def export(self, spans):  # type: ignore[no-untyped-def]
            return SpanExportResult.SUCCESS

    exporter = (
        OTLPSpanExporter(endpoint=f"{url}/v1/traces", headers={"Authorization": f"Bearer {key}"})
        if url
        else Discard()
    )
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("bench")
    prompt, answer = text_of(500), text_of(300)
    started = time.perf_counter()
    for _ in range(n):
        with tracer.start_as_current_span("chat gpt-4o") as span:
            span.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.system": "openai",
                    "gen_ai.request.model": "gpt-4o",
                    "gen_ai.usage.input_tokens": 120,
                    "gen_ai.usage.output_tokens": 40,
                    "openinference.span.kind": "LLM",
                    "llm.model_name": "gpt-4o",
                    "llm.token_count.prompt": 120,
                    "llm.token_count.completion": 40,
                    "input.value": prompt,
                    "output.value": answer,
                }
            )
    elapsed = time.perf_counter() - started
    provider.shutdown()
    return elapsed / n * 1e6


# --------------------------------------------------------------------- main


def run_backend(backend: str, n_tasks: int, cost_steps: int) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"fw-bench-{backend}-"))
    admin = None
    if backend == "sqlite":
        database_url = f"sqlite:///{workdir / 'flywheel.db'}"
    else:
        name = f"flywheel_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        database_url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    settings = Settings(database_url=database_url, home=workdir / "home", url=None)
    store = Store.open(settings)
    key, _ = store.create_key("bench", ["ingest"])
    server = Server(database_url, workdir)
    result: dict = {"backend": backend, "tasks": n_tasks, "commit": commit_id()}
    try:
        # SDK -> HTTP -> store
        fw = flywheel.init(
            "bench-sdk", settings=settings.model_copy(update={"url": server.url, "api_key": key})
        )
        started = time.perf_counter()
        log_tasks(fw, n_tasks, "s")
        assert fw.flush(300), "SDK could not deliver"
        sdk_seconds = time.perf_counter() - started
        sdk_stats = fw.stats()
        fw.close()
        steps_after_sdk = count_steps(store)
        assert steps_after_sdk == 6 * n_tasks, steps_after_sdk
        events = sdk_stats["sent"]
        result["sdk"] = {
            "seconds": sdk_seconds,
            "events": events,
            "steps": 6 * n_tasks,
            "steps_per_s": 6 * n_tasks / sdk_seconds,
            "events_per_s": events / sdk_seconds,
        }

        # OTLP
        batches = otlp_batches(n_tasks)
        spans = sum(n for n, _ in batches)
        started = time.perf_counter()
        acked, errors = post_otlp(server.url, key, batches)
        otlp_seconds = time.perf_counter() - started
        queryable = count_steps(store) - steps_after_sdk
        result["otlp"] = {
            "seconds": otlp_seconds,
            "spans": spans,
            "acked_spans": acked,
            "errors": errors,
            "spans_per_s": acked / otlp_seconds,
            "steps_queryable": queryable,
            "steps_per_s": queryable / otlp_seconds,
        }
        result["server_rss_mb"] = server.rss_mb()

        # agent-side cost: exporting to this server (which competes for the 2 cores)...
        result["sdk_us_per_step"] = sdk_cost(settings, server.url, key, cost_steps)
        result["otel_us_per_span"] = otel_cost(server.url, key, cost_steps)
        with store.engine.connect() as conn:  # each exported span is a root span: a task
            result["otel_spans_delivered"] = conn.execute(
                select(func.count())
                .select_from(tables.tasks)
                .where(tables.tasks.c.workload.like("unknown_service%"))
            ).scalar_one()
        result["otel_spans_sent"] = cost_steps
        # ...and with the export discarded (the instrumentation alone)
        result["sdk_us_per_step_no_export"] = sdk_cost(settings, None, key, cost_steps)
        result["otel_us_per_span_no_export"] = otel_cost(None, key, cost_steps)
    finally:
        server.stop()

    # baseline: the same rows by plain executemany, same database
    task_rows, step_rows = baseline_rows(settings, store, n_tasks)
    seconds = executemany(database_url, task_rows, step_rows)
    rows = len(task_rows) + len(step_rows)
    result["executemany"] = {
        "seconds": seconds,
        "rows": rows,
        "rows_per_s": rows / seconds,
        "steps_per_s": len(step_rows) / seconds,
    }
    sdk_rows = n_tasks * 7  # each task row + 6 steps, as in the baseline
    result["ratio_sdk"] = (sdk_rows / result["sdk"]["seconds"]) / result["executemany"]["rows_per_s"]
    otlp_rows = n_tasks * 6  # 1 task row + 5 step rows per trace
    result["ratio_otlp"] = (otlp_rows / otlp_seconds) / result["executemany"]["rows_per_s"]
    result["cost_ratio"] = result["sdk_us_per_step"] / result["otel_us_per_span"]
    result["cost_ratio_no_export"] = (
        result["sdk_us_per_step_no_export"] / result["otel_us_per_span_no_export"]
    )
    if backend == "sqlite":
        db = Path(settings.database_url.removeprefix("sqlite:///"))
        size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
        result["disk_bytes_per_row"] = size / (count_steps(store) + n_tasks * 3)
    store.close()
    if admin is not None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database_url.rsplit("/", 1)[1]}" WITH (FORCE)'))
        admin.dispose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--cost-steps", type=int, default=50_000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for backend in args.backends.split(","):
        print(f"running {backend} ...", file=sys.stderr)
        result = run_backend(backend, args.tasks, args.cost_steps)
        (out_dir / f"ingest-{backend}.json").write_text(json.dumps(result, indent=2))
        results.append(result)
    header = f"{'backend':<11}{'path':<16}{'steps/s':>10}{'rows/s':>10}{'vs executemany':>16}"
    print(header)
    print("-" * len(header))
    for r in results:
        base = r["executemany"]["rows_per_s"]
        rows = (
            ("executemany", r["executemany"]["steps_per_s"], base, 1.0),
            ("SDK->HTTP", r["sdk"]["steps_per_s"], r["tasks"] * 7 / r["sdk"]["seconds"], r["ratio_sdk"]),
            ("OTLP", r["otlp"]["steps_per_s"], r["tasks"] * 6 / r["otlp"]["seconds"], r["ratio_otlp"]),
        )
        for i, (path, steps, per_s, ratio) in enumerate(rows):
            name = r["backend"] if i == 0 else ""
            print(f"{name:<11}{path:<16}{steps:>10.0f}{per_s:>10.0f}{ratio:>16.2f}")
    print()
    print(f"{'backend':<11}{'export':<10}{'SDK us/step':>12}{'OTel us/span':>14}{'ratio':>8}")
    for r in results:
        for label, suffix in (("to server", ""), ("discarded", "_no_export")):
            sdk, otel = r["sdk_us_per_step" + suffix], r["otel_us_per_span" + suffix]
            print(f"{r['backend']:<11}{label:<10}{sdk:>12.1f}{otel:>14.1f}{sdk / otel:>8.2f}")
        lost = 1 - r["otel_spans_delivered"] / r["otel_spans_sent"]
        print(f"{'':<11}(exporting, the SDK delivered every step; OTel dropped {lost:.0%} of its spans)")
    print()
    print(f"{'backend':<11}{'server RSS MB':>15}")
    for r in results:
        print(f"{r['backend']:<11}{r['server_rss_mb']:>15.0f}")
    print(f"\nJSON in {out_dir}/ingest-<backend>.json")


if __name__ == "__main__":
    main()
