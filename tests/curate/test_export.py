"""Exports load in the tools people use: OpenAI's format, Hugging Face datasets, pyarrow."""

import json

import pyarrow.parquet as pq
import pytest
from tests.curate.test_curate import log

import flywheel
from flywheel.curate import DEFAULT_RULES, curate, parse_rules
from flywheel.curate.export import export_dataset


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


def _valid_openai_line(line):
    """OpenAI chat fine-tuning format (with tools), as documented."""
    assert set(line) <= {"messages", "tools", "parallel_tool_calls"}
    messages = line["messages"]
    assert messages[-1]["role"] == "assistant"
    for m in messages:
        assert m["role"] in ("system", "user", "assistant", "tool")
        assert isinstance(m.get("content", ""), str | type(None))
        for call in m.get("tool_calls", []):
            assert call["type"] == "function" and isinstance(call["id"], str)
            assert isinstance(call["function"]["name"], str)
            json.loads(call["function"]["arguments"])  # a JSON string, not an object
    for tool in line.get("tools", []):
        assert tool["type"] == "function" and "name" in tool["function"]


def test_openai_jsonl_is_valid_and_loads_with_hf_datasets(dataset, tmp_path):
    from datasets import load_dataset

    path = tmp_path / "train.jsonl"
    written = export_dataset(dataset, "openai-jsonl", path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert written == len(lines) == len(dataset)
    for line in lines:
        _valid_openai_line(line)
    loaded = load_dataset("json", data_files=str(path), split="train")
    assert loaded.num_rows == written


def test_dpo_pairs_from_corrections(dataset, tmp_path):
    path = tmp_path / "dpo.jsonl"
    written = export_dataset(dataset, "dpo-jsonl", path)
    pairs = [json.loads(line) for line in path.read_text().splitlines()]
    assert written == len(pairs) == 3
    for pair in pairs:
        preferred = json.loads(pair["preferred_output"][0]["tool_calls"][0]["function"]["arguments"])
        rejected = json.loads(pair["non_preferred_output"][0]["tool_calls"][0]["function"]["arguments"])
        assert preferred["city"].startswith("P") and rejected["city"].startswith("p")
        assert pair["input"]["messages"][-1]["role"] == "user"


def test_parquet_reads_back(dataset, tmp_path):
    path = tmp_path / "all.parquet"
    export_dataset(dataset, "parquet", path)
    table = pq.read_table(path)
    assert table.num_rows == len(dataset)
    assert set(table.column("split").to_pylist()) <= {"train", "eval", "few_shot"}
    assert json.loads(table.column("target")[0].as_py())
