"""Whatever instrumentation an agent uses, the stored task is the same task.

The real instrumentation packages (GenAI ``openai-v2`` in its default and
latest-conventions modes, OpenInference for openai and LangChain, OpenLLMetry
for openai and LangChain) and our own LangChain callback each run the four
flows of ``flows.py`` against the fake OpenAI server (the only fake), exporting
to a real ``flywheel serve``. Each stored task, normalised, must equal what
``fw.instrument_openai`` stores for the same flow: model, messages with the
system prompt, offered tools, tool calls and their ids, tool results, usage,
cost, error, session and user. Then users rate the tasks, ``flywheel curate``
runs per instrumentation, and its examples must be the SDK's, exported as valid
OpenAI fine-tuning JSONL; every page of every task answers 200.

One server, one fake and one subprocess per instrumentation for the module
(instrumentors patch ``openai`` globally); SQLite only: this checks ingestion,
not the database.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conformance.fake_openai import FakeOpenAI
from tests.conformance.flows import FLOWS, QUESTIONS, USER_ID, session_id
from tests.live import LiveServer
from typer.testing import CliRunner

pytestmark = pytest.mark.slow

REFERENCE = "sdk"
INSTRUMENTATIONS = [
    "sdk-langchain",
    "openai-v2",
    "openai-v2-latest-span",
    "openai-v2-latest-span-event",
    "openinference-openai",
    "openinference-langchain",
    "openllmetry-openai",
    "openllmetry-langchain",
]
#: What an instrumentation does not emit at all, so no ingestion can recover it:
#: compared as absent (the stored value must be empty, never invented).
NOT_EMITTED: dict[str, set[str]] = {
    "openai-v2": {"tools"},  # 2.4b0 records no tool definitions, in any mode
    "openai-v2-latest-span": {"tools"},
    "openai-v2-latest-span-event": {"tools"},
}
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class World:
    server: LiveServer
    keys: dict[str, str]
    # instrumentation -> flow -> its JSON line
    runs: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    tasks: dict[str, dict[str, dict[str, Any] | None]] = field(default_factory=dict)
    curated: dict[str, Any] = field(default_factory=dict)  # instrumentation -> curate summary or error
    exported: dict[str, list[dict[str, Any]] | str] = field(default_factory=dict)

    def get(self, path: str, key: str = "review", **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[key]}"}
        return httpx.get(self.server.url + path, headers=headers, timeout=30, **kw)


def workload(instrumentation: str) -> str:
    return f"conformance-{instrumentation}"


def run_flows(instrumentation: str, fake_url: str, world: World) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "FLYWHEEL_", "TRACELOOP_"))}
    env.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": world.server.url,
            "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{world.keys['ingest']}",
            "OTEL_METRICS_EXPORTER": "none",
            "FLYWHEEL_URL": world.server.url,
            "FLYWHEEL_API_KEY": world.keys["ingest"],
            "FLYWHEEL_HOME": str(world.server.home / f"agent-{instrumentation}"),
            "PYTHONPATH": str(ROOT),
        }
    )
    command = [sys.executable, "-m", "tests.conformance.flows", instrumentation]
    command += ["--openai-url", fake_url, "--workload", workload(instrumentation)]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    world.logs[instrumentation] = done.stderr[-4000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    world.runs[instrumentation] = {line["flow"]: line for line in lines}


def find_task(world: World, instrumentation: str, flow: str) -> dict[str, Any] | None:
    """The stored task of a flow: by its trace id (OTLP) or task id (SDK), else by its session."""
    line = world.runs.get(instrumentation, {}).get(flow)
    if line is None:
        return None
    if line.get("task_id"):
        response = world.get(f"/v1/tasks/{line['task_id']}")
        if response.status_code == 200:
            return dict(response.json())
    listed = world.get("/v1/tasks", params={"session_id": line["session_id"], "limit": 5})
    if listed.status_code == 200 and listed.json()["tasks"]:
        task_id = listed.json()["tasks"][0]["id"]
        return dict(world.get(f"/v1/tasks/{task_id}").json())
    return None


def wait_for_tasks(world: World, deadline: float) -> None:
    names = [REFERENCE, *INSTRUMENTATIONS]
    pending = {(name, flow) for name in names for flow in FLOWS}
    while pending and time.monotonic() < deadline:
        for name, flow in sorted(pending):
            task = find_task(world, name, flow)
            if task is not None and task.get("ended_at") and task.get("steps"):
                world.tasks.setdefault(name, {})[flow] = task
                pending.discard((name, flow))
        if pending:
            time.sleep(0.5)
    for name, flow in pending:  # as they are, or None
        world.tasks.setdefault(name, {})[flow] = find_task(world, name, flow)


def rate_and_curate(world: World, tmp: Path) -> None:
    """Users rate the answered tasks good and the failed one bad; curate and export per workload."""
    from flywheel.cli import app

    for flows in world.tasks.values():
        for flow, task in flows.items():
            if task is None:
                continue
            body = {"thumbs": -1, "rating": 1} if flow == "error" else {"thumbs": 1, "rating": 5}
            httpx.post(
                f"{world.server.url}/v1/tasks/{task['id']}/feedback",
                json=body,
                headers={"Authorization": f"Bearer {world.keys['ingest']}"},
                timeout=30,
            ).raise_for_status()
    runner = CliRunner()
    env = {"FLYWHEEL_DATABASE_URL": world.server.database_url, "FLYWHEEL_HOME": str(world.server.home)}
    for name in [REFERENCE, *INSTRUMENTATIONS]:
        curated = runner.invoke(app, ["curate", "--workload", workload(name), "--json"], env=env)
        if curated.exit_code != 0:
            world.curated[name] = f"curate exited {curated.exit_code}: {curated.output[-2000:]}"
            continue
        world.curated[name] = json.loads(curated.stdout)
        out = tmp / f"{name}.jsonl"
        exported = runner.invoke(
            app,
            [
                "datasets",
                "export",
                workload(name),
                "--format",
                "openai-jsonl",
                "--split",
                "all",
                "--out",
                str(out),
            ],
            env=env,
        )
        if exported.exit_code != 0:
            world.exported[name] = f"export exited {exported.exit_code}: {exported.output[-2000:]}"
        else:
            world.exported[name] = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    from flywheel.config import Settings
    from flywheel.store import Store

    home = tmp_path_factory.mktemp("conformance")
    database_url = f"sqlite:///{home / 'flywheel.db'}"
    store = Store.open(Settings(database_url=database_url, home=home, url=None, api_key=None))
    keys = {scope: store.create_key(f"{scope}-key", [scope])[0] for scope in ("ingest", "review")}
    store.close()
    server = LiveServer(database_url, home).start()
    world = World(server=server, keys=keys)
    try:
        with FakeOpenAI() as fake, ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda name: run_flows(name, fake.url, world), [REFERENCE, *INSTRUMENTATIONS]))
        wait_for_tasks(world, time.monotonic() + 20)
        rate_and_curate(world, home)
        dump(world, os.environ.get("FLYWHEEL_CONFORMANCE_DUMP"))
        yield world
    finally:
        server.stop()


def dump(world: World, folder: str | None) -> None:
    """With FLYWHEEL_CONFORMANCE_DUMP=DIR, keep what was stored, normalised and exported (to read)."""
    if not folder:
        return
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for name, flows in world.tasks.items():
        for flow, task in flows.items():
            (out / f"{name}.{flow}.task.json").write_text(json.dumps(task, indent=1, default=str))
            normal = normal_task(task, name, flow)
            (out / f"{name}.{flow}.normal.json").write_text(json.dumps(normal, indent=1, default=str))
    for name, exported in world.exported.items():
        (out / f"{name}.export.json").write_text(json.dumps(exported, indent=1, default=str))


# ------------------------------------------------------------ normalising


def _json(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _content(value: Any) -> Any:
    """Text content as a string; an empty one as None (an assistant that only calls tools)."""
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in value):
        value = "".join(str(p.get("text", "")) for p in value)
    return value if value not in ("", None) else None


def normal_message(message: Any) -> Any:
    """A chat message, as OpenAI chat says it: role, content, tool calls (arguments parsed), tool_call_id."""
    if not isinstance(message, dict):
        return message
    out: dict[str, Any] = {"role": message.get("role"), "content": _content(message.get("content"))}
    if message.get("tool_calls"):
        out["tool_calls"] = [
            {
                "id": call.get("id"),
                "type": call.get("type"),
                "name": (call.get("function") or {}).get("name"),
                "arguments": _json((call.get("function") or {}).get("arguments")),
            }
            if isinstance(call, dict)
            else call
            for call in message["tool_calls"]
        ]
    if message.get("tool_call_id") is not None or message.get("role") == "tool":
        out["tool_call_id"] = message.get("tool_call_id")
    extra = set(message) - {"role", "content", "tool_calls", "tool_call_id", "name", "refusal", "annotations"}
    if extra:
        out["unexpected keys"] = sorted(extra)
    return out


def answer_message(response: Any) -> Any:
    """The model's answer in a stored response: a chat completion's first choice."""
    if response is None:
        return None
    if isinstance(response, dict) and isinstance(response.get("choices"), list) and response["choices"]:
        return normal_message(response["choices"][0].get("message"))
    return {"not a chat completion": response}


def normal_tools(tools: Any) -> Any:
    if not tools:
        return None
    return [
        {"type": t.get("type"), **(t.get("function") or {"not OpenAI tool form": t})}
        if isinstance(t, dict)
        else t
        for t in tools
    ]


def normal_error(error: Any) -> Any:
    """``Type: message`` on one line; the type's module and LangChain's wrapper type aside."""
    if error is None:
        return None
    text = str(error)
    match = re.match(r"^([\w.]+): (.*)$", text, re.S)
    return {
        "message": match.group(2) if match else text,
        "typed": bool(match and re.search(r"(Error|Exception)$", match.group(1))),
        "one line": "\n" not in text,
    }


def normal_step(step: dict[str, Any], hidden: set[str], reference: bool) -> dict[str, Any]:
    data = step.get("data") or {}
    if step["kind"] == "llm_call":
        out = {
            "kind": "llm_call",
            "model": step.get("name") or data.get("model"),
            "messages": [normal_message(m) for m in data.get("messages") or []],
            "tools": normal_tools(data.get("tools")),
            "answer": answer_message(data.get("response")),
            "input_tokens": data.get("input_tokens"),
            "output_tokens": data.get("output_tokens"),
            "cost": None if data.get("cost") is None else round(float(data["cost"]), 12),
            "error": normal_error(step.get("error")),
        }
        for name in hidden:  # the reference's value aside; the others' must be empty, not invented
            out[name] = "(not emitted)" if reference or out[name] is None else out[name]
        return out
    if step["kind"] == "tool_call":
        return {
            "kind": "tool_call",
            "name": step.get("name") or data.get("name"),
            "arguments": _json(data.get("arguments")),
            "output": _json(data.get("output")),
            "error": normal_error(step.get("error")),
        }
    return {"kind": step["kind"], "data": data}


def normal_task(task: dict[str, Any] | None, instrumentation: str, flow: str, reference: bool = False) -> Any:
    """A stored task as compared: no ids, times or workload; the flow's session as a yes/no."""
    if task is None:
        return None
    hidden = NOT_EMITTED.get(instrumentation, set())
    steps = sorted(task.get("steps") or [], key=lambda s: (s["seq"], s["started_at"]))
    return {
        "input": _json(task.get("input")),
        "output": _json(task.get("output")),
        "success": task.get("success"),
        "error": normal_error(task.get("error")),
        "session is the flow's": task.get("session_id") == session_id(instrumentation, flow),
        "user_id": (task.get("metadata") or {}).get("user_id"),
        "steps": [normal_step(s, hidden, reference) for s in steps],
    }


def differences(got: Any, want: Any, path: str = "task") -> list[str]:
    """Where two normalised values differ, one line each: ``path: got ... want ...``."""
    if isinstance(got, dict) and isinstance(want, dict):
        return [
            line
            for k in sorted(set(got) | set(want), key=str)
            for line in differences(got.get(k, "(absent)"), want.get(k, "(absent)"), f"{path}.{k}")
        ]
    if isinstance(got, list) and isinstance(want, list):
        if len(got) != len(want):
            kinds = [g.get("kind", g.get("role")) if isinstance(g, dict) else g for g in got]
            wanted = [w.get("kind", w.get("role")) if isinstance(w, dict) else w for w in want]
            return [f"{path}: {len(got)} items {kinds}, want {len(want)} {wanted}"]
        return [
            line
            for i, (g, w) in enumerate(zip(got, want, strict=True))
            for line in differences(g, w, f"{path}[{i}]")
        ]
    return [] if got == want else [f"{path}: got {got!r:.300}, want {want!r:.300}"]


# ------------------------------------------------------------ the tests


CASES = [(name, flow) for name in INSTRUMENTATIONS for flow in FLOWS]


@pytest.mark.parametrize("flow", FLOWS)
def test_reference_sdk_task_is_complete(world: World, flow: str) -> None:
    """The reference itself: what fw.instrument_openai stores for each flow."""
    task = world.tasks[REFERENCE][flow]
    assert task is not None, f"the SDK's {flow} task was not stored: {world.logs.get(REFERENCE)}"
    ref = normal_task(task, REFERENCE, flow)
    assert ref["input"] == QUESTIONS[flow] and ref["user_id"] == USER_ID and ref["session is the flow's"]
    calls = [s for s in ref["steps"] if s["kind"] == "llm_call"]
    assert [s["kind"] for s in ref["steps"]] == (
        ["llm_call", "tool_call", "llm_call"] if flow == "tool" else ["llm_call"]
    )
    assert all(c["messages"][0]["role"] == "system" for c in calls)
    if flow == "error":
        assert ref["success"] is False and ref["error"]["typed"] and calls[0]["answer"] is None
    else:
        assert ref["success"] is True and all(c["input_tokens"] and c["output_tokens"] for c in calls)
        assert all(c["cost"] is not None for c in calls), "gpt-4o-mini is priced: cost at ingest"


@pytest.mark.parametrize(("instrumentation", "flow"), CASES)
def test_stored_task_equals_the_sdk_task(world: World, instrumentation: str, flow: str) -> None:
    line = world.runs.get(instrumentation, {}).get(flow)
    assert line is not None, f"{instrumentation} did not run {flow}: {world.logs.get(instrumentation)}"
    assert (line["error"] is not None) == (flow == "error"), line
    task = world.tasks[instrumentation][flow]
    assert task is not None, f"no task stored for {instrumentation} {flow} (trace {line['trace_id']})"
    expected = normal_task(world.tasks[REFERENCE][flow], instrumentation, flow, reference=True)
    assert expected is not None
    expected["session is the flow's"] = True
    assert differences(normal_task(task, instrumentation, flow), expected) == []


def _example_key(example: dict[str, Any], hidden: set[str]) -> str:
    messages = [normal_message(m) for m in example.get("messages") or []]
    tools = "(not emitted)" if "tools" in hidden else normal_tools(example.get("tools"))
    return json.dumps({"messages": messages, "tools": tools}, sort_keys=True)


@pytest.mark.parametrize("instrumentation", INSTRUMENTATIONS)
def test_curate_yields_the_sdk_examples(world: World, instrumentation: str) -> None:
    reference = world.exported.get(REFERENCE)
    assert isinstance(reference, list) and reference, f"the SDK's traffic gave no examples: {reference}"
    got = world.exported.get(instrumentation)
    assert isinstance(got, list), f"{world.curated.get(instrumentation)} / {got}"
    hidden = NOT_EMITTED.get(instrumentation, set())
    assert sorted(_example_key(e, hidden) for e in got) == sorted(_example_key(e, hidden) for e in reference)


def openai_jsonl_problems(example: dict[str, Any]) -> list[str]:
    """Why a line would be refused by OpenAI's chat fine-tuning (the checks its validator makes)."""
    problems: list[str] = []
    messages = example.get("messages")
    if not isinstance(messages, list) or not messages:
        return ["no messages"]
    unknown = set(example) - {"messages", "tools", "parallel_tool_calls"}
    if unknown:
        problems.append(f"unknown keys {sorted(unknown)}")
    offered = {
        t.get("function", {}).get("name")
        for t in example.get("tools") or []
        if isinstance(t, dict) and t.get("type") == "function"
    }
    if len(offered) != len(example.get("tools") or []):
        problems.append("a tool not in OpenAI's {type: function, function: {...}} form")
    called: set[str] = set()
    for i, m in enumerate(messages):
        role = m.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            problems.append(f"message {i}: role {role!r}")
        if set(m) - {"role", "content", "tool_calls", "tool_call_id", "name", "weight"}:
            problems.append(f"message {i}: keys {sorted(m)}")
        if role in ("system", "user") and not isinstance(m.get("content"), str | list):
            problems.append(f"message {i}: {role} without content")
        if role == "assistant":
            if not m.get("content") and not m.get("tool_calls"):
                problems.append(f"message {i}: an assistant message with neither content nor tool calls")
            for call in m.get("tool_calls") or []:
                function = call.get("function") or {}
                if not call.get("id") or call.get("type") != "function" or not function.get("name"):
                    problems.append(f"message {i}: a tool call without id, type or name: {call}")
                if not isinstance(function.get("arguments"), str):
                    problems.append(f"message {i}: tool call arguments not a JSON string")
                if "tools" in example and function.get("name") not in offered:
                    problems.append(f"message {i}: calls {function.get('name')!r}, not offered in tools")
                called.add(call.get("id"))
        if role == "tool":
            if m.get("tool_call_id") not in called:
                problems.append(f"message {i}: a tool message without the tool_call_id of an earlier call")
            if not isinstance(m.get("content"), str):
                problems.append(f"message {i}: tool content not a string")
    if messages[-1].get("role") != "assistant":
        problems.append("the last message is not the assistant's")
    return problems


@pytest.mark.parametrize("instrumentation", [REFERENCE, *INSTRUMENTATIONS])
def test_export_is_valid_openai_fine_tuning_jsonl(world: World, instrumentation: str) -> None:
    got = world.exported.get(instrumentation)
    assert isinstance(got, list) and got, f"{world.curated.get(instrumentation)} / {got}"
    problems = {i: p for i, e in enumerate(got) if (p := openai_jsonl_problems(e))}
    assert problems == {}
    assert any(e.get("tools") for e in got) or "tools" in NOT_EMITTED.get(instrumentation, set())
    assert all(e["messages"][0]["role"] == "system" for e in got), "the system prompt is part of the input"


@pytest.mark.parametrize("instrumentation", [REFERENCE, *INSTRUMENTATIONS])
def test_every_page_answers_200(world: World, instrumentation: str) -> None:
    name = workload(instrumentation)
    pages = [f"/ui/tasks/{t['id']}" for t in world.tasks[instrumentation].values() if t is not None]
    assert len(pages) == len(FLOWS), f"tasks missing: {world.tasks[instrumentation]}"
    pages += [
        f"/ui/tasks?workload={name}",
        f"/ui/review?workload={name}",
        f"/ui/review/next?workload={name}",
        f"/ui/dashboard?workload={name}",
        "/ui/review",
        "/ui/tasks",
    ]
    statuses = {page: world.get(page, follow_redirects=True).status_code for page in pages}
    assert statuses == dict.fromkeys(pages, 200)
