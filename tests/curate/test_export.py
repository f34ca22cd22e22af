"""Exports people can train on: valid OpenAI JSONL whatever instrumentation logged
the traffic, Parquet that Hugging Face datasets loads in the conversational
format, and empty exports that say why instead of writing a broken file."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from tests.curate.test_curate import TOOLS, log
from typer.testing import CliRunner

import flywheel
from flywheel.cli import app
from flywheel.curate import DEFAULT_RULES, curate, parse_rules
from flywheel.curate.export import dpo_line_problems, export_dataset, openai_line_problems, render_messages
from flywheel.errors import InvalidInput


@pytest.fixture
def dataset(settings, store):
    fw = flywheel.init("shop", settings=settings)
    for i in range(12):
        task = log(
            fw,
            f"weather in place {i}?",
            [{"name": "get_weather", "arguments": {"city": f"p{i}"}}],
            session=f"s{i}",
        )
        if i % 4 == 0:
            fw.correct(task, tool_calls=[{"name": "get_weather", "arguments": {"city": f"P{i}"}}])
    fw.flush()
    fw.close()
    result = curate(store, "shop", parse_rules(DEFAULT_RULES))
    return store.dataset_examples(result.dataset_id)


def test_openai_jsonl_is_valid_keeps_the_system_prompt_and_loads_with_hf_datasets(dataset, tmp_path):
    from datasets import load_dataset

    path = tmp_path / "train.jsonl"
    result = export_dataset(dataset, "openai-jsonl", path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert result.written == len(lines) == len(dataset) and not result.skipped
    for line in lines:
        assert openai_line_problems(line) == []
        assert line["messages"][0] == {"role": "system", "content": "sys"}
        assert line["messages"][-1]["tool_calls"][0]["function"]["name"] == "get_weather"
        assert line["tools"] == TOOLS
    loaded = load_dataset("json", data_files=str(path), split="train")
    assert loaded.num_rows == result.written


def test_rules_can_drop_system_prompts(settings, store, tmp_path):
    fw = flywheel.init("shop", settings=settings)
    log(fw, "weather in Oslo?", [{"name": "get_weather", "arguments": {"city": "Oslo"}}])
    fw.flush()
    fw.close()
    rules = parse_rules(DEFAULT_RULES + "drop_system_messages: true\n")
    dataset = store.dataset_examples(curate(store, "shop", rules).dataset_id)
    assert [m["role"] for r in dataset for m in r["messages"]] == ["user"]
    export_dataset(dataset, "openai-jsonl", tmp_path / "out.jsonl")
    line = json.loads((tmp_path / "out.jsonl").read_text())
    assert [m["role"] for m in line["messages"]] == ["user", "assistant"]
    with pytest.raises(InvalidInput, match="drop_system_messages"):
        parse_rules(DEFAULT_RULES + "drop_system_messages: sometimes\n")


def test_dpo_pairs_from_corrections(dataset, tmp_path):
    path = tmp_path / "dpo.jsonl"
    result = export_dataset(dataset, "dpo-jsonl", path)
    pairs = [json.loads(line) for line in path.read_text().splitlines()]
    assert result.written == len(pairs) == 3
    assert result.skipped == {"no rejected answer to pair with": len(dataset) - 3}
    for pair in pairs:
        assert dpo_line_problems(pair) == []
        preferred = json.loads(pair["preferred_output"][0]["tool_calls"][0]["function"]["arguments"])
        rejected = json.loads(pair["non_preferred_output"][0]["tool_calls"][0]["function"]["arguments"])
        assert preferred["city"].startswith("P") and rejected["city"].startswith("p")
        assert [m["role"] for m in pair["input"]["messages"]] == ["system", "user"]


def _is_trl_conversational(row):
    """TRL's SFT data format, conversational language modelling: a ``messages``
    list of {"role", "content"} dicts (what ``trl.is_conversational`` checks),
    the answer last."""
    messages = row["messages"]
    return (
        isinstance(messages, list)
        and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in messages)
        and messages[-1]["role"] == "assistant"
    )


def test_parquet_is_conversational_and_loads_with_hf_datasets(dataset, tmp_path):
    from datasets import load_dataset

    path = tmp_path / "all.parquet"
    result = export_dataset(dataset, "parquet", path)
    table = pq.read_table(path)
    assert result.written == table.num_rows == len(dataset)
    assert "target" not in table.column_names
    assert {"id", "task_id", "session_id", "split", "weight", "kind", "source", "rule", "tools"} <= set(
        table.column_names
    )
    messages_type = table.schema.field("messages").type
    assert pa.types.is_list(messages_type) and pa.types.is_struct(messages_type.value_type)
    assert [f.name for f in messages_type.value_type] == [
        "role",
        "content",
        "tool_calls",
        "tool_call_id",
        "name",
    ]

    loaded = load_dataset("parquet", data_files=str(path), split="train")
    assert loaded.num_rows == len(dataset)
    assert set(loaded["split"]) <= {"train", "eval", "few_shot"}
    for row in loaded:
        assert _is_trl_conversational(row)
        system, user, answer = row["messages"]
        assert system["role"] == "system" and system["content"] == "sys"
        assert user["role"] == "user" and user["content"].startswith("weather in place")
        call = answer["tool_calls"][0]
        assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"])["city"]
        assert json.loads(row["tools"]) == TOOLS
        # the same line OpenAI's format takes, once the nulls of absent fields are gone
        line = {
            "messages": [{k: v for k, v in m.items() if v is not None} for m in row["messages"]],
            "tools": json.loads(row["tools"]),
        }
        assert openai_line_problems(line) == []
    corrected = [r for r in loaded if r["source"] == "correction"]
    assert corrected and all(
        json.loads(r["messages"][-1]["tool_calls"][0]["function"]["arguments"])["city"].startswith("P")
        for r in corrected
    )


def _messy_traffic(fw):
    """Tasks as other instrumentation logs them: pieces missing or in other shapes."""

    def task(question, messages, response, session):
        with fw.task(session_id=session, input=question) as t:
            t.llm_call(model="m", messages=messages, tools=TOOLS, response=response)
            t.finish(output=None, success=True, confidence=0.9)

    def calls(name, arguments):
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "real_1",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(arguments)},
                }
            ],
        }

    task(  # content as parts, an empty assistant message
        "What is the weather in Lisbon today?",
        [
            {"role": "system", "content": [{"type": "text", "text": "You are a weather bot."}]},
            {"role": "user", "content": [{"type": "text", "text": "What is the weather in Lisbon today?"}]},
            {"role": "assistant", "content": None},
            {"role": "user", "content": "Lisbon in Portugal, please"},
        ],
        calls("get_weather", {"city": "Lisbon"}),
        "s-parts",
    )
    task(  # no call ids, arguments as objects, tool messages without tool_call_id
        "Compare the weather in Oslo and Bergen",
        [
            {"role": "system", "content": "You are a weather bot."},
            {"role": "user", "content": "Compare the weather in Oslo and Bergen"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
                    {"function": {"name": "get_weather", "arguments": {"city": "Bergen"}}},
                ],
            },
            {"role": "tool", "content": "Oslo: 3 C"},
            {"role": "tool", "content": {"city": "Bergen", "celsius": 5}},
        ],
        {"role": "assistant", "content": "Oslo is colder than Bergen today, at 3 C against 5 C."},
        "s-noids",
    )
    task(  # the id only on the tool message's side
        "Book a table for four people",
        [
            {"role": "user", "content": "Book a table for four people"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "book_table", "arguments": '{"people": 4}'}}],
            },
            {"role": "tool", "tool_call_id": "toolu_42", "content": "booked"},
        ],
        {"role": "assistant", "content": "Your table for four people is booked for tonight."},
        "s-toolside",
    )
    task(  # beyond repair: arguments that are not JSON
        "Weather in Quito and then book dinner",
        [
            {"role": "user", "content": "Weather in Quito and then book dinner"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{city: Quito"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
        calls("book_table", {"people": 2}),
        "s-badjson",
    )
    task(  # beyond repair: a tool result that answers no call
        "Is it raining in Lima right now",
        [{"role": "user", "content": "Is it raining in Lima right now"}, {"role": "tool", "content": "rain"}],
        calls("get_weather", {"city": "Lima"}),
        "s-orphan",
    )


@pytest.fixture
def messy(settings, store):
    fw = flywheel.init("shop", settings=settings)
    _messy_traffic(fw)
    fw.flush()
    fw.close()
    result = curate(store, "shop", parse_rules(DEFAULT_RULES))
    rows = store.dataset_examples(result.dataset_id)
    assert len(rows) == 5, result.summary
    return result.dataset_id, rows


def _line_about(lines, words):
    return next(line for line in lines if any(words in str(m.get("content")) for m in line["messages"]))


def test_traffic_with_missing_pieces_exports_valid_openai_jsonl(messy, tmp_path):
    from datasets import load_dataset

    _, rows = messy
    path = tmp_path / "train.jsonl"
    result = export_dataset(rows, "openai-jsonl", path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert result.written == len(lines) == 3
    assert result.skipped == {
        "tool call arguments are not a JSON object": 1,
        "a tool message must follow an assistant message with tool calls": 1,
    }
    for line in lines:
        assert openai_line_problems(line) == [], line
        assert line["tools"] == TOOLS

    parts = _line_about(lines, "Lisbon")
    assert [m["role"] for m in parts["messages"]] == ["system", "user", "user", "assistant"]
    assert parts["messages"][0]["content"] == "You are a weather bot."
    assert parts["messages"][1]["content"] == "What is the weather in Lisbon today?"
    assert result.empty_messages_dropped >= 1

    no_ids = _line_about(lines, "Bergen")
    assert no_ids["messages"][0] == {"role": "system", "content": "You are a weather bot."}
    asked, oslo, bergen, answer = no_ids["messages"][2:]
    ids = [c["id"] for c in asked["tool_calls"]]
    assert len(set(ids)) == 2 and [oslo["tool_call_id"], bergen["tool_call_id"]] == ids  # paired in order
    assert [json.loads(c["function"]["arguments"]) for c in asked["tool_calls"]] == [
        {"city": "Oslo"},
        {"city": "Bergen"},
    ]
    assert json.loads(bergen["content"]) == {"city": "Bergen", "celsius": 5}
    assert asked["weight"] == 0 and "weight" not in answer  # only the curated answer is taught
    assert answer["content"].startswith("Oslo is colder")

    tool_side = _line_about(lines, "four people")
    asked, result_message = tool_side["messages"][1:3]
    assert asked["tool_calls"][0]["id"] == result_message["tool_call_id"] == "toolu_42"

    loaded = load_dataset("json", data_files=str(path), split="train")
    assert loaded.num_rows == 3


def test_traffic_with_missing_pieces_exports_conversational_parquet(messy, tmp_path):
    from datasets import load_dataset

    _, rows = messy
    path = tmp_path / "all.parquet"
    result = export_dataset(rows, "parquet", path)
    assert result.written == 3 and sum(result.skipped.values()) == 2
    loaded = load_dataset("parquet", data_files=str(path), split="train")
    assert loaded.num_rows == 3
    for row in loaded:
        assert _is_trl_conversational(row)
        assert all(m["content"] is None or isinstance(m["content"], str) for m in row["messages"])
    lisbon = next(r for r in loaded if "Lisbon" in r["messages"][1]["content"])
    assert lisbon["messages"][0] == {
        "role": "system",
        "content": "You are a weather bot.",
        "tool_calls": None,
        "tool_call_id": None,
        "name": None,
    }


def test_the_export_command_says_what_it_skipped_and_why(messy, settings, monkeypatch, tmp_path):
    dataset_id, _ = messy
    monkeypatch.setenv("FLYWHEEL_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("FLYWHEEL_HOME", str(settings.home))
    monkeypatch.delenv("FLYWHEEL_URL", raising=False)
    runner = CliRunner()
    out = tmp_path / "train.jsonl"
    shown = runner.invoke(app, ["datasets", "export", dataset_id, "--split", "all", "--out", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "wrote 3 examples" in shown.output and "skipped 2 examples" in shown.output
    assert "tool call arguments are not a JSON object" in shown.output
    as_json = runner.invoke(
        app, ["datasets", "export", dataset_id, "--split", "all", "--out", str(out), "--json"]
    )
    data = json.loads(as_json.stdout)
    assert (
        data["written"] == 3
        and data["skipped"]["a tool message must follow an assistant message with tool calls"] == 1
    )

    dpo = tmp_path / "dpo.jsonl"
    failed = runner.invoke(
        app, ["datasets", "export", dataset_id, "--split", "all", "--format", "dpo-jsonl", "--out", str(dpo)]
    )
    assert failed.exit_code != 0 and isinstance(failed.exception, InvalidInput)
    assert "no preference pairs" in str(failed.exception) and "corrections" in str(failed.exception)
    assert not dpo.exists()


@pytest.mark.parametrize("fmt", ["openai-jsonl", "dpo-jsonl", "parquet"])
def test_an_empty_export_is_an_error_that_says_why_and_writes_nothing(settings, store, tmp_path, fmt):
    fw = flywheel.init("shop", settings=settings)
    log(fw, "weather in Oslo?", [{"name": "get_weather", "arguments": {"city": "Oslo"}}])
    fw.flush()
    fw.close()
    dataset_id = curate(store, "shop", parse_rules(DEFAULT_RULES)).dataset_id
    rows = store.dataset_examples(dataset_id)
    split = rows[0]["split"]
    other = next(s for s in ("train", "eval", "few_shot") if s != split)
    path = tmp_path / f"out.{fmt}"
    with pytest.raises(InvalidInput, match=f"{dataset_id} \\(split {other}\\) has no examples") as raised:
        export_dataset(
            store.dataset_examples(dataset_id, other), fmt, path, name=f"{dataset_id} (split {other})"
        )
    assert "--split all" in (raised.value.hint or "")
    assert not path.exists() and not list(tmp_path.glob(f".{path.name}*"))  # no partial file either
    if fmt == "dpo-jsonl":  # examples, but no pair among them
        with pytest.raises(InvalidInput, match="no preference pairs") as raised:
            export_dataset(rows, fmt, path)
        assert "pairwise-preference annotations" in (raised.value.hint or "")
        assert not path.exists()
    else:
        assert export_dataset(rows, fmt, path).written == 1


def test_the_check_names_what_breaks_openais_format():
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    good = {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": None, "tool_calls": [call], "weight": 0},
            {"role": "tool", "tool_call_id": "c1", "content": "r"},
            {"role": "assistant", "content": "a"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    }
    assert openai_line_problems(good) == [] and openai_line_problems(json.dumps(good)) == []

    def broken(change):
        line = json.loads(json.dumps(good))
        change(line)
        return " | ".join(openai_line_problems(line))

    assert "last message must be the assistant's" in broken(lambda x: x["messages"].pop())
    assert "neither content nor tool calls" in broken(lambda x: x["messages"][-1].update(content=None))
    assert "no tool_call_id" in broken(lambda x: x["messages"][3].pop("tool_call_id"))
    assert "answers no open tool call" in broken(lambda x: x["messages"][3].update(tool_call_id="c9"))
    assert "are not answered" in broken(lambda x: x["messages"].pop(3))
    assert "JSON string, not an object" in broken(
        lambda x: x["messages"][2]["tool_calls"][0]["function"].update(arguments={})
    )
    assert "no id" in broken(lambda x: x["messages"][2]["tool_calls"][0].update(id=None))
    assert "role 'bot'" in broken(lambda x: x["messages"][1].update(role="bot"))
    assert "may not have tool_call_id" in broken(lambda x: x["messages"][1].update(tool_call_id="c1"))
    assert "tools[0]" in broken(lambda x: x["tools"][0].pop("type"))
    assert "weighted 0" in broken(lambda x: x["messages"][-1].update(weight=0))
    assert openai_line_problems("{not json") and openai_line_problems("[]")


_content = st.one_of(
    st.none(),
    st.text(max_size=8),
    st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=8)}), max_size=2),
)
_arguments = st.one_of(
    st.dictionaries(st.sampled_from("abc"), st.integers(), max_size=2),
    st.dictionaries(st.sampled_from("abc"), st.integers(), max_size=2).map(json.dumps),
    st.none(),
)


@st.composite
def _logged_conversation(draw):
    """A well-formed conversation, then damaged the ways instrumentation damages
    it: ids dropped on either side, arguments as objects, content as parts or
    missing, empty assistant messages inserted."""
    messages = [{"role": "system", "content": draw(_content)}] if draw(st.booleans()) else []
    for turn in range(draw(st.integers(1, 3))):
        messages.append({"role": "user", "content": draw(st.text(min_size=1, max_size=8))})
        for step in range(draw(st.integers(0, 2))):
            calls = []
            for n in range(draw(st.integers(1, 3))):
                call = {"name": draw(st.sampled_from(["f", "g"])), "arguments": draw(_arguments)}
                if draw(st.booleans()):
                    call = {"id": f"id{turn}{step}{n}", "type": "function", "function": call}
                calls.append(call)
            messages.append({"role": "assistant", "content": draw(_content), "tool_calls": calls})
            for call in draw(st.permutations(calls)) if all("id" in c for c in calls) else calls:
                result = {"role": "tool", "content": draw(_content)}
                if "id" in call and draw(st.booleans()):
                    result["tool_call_id"] = call["id"]
                messages.append(result)
            if draw(st.booleans()):
                messages.append({"role": "assistant", "content": draw(st.sampled_from([None, "", []]))})
    return messages


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    _logged_conversation(),
    st.one_of(st.just({"content": "done"}), st.just({"tool_calls": [{"name": "f", "arguments": {}}]})),
)
def test_repairable_damage_always_renders_valid_lines(messages, target):
    rendered, _ = render_messages(messages, target)
    assert openai_line_problems({"messages": rendered}) == []
    rendered, _ = render_messages(messages, target, parts=False)
    assert openai_line_problems({"messages": rendered}) == []
