"""Exports of a dataset version: OpenAI chat fine-tuning JSONL (with tools and
tool calls), preference pairs in OpenAI's DPO format, and Parquet.

OpenAI's fine-tuning format: one ``{"messages": [...], "tools": [...]}`` per
line, the last message the assistant's answer; tool-call arguments are JSON
strings. DPO: ``{"input": {"messages", "tools"}, "preferred_output": [msg],
"non_preferred_output": [msg]}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flywheel.errors import InvalidInput

__all__ = ["EXPORT_FORMATS", "assistant_message", "export_dataset"]

EXPORT_FORMATS = ("openai-jsonl", "dpo-jsonl", "parquet")


def assistant_message(target: dict[str, Any]) -> dict[str, Any]:
    calls = target.get("tool_calls")
    if calls is None:
        return {"role": "assistant", "content": str(target.get("content") or "")}
    return {
        "role": "assistant",
        "tool_calls": [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c.get("arguments") or {})},
            }
            for i, c in enumerate(calls)
        ],
    }


def _input_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        message = {
            k: v for k, v in m.items() if k in ("role", "content", "tool_calls", "tool_call_id", "name")
        }
        if message.get("content") is not None and not isinstance(message["content"], str):
            message["content"] = json.dumps(message["content"])
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            if not isinstance(function.get("arguments"), str):
                function["arguments"] = json.dumps(function.get("arguments") or {})
        out.append(message)
    return out


def export_dataset(rows: list[dict[str, Any]], fmt: str, path: Path) -> int:
    """Write ``rows`` (examples with split and weight) to ``path``; returns the count."""
    if fmt not in EXPORT_FORMATS:
        raise InvalidInput(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table(
            {
                "id": [r["id"] for r in rows],
                "task_id": [r["task_id"] for r in rows],
                "session_id": [r["session_id"] for r in rows],
                "split": [r["split"] for r in rows],
                "weight": [float(r["weight"]) for r in rows],
                "kind": [r["kind"] for r in rows],
                "source": [r["source"] for r in rows],
                "rule": [r["rule"] for r in rows],
                "messages": [json.dumps(r["messages"]) for r in rows],
                "tools": [json.dumps(r["tools"]) for r in rows],
                "target": [json.dumps(r["target"]) for r in rows],
                "quality": [json.dumps(r["quality"]) for r in rows],
            }
        )
        pq.write_table(table, path)
        return len(rows)
    written = 0
    with path.open("w", encoding="utf-8") as out:
        for r in rows:
            messages = _input_messages(r["messages"])
            tools = r["tools"] or None
            if fmt == "openai-jsonl":
                if r["kind"] != "sft":
                    continue
                line: dict[str, Any] = {"messages": [*messages, assistant_message(r["target"])]}
                if tools:
                    line["tools"] = tools
            else:
                if not r.get("rejected"):
                    continue
                line = {
                    "input": {"messages": messages, **({"tools": tools} if tools else {})},
                    "preferred_output": [assistant_message(r["target"])],
                    "non_preferred_output": [assistant_message(r["rejected"])],
                }
            out.write(json.dumps(line) + "\n")
            written += 1
    return written
