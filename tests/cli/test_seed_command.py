"""``flywheel seed`` against a temporary database: the replay teacher on BFCL
categories, a teacher behind a real OpenAI-compatible HTTP server on a free port,
bad task files, idempotence."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from flywheel.cli import app
from flywheel.errors import InvalidInput

TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a thing up.",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
    },
}


@pytest.fixture
def cli(settings, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("FLYWHEEL_HOME", str(settings.home))
    monkeypatch.delenv("FLYWHEEL_URL", raising=False)
    monkeypatch.delenv("FLYWHEEL_TEACHER_API_KEY", raising=False)
    runner = CliRunner()

    def run(*args, ok=True):
        result = runner.invoke(app, list(args), catch_exceptions=not ok)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return run


class _Teacher(BaseHTTPRequestHandler):
    """A tiny OpenAI-compatible chat completions endpoint: it calls the first tool
    offered with the question as ``q``; 401 without the right key."""

    seen: list[tuple[str, dict]] = []

    def do_POST(self) -> None:  # noqa: N802 (the handler's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.headers.get("Authorization", ""), body))
        if self.headers.get("Authorization") != "Bearer sk-teacher":
            self._send(
                401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}
            )
            return
        question = body["messages"][-1]["content"]
        name = body["tools"][0]["function"]["name"]
        call = {
            "id": "c0",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps({"q": question})},
        }
        self._send(
            200,
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                        "finish_reason": "tool_calls",
                        "logprobs": None,
                    }
                ],
                "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39},
            },
        )

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def teacher_url() -> Iterator[str]:
    _Teacher.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Teacher)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_seed_with_the_replay_teacher_on_bfcl_then_again_stores_nothing_twice(cli, store):
    args = ["seed", "--workload", "bfcl", "--teacher-model", "replay", "--categories", "simple_python"]
    first = json.loads(cli(*args, "--sample", "20", "--json").stdout)
    assert first["seeded"] == 20 and first["review_items"] == 20 and first["label"] == "simulated"
    assert first["source"] == "BFCL simple_python" and first["failed"] == 0
    again = json.loads(cli(*args, "--sample", "20", "--json").stdout)
    assert again["seeded"] == 0 and again["already_seeded"] == 20 and again["review_items"] == 0
    assert store.stats("bfcl")["workloads"][0]["tasks"] == 20
    shown = json.loads(cli("review", "list", "--workload", "bfcl", "--limit", "100", "--json").stdout)
    assert len(shown) == 20 and {i["rule"] for i in shown} == {"seed (replay, simulated)"}
    text = " ".join(cli(*args, "--sample", "25").output.split())  # unwrapped
    assert "seeded 5 tasks of bfcl" in text and "20 seeded before" in text and "simulated labels" in text
    assert "flywheel review list --workload bfcl" in text


def test_seed_logged_traffic_with_a_teacher_over_http(cli, store, teacher_url, tmp_path, monkeypatch):
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps({"question": f"find {i}", "tools": [TOOL]}) + "\n" for i in range(5)))
    args = ["seed", "--workload", "shop", "--teacher-model", "big-1", "--teacher-url", teacher_url]
    refused = cli(*args, "--tasks", str(path), ok=False)
    assert refused.exit_code != 0
    assert "failed on the first 4 inputs" in refused.exception.message
    assert "FLYWHEEL_TEACHER_API_KEY" in refused.exception.hint
    assert store.stats("shop")["workloads"] == []
    monkeypatch.setenv("FLYWHEEL_TEACHER_API_KEY", "sk-teacher")
    out = json.loads(cli(*args, "--tasks", str(path), "--json").stdout)
    assert out["seeded"] == 5 and out["teacher"] == "big-1" and out["label"] == "teacher"
    assert _Teacher.seen[-1][1]["tools"] == [TOOL]
    task = store.get_task(out["task_ids"][0])
    assert task.metadata["teacher"] == "big-1" and task.metadata["label"] == "teacher"
    assert task.output == [{"name": "lookup", "arguments": {"q": task.input}}]
    # the seeded tasks are now the workload's logged traffic: nothing new to sample from them
    sampled = cli(*args, "--sample", "10", "--json", ok=False)
    assert "has no logged tasks to seed from" in sampled.exception.message


def test_a_bad_task_file_is_refused_with_its_line_and_field(cli, tmp_path, store):
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"question": "fine", "tools": []}\n{"question": "x", "tools": "lookup"}\n')
    result = cli("seed", "--workload", "w", "--teacher-model", "replay", "--tasks", str(path), ok=False)
    assert isinstance(result.exception, InvalidInput)
    assert "tasks.jsonl line 2, field 'tools'" in result.exception.message
    assert store.stats("w")["workloads"] == []


def test_the_replay_teacher_needs_answers(cli, tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"question": "no answer here"}\n')
    result = cli("seed", "--workload", "w", "--teacher-model", "replay", "--tasks", str(path), ok=False)
    assert "no reference answer" in result.exception.message
    both = cli("seed", "--workload", "w", "--teacher-model", "replay", "--tasks", str(path),
               "--categories", "simple_python", ok=False)  # fmt: skip
    assert both.exit_code == 2 and "not both" in both.output


def test_the_main_entry_prints_a_bad_file_with_what_to_do(settings, tmp_path):
    import os
    import subprocess
    import sys

    path = tmp_path / "tasks.jsonl"
    path.write_text("{oops\n")
    env = {**os.environ, "FLYWHEEL_DATABASE_URL": settings.database_url, "FLYWHEEL_HOME": str(settings.home)}
    env.pop("FLYWHEEL_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "seed", "--workload", "w", "--teacher-model", "replay",
         "--tasks", str(path)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "error: 1 problem(s) in" in done.stderr and "tasks.jsonl line 1: not JSON" in done.stderr
    assert "what to do:" in done.stderr and "Traceback" not in done.stderr
