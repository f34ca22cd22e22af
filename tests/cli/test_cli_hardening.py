"""The command line on bad input and bad circumstances: no traceback, a message
that says what is wrong and what to do, and an exit status that tells the kind
of failure apart. Plus the time filters, which must mean the same instant on
every database."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from importlib.metadata import version

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text
from tests.conftest import PG_ADMIN_URL, free_port
from tests.live import LiveServer
from typer.testing import CliRunner

from flywheel.cli import app
from flywheel.errors import InvalidInput
from flywheel.ingest.importers import openai_line_events


@pytest.fixture
def cli(settings, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("FLYWHEEL_HOME", str(settings.home))
    monkeypatch.delenv("FLYWHEEL_URL", raising=False)
    runner = CliRunner()

    def run(*args, code=0):
        result = runner.invoke(app, list(args), catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result

    return run


def _main(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``flywheel ...`` as a user runs it: through ``main()``, in a fresh process
    (stderr with its lines, wrapped to the terminal, joined again)."""
    out = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", *args],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], **env},
        timeout=timeout,
    )
    out.stderr = " ".join(out.stderr.split())
    return out


# ------------------------------------------------------------------ import

_TRANSCRIPT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def test_import_reports_a_line_whose_messages_is_a_string_and_keeps_the_good_ones(cli, store, tmp_path):
    path = tmp_path / "log.jsonl"
    lines = [
        _TRANSCRIPT,
        {"messages": "hi there"},
        {"messages": ["hi", {"role": "assistant", "content": "x"}]},
        {"request": {"messages": "hi"}, "response": {}},
        {"request": "hi", "response": {}},
        {"request": {"messages": []}, "response": "ok"},
        {"messages": [{"role": "user", "content": "ts"}], "timestamp": 1e30},
        {**_TRANSCRIPT, "model": "m2"},
    ]
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")
    result = cli("import", str(path), "--workload", "chat", "--json", code=1)
    report = json.loads(result.stdout)
    assert (report["lines"], report["tasks"], report["events_stored"]) == (8, 2, 4)
    errors = {e["line"]: e["message"] for e in report["errors"]}
    assert errors == {
        2: "'messages' must be a list of message objects, not a string",
        3: "'messages'[0] must be a message object, not a string",
        4: "'request.messages' must be a list of message objects, not a string",
        5: "'request' must be an object, not a string",
        6: "'response' must be an object, not a string",
        7: errors[7],
    }
    assert errors[7].startswith("'timestamp' 1e+30 is not a time")
    assert len(store.list_tasks(workload="chat")[0]) == 2
    plain = cli("import", str(path), "--workload", "chat", code=1).output
    assert "line 2: (line): 'messages' must be a list of message objects, not a string" in plain


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)
_keys = st.sampled_from(
    ["request", "response", "messages", "tools", "model", "workload_id", "timestamp", "usage", "choices"]
)
_record = st.recursive(_json, lambda inner: st.dictionaries(_keys, inner, max_size=4), max_leaves=12)


@hypothesis_settings(max_examples=400, deadline=None)
@given(_record)
def test_any_json_line_is_events_or_a_clear_error(record):
    line = orjson.dumps(record)
    try:
        events = openai_line_events(record, line, "w")
    except InvalidInput as exc:
        assert exc.message
        return
    assert [e["type"] for e in events] == ["task_finished", "llm_call"]
    assert isinstance(events[0]["input"], list)


def test_otlp_import_counts_a_line_that_is_not_otlp_as_bad(cli, store, tmp_path):
    span = {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "b7ad6b7169203331",
        "name": "agent",
        "startTimeUnixNano": "1760000000000000000",
        "endTimeUnixNano": "1760000000500000000",
        "attributes": [{"key": "input.value", "value": {"stringValue": "q"}}],
    }
    export = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "bot"}}]},
                "scopeSpans": [{"spans": [span]}],
            }
        ]
    }
    path = tmp_path / "traces.jsonl"
    path.write_bytes(
        b"\n".join(
            [
                orjson.dumps(export),
                b'{"messages": [{"role": "user", "content": "an openai line"}]}',
                b"[]",
                b"null",
                b'{"resourceSpans": "nope"}',
                b"{oops",
            ]
        )
        + b"\n"
    )
    report = json.loads(cli("import", str(path), "--format", "otlp-json", "--json", code=1).stdout)
    assert (report["lines"], report["tasks"]) == (6, 1)
    errors = {e["line"]: e["message"] for e in report["errors"]}
    assert sorted(errors) == [2, 3, 4, 5, 6]
    assert errors[2].startswith("not an OTLP/JSON export") and "['messages']" in errors[2]
    assert (
        errors[3]
        == "not an OTLP/JSON export: expected an object with resourceSpans or resourceLogs, got a list"
    )
    assert errors[5] == "'resourceSpans' must be a list, not a string"
    assert errors[6].startswith("not JSON")
    assert store.list_tasks(workload="bot")[0][0].input == "q"


# ------------------------------------------------ the database, the server


@pytest.fixture
def empty_db_url(backend, tmp_path):
    """A database with no schema at all, of the backend under test."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    name = f"flywheel_empty_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_an_unmigrated_database_without_auto_migrate_says_run_db_upgrade(empty_db_url, tmp_path):
    env = {
        "FLYWHEEL_DATABASE_URL": empty_db_url,
        "FLYWHEEL_HOME": str(tmp_path),
        "FLYWHEEL_AUTO_MIGRATE": "false",
    }
    for command in (["stats"], ["serve", "--port", str(free_port())]):
        out = _main(*command, env=env)
        assert out.returncode == 1, (command, out.stderr)
        assert "has no schema yet" in out.stderr and "run 'flywheel db upgrade'" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr and "serving on" not in out.stderr
    assert _main("db", "upgrade", env=env).returncode == 0
    stats = _main("stats", "--json", env=env)
    assert stats.returncode == 0 and json.loads(stats.stdout)["workloads"] == []


def test_serve_reports_a_port_in_use_and_exits_non_zero(settings, tmp_path):
    server = LiveServer(settings.database_url, tmp_path / "srv").start()
    try:
        env = {
            "FLYWHEEL_DATABASE_URL": settings.database_url,
            "FLYWHEEL_HOME": str(tmp_path / "other"),
            "FLYWHEEL_PORT": str(server.port),
        }
        out = _main("serve", env=env)
    finally:
        server.stop()
    assert f"serving on http://127.0.0.1:{server.port}" in server.log.read_text()
    assert out.returncode == 1
    assert f"cannot listen on 127.0.0.1:{server.port}: port {server.port} is already in use" in out.stderr
    assert "what to do:" in out.stderr and "--port" in out.stderr
    assert "serving on" not in out.stderr + out.stdout and "Traceback" not in out.stderr


def test_a_free_port_is_checked_before_serving(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"FLYWHEEL_DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "FLYWHEEL_HOME": str(tmp_path)}
        out = _main("serve", "--port", str(port), env=env)
    assert out.returncode == 1 and f"port {port} is already in use" in out.stderr
    assert "serving on" not in out.stderr


# ------------------------------------------------------ exit statuses, version


def test_not_found_and_usage_errors_have_their_own_exit_status(tmp_path):
    env = {"FLYWHEEL_DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "FLYWHEEL_HOME": str(tmp_path)}
    missing = _main("tasks", "show", "nope", env=env)
    assert missing.returncode == 3 and "task 'nope' not found" in missing.stderr
    usage = _main("tasks", "list", "--limit", "0", env=env)
    assert usage.returncode == 2 and "--limit" in usage.stderr
    helped = _main("--help", env=env)
    assert "Exit status" in helped.stdout and "3 not found" in helped.stdout


def test_version_comes_from_the_package_metadata(tmp_path):
    out = _main("--version", env={"FLYWHEEL_HOME": str(tmp_path)})
    assert out.returncode == 0 and out.stdout.strip() == f"data-flywheel {version('data-flywheel')}"


# ------------------------------------------------------------- time filters


def test_since_and_until_with_an_offset_mean_the_same_instant_on_every_database(cli, settings, store):
    from datetime import UTC, datetime, timedelta

    from fastapi.testclient import TestClient

    from flywheel.ingest import Ingestor
    from flywheel.server import create_app

    start = datetime(2026, 5, 1, 4, 30, tzinfo=UTC)
    events = [
        {
            "type": "task_finished",
            "id": f"t{hour}",
            "workload": "clock",
            "session_id": "s",
            "started_at": (start + timedelta(hours=hour)).isoformat(),
            "ended_at": (start + timedelta(hours=hour, minutes=1)).isoformat(),
            "output": hour,
            "success": True,
        }
        for hour in range(3)  # 04:30, 05:30 and 06:30 UTC
    ]
    assert Ingestor(store, settings).ingest(events).stored == 3
    since, until = "2026-05-01T10:00:00+05:00", "2026-05-01T11:00:00+05:00"  # 05:00 and 06:00 UTC

    def ids(tasks):
        return sorted(t.id if hasattr(t, "id") else t["id"] for t in tasks)

    aware = datetime.fromisoformat
    assert ids(store.list_tasks(since=aware(since), until=aware(until))[0]) == ["t1"]
    assert ids(store.list_tasks(since=aware("2026-05-01T01:00:00-05:00"))[0]) == ["t2"]  # 06:00 UTC
    assert ids(store.list_tasks(until=datetime(2026, 5, 1, 5, 0))[0]) == ["t0"]  # naive: UTC
    key, _ = store.create_key("reader", ["review"])
    with TestClient(create_app(settings, store=store), base_url="http://127.0.0.1") as client:
        answer = client.get(
            "/v1/tasks", params={"since": since, "until": until}, headers={"Authorization": f"Bearer {key}"}
        )
    assert answer.status_code == 200, answer.text
    assert ids(answer.json()["tasks"]) == ["t1"]
    listed = json.loads(cli("tasks", "list", "--since", since, "--json").stdout)
    assert ids(listed["tasks"]) == ["t1", "t2"]
