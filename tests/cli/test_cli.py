"""The CLI against a temporary database, through Typer's runner."""

import json

import orjson
import pytest
from typer.testing import CliRunner

from flywheel.cli import app


@pytest.fixture
def cli(settings, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("FLYWHEEL_HOME", str(settings.home))
    monkeypatch.delenv("FLYWHEEL_URL", raising=False)
    runner = CliRunner()

    def run(*args, ok=True):
        result = runner.invoke(app, list(args), catch_exceptions=not ok)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return run


def test_every_command_has_help(cli):
    for command in (
        ["serve"],
        ["db", "upgrade"],
        ["keys", "create"],
        ["keys", "list"],
        ["keys", "revoke"],
        ["tasks", "list"],
        ["tasks", "show"],
        ["stats"],
        ["import"],
        ["demo"],
        ["example"],
        ["cycle", "run"],
        ["cycle", "schedule"],
        ["cycle", "list"],
        ["cycle", "show"],
    ):
        assert "Usage" in cli(*command, "--help").output


def test_db_upgrade_reports_the_revision(cli):
    out = json.loads(cli("db", "upgrade", "--json").stdout)
    assert out["to"] == "0012"


def test_keys_create_list_revoke(cli, store):
    created = json.loads(cli("keys", "create", "--scope", "ingest", "--name", "agent", "--json").stdout)
    assert created["key"].startswith("fw_") and created["scopes"] == ["ingest"]
    listed = json.loads(cli("keys", "list", "--json").stdout)
    assert [k["name"] for k in listed] == ["agent"]
    assert created["key"] not in cli("keys", "list").output
    cli("keys", "revoke", created["id"])
    assert store.find_key(created["key"]) is None
    bad = cli("keys", "create", "--scope", "root", ok=False)
    assert "scopes must be some of ['ingest', 'review', 'admin']" in str(bad.exception)


def test_example_then_tasks_and_stats(cli):
    out = json.loads(cli("example", "--tasks", "30", "--json").stdout)
    assert out["tasks"] == 30 and out["delivered"] is True
    assert out["stats"]["tasks"] == 30 and out["sdk"]["dropped"] == 0
    listed = json.loads(cli("tasks", "list", "--limit", "5", "--json").stdout)
    assert len(listed["tasks"]) == 5 and listed["next_cursor"]
    task_id = listed["tasks"][0]["id"]
    shown = json.loads(cli("tasks", "show", task_id, "--json").stdout)
    assert shown["id"] == task_id and shown["steps"]
    assert "support-triage" in cli("stats").output
    assert task_id in cli("tasks", "show", task_id).output


def test_main_prints_errors_with_what_to_do(settings, tmp_path):
    import subprocess
    import sys

    env = {
        "PATH": "/usr/bin:/bin",
        "FLYWHEEL_DATABASE_URL": "mysql://nowhere/db",
        "FLYWHEEL_HOME": str(tmp_path),
    }
    out = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "stats"], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 1
    assert "unsupported database 'mysql'" in out.stderr and "what to do" in out.stderr
    assert "Traceback" not in out.stderr
    env["FLYWHEEL_DATABASE_URL"] = f"sqlite:///{tmp_path}/x.db"
    out = subprocess.run(
        [sys.executable, "-m", "flywheel.cli", "tasks", "show", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 3 and "task 'nope' not found" in out.stderr  # 3: not found


def test_serve_refuses_no_auth_on_a_public_address(cli):
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--no-auth"])
    assert result.exit_code != 0
    assert "refusing to serve without authentication" in str(result.exception)


def test_import_openai_jsonl_is_idempotent_and_reports_bad_lines(cli, store, tmp_path):
    good = {
        "workload_id": "tool-router",
        "client_id": "c1",
        "timestamp": 1_760_000_000,
        "request": {
            "model": "llama-70b",
            "messages": [{"role": "user", "content": "weather in Rome?"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
        },
        "response": {
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                            }
                        ],
                    },
                }
            ],
            "usage": {"prompt_tokens": 50, "completion_tokens": 12},
        },
    }
    transcript = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    path = tmp_path / "log.jsonl"
    path.write_bytes(
        b"\n".join([orjson.dumps(good), b"{broken", orjson.dumps(transcript), b"[1, 2]"]) + b"\n"
    )
    first = cli("import", str(path), "--workload", "chat", "--json", ok=False)
    report = json.loads(first.stdout)
    assert first.exit_code == 1
    assert (report["lines"], report["tasks"], report["events_stored"]) == (4, 2, 4)
    assert [e["line"] for e in report["errors"]] == [2, 4]
    again = json.loads(cli("import", str(path), "--workload", "chat", "--json", ok=False).stdout)
    assert (again["events_stored"], again["events_duplicate"]) == (0, 4)
    tasks, _ = store.list_tasks(workload="tool-router")
    task = store.get_task(tasks[0].id)
    assert task.session_id == "c1" and task.output["tool_calls"][0]["function"]["name"] == "get_weather"
    assert task.steps[0].data["input_tokens"] == 50
    assert store.list_tasks(workload="chat")[0][0].output == {"role": "assistant", "content": "hello"}


def test_import_otlp_json(cli, store, tmp_path):
    export = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "bot"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "0af7651916cd43dd8448eb211c80319c",
                                "spanId": "b7ad6b7169203331",
                                "name": "agent",
                                "startTimeUnixNano": "1760000000000000000",
                                "endTimeUnixNano": "1760000000500000000",
                                "attributes": [{"key": "input.value", "value": {"stringValue": "q"}}],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    path = tmp_path / "traces.json"
    path.write_bytes(orjson.dumps(export) + b"\n")
    report = json.loads(cli("import", str(path), "--format", "otlp-json", "--json").stdout)
    assert report["tasks"] == 1 and report["errors"] == []
    task = store.list_tasks(workload="bot")[0][0]
    assert task.duration_ms == 500.0 and task.input == "q"


def test_simulate_with_the_replay_teacher_goes_through_the_sdk(cli, store):
    out = json.loads(
        cli(
            "simulate",
            "--model",
            "replay",
            "--tasks",
            "20",
            "--sessions",
            "4",
            "--per-category",
            "4",
            "--teacher-error-rate",
            "0.5",
            "--correction-rate",
            "1",
            "--json",
        ).output
    )
    assert out["simulated"] is True and out["tasks"] == 20
    stats = store.stats("bfcl")
    assert stats["tasks"] == 20 and stats["steps"]["llm_call"] >= 20
    assert stats["feedback"] == out["feedback"] + out["corrections"]  # an edit is feedback too
    assert stats["corrections"] == out["corrections"] == 20 - out["correct"]
    tasks, _ = store.list_tasks(workload="bfcl", limit=1)
    assert tasks[0].metadata["simulated"] is True and tasks[0].metadata["item_id"]


def test_simulate_refuses_unknown_categories(cli):
    result = cli("simulate", "--categories", "simple_cobol", ok=False)
    assert result.exit_code != 0 and "simple_cobol" in result.output


def test_curate_and_datasets_commands(cli, tmp_path):
    cli("simulate", "--model", "replay", "--tasks", "40", "--sessions", "8", "--per-category", "6", "--json")
    first = json.loads(cli("curate", "--workload", "bfcl", "--json").stdout)
    assert first["number"] == 1 and first["examples"] > 0
    cli("simulate", "--model", "replay", "--tasks", "10", "--sessions", "8", "--seed", "5", "--json")
    second = json.loads(cli("curate", "--workload", "bfcl", "--json").stdout)
    assert second["tasks_processed"] == 10 and second["carried_over"] > 0
    listed = json.loads(cli("datasets", "list", "--json").stdout)
    assert [d["number"] for d in listed] == [1, 2]
    shown = json.loads(cli("datasets", "show", "bfcl@1", "--json").stdout)
    assert shown["rules_hash"] and "rules:" in shown["rules"]
    diff = json.loads(cli("datasets", "diff", "bfcl@1", "bfcl@2", "--json").stdout)
    assert diff["added"] >= 0 and diff["rules_changed"] is False
    out = tmp_path / "train.jsonl"
    exported = json.loads(cli("datasets", "export", "bfcl", "--out", str(out), "--json").stdout)
    assert exported["written"] == len(out.read_text().splitlines())
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - name: x\n    when: sometimes\n    action: review\n")
    result = cli("curate", "--workload", "bfcl", "--rules", str(bad), ok=False)
    assert "unknown signal 'sometimes'" in str(result.exception)


@pytest.mark.model
def test_versions_deploy_and_eval_commands_with_the_real_student(cli, tmp_path):
    cli(
        "simulate",
        "--model",
        "replay",
        "--tasks",
        "24",
        "--sessions",
        "24",
        "--categories",
        "simple_python",
        "--per-category",
        "12",
        "--json",
    )
    rules = tmp_path / "rules.yaml"
    from flywheel.curate import DEFAULT_RULES

    rules.write_text(DEFAULT_RULES.replace("splits: {eval: 0.2", "splits: {eval: 0.3"))
    cli("curate", "--workload", "bfcl", "--rules", str(rules), "--json")
    base_config = tmp_path / "base.json"
    base_config.write_text(json.dumps({"model": "local", "max_tokens": 48}))
    shot_config = tmp_path / "shots.json"
    shot_config.write_text(
        json.dumps(
            {
                "model": "local",
                "max_tokens": 48,
                "few_shot": [
                    {
                        "question": "What is the weather in Paris?",
                        "calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}],
                    }
                ],
            }
        )
    )
    base = json.loads(
        cli("versions", "create", "--workload", "bfcl", "--config", str(base_config), "--json").output
    )
    cand = json.loads(
        cli(
            "versions",
            "create",
            "--workload",
            "bfcl",
            "--config",
            str(shot_config),
            "--parent",
            base["id"],
            "--json",
        ).output
    )
    assert (base["number"], cand["number"]) == (1, 2)
    diff = json.loads(cli("versions", "diff", "bfcl@1", "bfcl@2", "--json").stdout)
    assert set(diff["changes"]) == {"few_shot"}
    cli("deploy", "promote", "bfcl@1", "--workload", "bfcl")
    cli("deploy", "canary", "bfcl@2", "--workload", "bfcl", "--share", "0.25")
    status = json.loads(cli("deploy", "status", "--workload", "bfcl", "--json").stdout)
    assert status["stable_version"] == base["id"] and status["canary_version"] == cand["id"]
    result = json.loads(
        cli("eval", "--workload", "bfcl", "--candidate", "bfcl@2", "--workers", "1", "--json").output
    )
    assert result["baseline_version"] == base["id"] and result["items"] > 0
    assert result["ci95"][0] <= result["difference"] <= result["ci95"][1]
    assert isinstance(result["gate"]["promote"], bool) and result["gate"]["checks"]
    cli("deploy", "rollback", "--workload", "bfcl")
    assert (
        json.loads(cli("deploy", "status", "--workload", "bfcl", "--json").stdout)["canary_version"] is None
    )


def test_deploy_watch_without_a_canary_says_so(cli):
    out = json.loads(cli("deploy", "watch", "--workload", "nothing-here", "--json").stdout)
    assert out["action"] == "none" and "no canary" in out["reason"]


def test_improve_builds_a_few_shot_candidate(cli, tmp_path):
    from flywheel.curate import DEFAULT_RULES

    cli(
        "simulate", "--model", "replay", "--tasks", "80", "--sessions", "40", "--per-category", "16", "--json"
    )
    rules = tmp_path / "rules.yaml"
    rules.write_text(DEFAULT_RULES.replace("few_shot: 0.1", "few_shot: 0.4"))
    cli("curate", "--workload", "bfcl", "--rules", str(rules), "--json")
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"model": "local"}))
    cli("versions", "create", "--workload", "bfcl", "--config", str(base), "--json")
    cli("deploy", "promote", "bfcl@1", "--workload", "bfcl")
    out = json.loads(cli("improve", "--workload", "bfcl", "--k", "3", "--json").stdout)
    assert out["number"] == 2 and out["strategy"] == "few_shot"
    assert 1 <= len(out["changes"]) <= 3  # fewer when the token budget is spent first
    shown = json.loads(cli("versions", "show", "bfcl@2", "--json").stdout)
    assert len(shown["config"]["few_shot"]) == len(out["changes"]) and shown["parent"] == out["parent"]
