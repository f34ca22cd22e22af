"""Exports of a dataset version: OpenAI chat fine-tuning JSONL (with tools and
tool calls), preference pairs in OpenAI's DPO format, and Parquet in the
conversational format of Hugging Face ``datasets`` and TRL.

OpenAI's fine-tuning format: one ``{"messages": [...], "tools": [...]}`` per
line, the last message the assistant's answer; tool-call arguments are JSON
strings, each tool call has an id and each tool message the id of the call it
answers. DPO: ``{"input": {"messages", "tools"}, "preferred_output": [msg],
"non_preferred_output": [msg]}``. Parquet: a ``messages`` column (a list of
``{role, content, tool_calls, tool_call_id, name}``, the target the last
message), ``tools`` as a JSON string, and the example's metadata.

Stored messages come from many instrumentations and may miss pieces. Every
example is rendered into the format's rules (tool-call ids kept, else made up
and paired in order with the tool messages that answer them; arguments as JSON
strings; content parts as text; empty messages left out), then checked by
``openai_line_problems`` / ``dpo_line_problems``: an example that still breaks
a rule is skipped, and the export says how many and why. An export with
nothing to write is an error that says why, and writes no file.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flywheel.errors import InvalidInput

__all__ = [
    "EXPORT_FORMATS",
    "ExportResult",
    "dpo_line_problems",
    "export_dataset",
    "openai_line_problems",
    "render_messages",
]

EXPORT_FORMATS = ("openai-jsonl", "dpo-jsonl", "parquet")

_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",  # the legacy role of a function's result
}
_KEYS = {
    "system": {"role", "content", "name"},
    "user": {"role", "content", "name"},
    "assistant": {"role", "content", "name", "tool_calls", "weight"},
    "tool": {"role", "content", "tool_call_id"},
}


@dataclass
class ExportResult:
    format: str
    path: Path
    written: int
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> examples
    empty_messages_dropped: int = 0  # empty messages left out of examples' inputs

    def summary(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "path": str(self.path),
            "written": self.written,
            "skipped": dict(self.skipped.most_common()),
            "empty_messages_dropped": self.empty_messages_dropped,
        }


# -- rendering -------------------------------------------------------------------


def _part_text(part: Any) -> str:
    if isinstance(part, str):
        return part
    if isinstance(part, dict):
        for key in ("text", "content"):
            if isinstance(part.get(key), str):
                return str(part[key])
    return ""


def _content(value: Any, role: str, *, parts: bool) -> Any:
    """A message's content: a string (or None); a list of parts becomes its text,
    except a user's images when ``parts`` (OpenAI's vision fine-tuning takes them)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        images = [p for p in value if isinstance(p, dict) and p.get("type") == "image_url"]
        if parts and role == "user" and images:
            return [
                {"type": "image_url", "image_url": p["image_url"]}
                if isinstance(p, dict) and p.get("type") == "image_url"
                else {"type": "text", "text": _part_text(p)}
                for p in value
                if (isinstance(p, dict) and p.get("type") == "image_url") or _part_text(p)
            ]
        return "".join(_part_text(p) for p in value)
    return json.dumps(value, ensure_ascii=False, default=str)


def _arguments(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"__raw__"}:
        return value["__raw__"]  # arguments that were not JSON when logged (the check names them)
    if value is None:
        return "{}"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _tool_call(call: Any) -> dict[str, Any]:
    if not isinstance(call, dict):
        return {"id": None, "type": "function", "function": {"name": None, "arguments": "{}"}}
    function: dict[str, Any] = call["function"] if isinstance(call.get("function"), dict) else call
    call_id = call.get("id")
    return {
        "id": call_id if isinstance(call_id, str) and call_id else None,
        "type": "function",
        "function": {"name": function.get("name"), "arguments": _arguments(function.get("arguments"))},
    }


def _message(raw: Any, *, parts: bool) -> dict[str, Any] | None:
    """One stored message in the format's shape; None when it is empty."""
    if not isinstance(raw, dict):
        return {"role": repr(raw)[:40]}  # the check names it
    role = _ROLES.get(str(raw.get("role")), str(raw.get("role")))
    message: dict[str, Any] = {"role": role}
    content = _content(raw.get("content"), role, parts=parts)
    if role == "assistant":
        listed = raw.get("tool_calls")
        calls = [_tool_call(c) for c in listed] if isinstance(listed, list) else []
        if not calls and not content:
            return None  # neither text nor calls: nothing was said
        message["content"] = content or None
        if calls:
            message["tool_calls"] = calls
    elif role == "tool":
        message["content"] = "" if content is None else content
        call_id = raw.get("tool_call_id")
        message["tool_call_id"] = call_id if isinstance(call_id, str) and call_id else None
    else:
        if role == "system" and not content:
            return None  # an empty system prompt says nothing
        message["content"] = content
    name = raw.get("name")
    if role != "tool" and isinstance(name, str) and name:
        message["name"] = name
    return message


def _target_message(target: dict[str, Any]) -> dict[str, Any] | None:
    """The answer (a curated example's target) as an assistant message."""
    calls = target.get("tool_calls")
    if calls is not None:
        if not calls:
            return None
        return {"role": "assistant", "content": None, "tool_calls": [_tool_call(c) for c in calls]}
    text = _content(target.get("content"), "assistant", parts=False)
    return {"role": "assistant", "content": text} if text else None


def _assign_ids(messages: list[dict[str, Any]]) -> None:
    """Give every tool call an id (its own when it has one, else the id of the tool
    message answering it, else a new stable one) and every tool message the id
    of the call it answers: by id where they agree, else in order."""
    taken = {c["id"] for m in messages for c in m.get("tool_calls") or [] if c["id"]}
    taken |= {m["tool_call_id"] for m in messages if m.get("tool_call_id")}
    numbers = itertools.count(1)

    def fresh() -> str:
        while (candidate := f"call_{next(numbers)}") in taken:
            pass
        taken.add(candidate)
        return candidate

    i = 0
    while i < len(messages):
        calls = (messages[i].get("tool_calls") or []) if messages[i].get("role") == "assistant" else []
        i += 1
        end = i
        while end < len(messages) and messages[end].get("role") == "tool":
            end += 1
        if not calls:
            continue
        own = {c["id"]: n for n, c in enumerate(calls) if c["id"]}
        open_calls = list(range(len(calls)))
        unmatched = []
        for result in messages[i:end]:
            n = own.get(result.get("tool_call_id"))
            if n is not None and n in open_calls:
                open_calls.remove(n)
            else:
                unmatched.append(result)
        for n, result in zip(open_calls, unmatched, strict=False):  # in order
            call = calls[n]
            if call["id"] is None:
                given = result.get("tool_call_id")
                call["id"] = given if given and given not in own else fresh()
            result["tool_call_id"] = call["id"]
        for call in calls:
            if call["id"] is None:
                call["id"] = fresh()
        i = end


def render_messages(
    messages: list[Any], target: dict[str, Any] | None, *, parts: bool = True
) -> tuple[list[dict[str, Any]], int]:
    """An example's input messages, and its target as the last one when given, in
    OpenAI's chat shape with tool-call ids paired (see the module's docstring);
    and how many empty messages were left out. ``parts``: keep a user's image
    parts (JSONL) instead of only text (Parquet)."""
    rendered = [_message(m, parts=parts) for m in messages]
    out = [m for m in rendered if m is not None]
    dropped = len(rendered) - len(out)
    if target is not None:
        answer = _target_message(target)
        if answer is not None:
            out.append(answer)
    _assign_ids(out)
    return out, dropped


# -- checking ---------------------------------------------------------------------


def _is_json_object(text: Any) -> bool:
    if not isinstance(text, str):
        return False
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def _content_problem(message: dict[str, Any]) -> str | None:
    role, content = message["role"], message.get("content")
    if role == "assistant":
        if content is not None and not isinstance(content, str):
            return "an assistant message's content must be a string or null"
        if not content and not message.get("tool_calls"):
            return "an assistant message has neither content nor tool calls"
        return None
    if isinstance(content, str):
        return "a system message has no text" if role == "system" and not content else None
    if role == "user" and isinstance(content, list) and content:
        for part in content:
            ok_text = (
                isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
            )
            ok_image = (
                isinstance(part, dict)
                and part.get("type") == "image_url"
                and isinstance((part.get("image_url") or {}).get("url"), str)
            )
            if not (ok_text or ok_image):
                return "a user content part is neither text nor image_url"
        return None
    return f"a {role} message's content must be a string (got {type(content).__name__})"


def _call_problems(call: Any, seen: set[str]) -> list[str]:
    if not isinstance(call, dict) or set(call) != {"id", "type", "function"}:
        return ["a tool call must have exactly id, type and function"]
    problems = []
    if not isinstance(call["id"], str) or not call["id"]:
        problems.append("a tool call has no id")
    elif call["id"] in seen:
        problems.append(f"tool call id {call['id']!r} is used twice")
    else:
        seen.add(call["id"])
    if call["type"] != "function":
        problems.append(f"a tool call's type must be 'function' (got {call['type']!r})")
    function = call["function"]
    if not isinstance(function, dict) or set(function) != {"name", "arguments"}:
        return [*problems, "a tool call's function must have exactly name and arguments"]
    if not isinstance(function["name"], str) or not function["name"]:
        problems.append("a tool call has no function name")
    if not isinstance(function["arguments"], str):
        problems.append("tool call arguments must be a JSON string, not an object")
    elif not _is_json_object(function["arguments"]):
        problems.append("tool call arguments are not a JSON object")
    return problems


def _messages_problems(messages: Any, where: str, *, weights: bool) -> list[str]:
    """Problems of a conversation: roles, keys, contents, tool calls and the tool
    messages answering them (each call answered, by id, before the conversation goes on)."""
    if not isinstance(messages, list) or not messages:
        return [f"{where}: must be a non-empty list of messages"]
    problems: list[str] = []
    seen: set[str] = set()
    open_calls: list[str] = []  # ids of the last assistant message's calls not yet answered
    after_calls = False  # the previous message called tools or answered a call
    for n, message in enumerate(messages):
        at = f"{where}[{n}]"
        if not isinstance(message, dict) or message.get("role") not in _KEYS:
            role = message.get("role") if isinstance(message, dict) else message
            problems.append(f"{at}: role {role!r} is not system, user, assistant or tool")
            continue
        role = message["role"]
        allowed = _KEYS[role] - (set() if weights else {"weight"})
        extra = sorted(set(message) - allowed)
        if extra:
            problems.append(f"{at}: a {role} message may not have {', '.join(extra)}")
        if role != "tool" and "name" in message and not isinstance(message["name"], str):
            problems.append(f"{at}: name must be a string")
        if role != "tool" and open_calls:
            problems.append(f"{at}: tool calls {', '.join(open_calls)} are not answered by tool messages")
            open_calls = []
        if "content" not in message and role != "assistant":
            problems.append(f"{at}: a {role} message needs content")
        else:
            problem = _content_problem(message)
            if problem:
                problems.append(f"{at}: {problem}")
        if role == "assistant":
            calls = message.get("tool_calls")
            if calls is not None and (not isinstance(calls, list) or not calls):
                problems.append(f"{at}: tool_calls must be a non-empty list")
                calls = []
            for call in calls or []:
                problems += [f"{at}: {p}" for p in _call_problems(call, seen)]
            open_calls = [
                c["id"] for c in calls or [] if isinstance(c, dict) and isinstance(c.get("id"), str)
            ]
            after_calls = bool(calls)
            if "weight" in message and message["weight"] not in (0, 1):
                problems.append(f"{at}: weight must be 0 or 1")
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not after_calls:
                problems.append(f"{at}: a tool message must follow an assistant message with tool calls")
            elif not isinstance(call_id, str) or not call_id:
                problems.append(f"{at}: a tool message has no tool_call_id")
            elif call_id not in open_calls:
                problems.append(f"{at}: tool_call_id {call_id!r} answers no open tool call of the assistant")
            else:
                open_calls.remove(call_id)
        else:
            after_calls = False
    return problems


def _tools_problems(tools: Any) -> list[str]:
    if not isinstance(tools, list):
        return ["tools must be a list"]
    problems = []
    for n, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            problems.append(f"tools[{n}]: must be {{'type': 'function', 'function': {{...}}}}")
        elif not isinstance(function.get("name"), str) or not function["name"]:
            problems.append(f"tools[{n}]: the function has no name")
        elif not isinstance(function.get("parameters", {}), dict):
            problems.append(f"tools[{n}]: parameters must be a JSON schema object")
    return problems


def _parsed(line: Any) -> tuple[Any, list[str]]:
    if isinstance(line, str | bytes):
        try:
            line = json.loads(line)
        except json.JSONDecodeError as exc:
            return None, [f"not JSON: {exc}"]
    if not isinstance(line, dict):
        return None, ["a line must be a JSON object"]
    return line, []


def openai_line_problems(line: str | bytes | dict[str, Any]) -> list[str]:
    """What breaks OpenAI's chat fine-tuning format in one line (empty: nothing).

    A JSON object of ``messages`` (and optionally ``tools``, ``parallel_tool_calls``);
    roles system, user, assistant, tool, each with only its own keys; the last
    message the assistant's (not weighted 0); every tool call with a unique id,
    type ``function``, a name and arguments that are a JSON object in a string;
    every tool message right after the call it answers, by ``tool_call_id``,
    and every call answered before the conversation goes on.
    """
    data, problems = _parsed(line)
    if data is None:
        return problems
    extra = sorted(set(data) - {"messages", "tools", "parallel_tool_calls"})
    if extra:
        problems.append(f"unknown keys {', '.join(extra)}")
    messages = data.get("messages")
    problems += _messages_problems(messages, "messages", weights=True)
    if isinstance(messages, list) and messages:
        last = messages[-1]
        if not isinstance(last, dict) or last.get("role") != "assistant":
            problems.append("the last message must be the assistant's")
        elif last.get("weight") == 0:
            problems.append("the last message is weighted 0: nothing to learn")
    if "tools" in data:
        problems += _tools_problems(data["tools"])
    if "parallel_tool_calls" in data and not isinstance(data["parallel_tool_calls"], bool):
        problems.append("parallel_tool_calls must be true or false")
    return problems


def dpo_line_problems(line: str | bytes | dict[str, Any]) -> list[str]:
    """What breaks OpenAI's preference (DPO) fine-tuning format in one line: an
    ``input`` conversation (``messages``, optional ``tools``) not ending with the
    assistant, and one assistant message in each of ``preferred_output`` and
    ``non_preferred_output``, checked as ``openai_line_problems`` checks messages."""
    data, problems = _parsed(line)
    if data is None:
        return problems
    extra = sorted(set(data) - {"input", "preferred_output", "non_preferred_output"})
    if extra:
        problems.append(f"unknown keys {', '.join(extra)}")
    given = data.get("input")
    if not isinstance(given, dict):
        return [*problems, "input must be an object with messages"]
    extra = sorted(set(given) - {"messages", "tools", "parallel_tool_calls"})
    if extra:
        problems.append(f"input: unknown keys {', '.join(extra)}")
    messages = given.get("messages")
    problems += _messages_problems(messages, "input.messages", weights=False)
    if "tools" in given:
        problems += _tools_problems(given["tools"])
    if not isinstance(messages, list) or not messages:
        return problems
    if isinstance(messages[-1], dict) and messages[-1].get("role") == "assistant":
        problems.append("input: the last message must not be the assistant's (that is the output)")
    for key in ("preferred_output", "non_preferred_output"):
        output = data.get(key)
        if not isinstance(output, list) or len(output) != 1:
            problems.append(f"{key} must be a list of one assistant message")
            continue
        if not isinstance(output[0], dict) or output[0].get("role") != "assistant":
            problems.append(f"{key}: the message must be the assistant's")
            continue
        # the output checked as the conversation's next message
        at = f"input.messages[{len(messages)}]"
        problems += [
            problem.replace(at, f"{key}[0]", 1)
            for problem in _messages_problems([*messages, output[0]], "input.messages", weights=False)
            if problem.startswith(at)
        ]
    return problems


_WHERE = re.compile(r"^[\w.]+\[\d+\]: ")


def _reason(problems: list[str]) -> str:
    """A skipped example's reason, without the position (so that reasons add up)."""
    return _WHERE.sub("", problems[0])


# -- writing ----------------------------------------------------------------------


def _tools(tools: Any) -> list[dict[str, Any]] | None:
    """The offered tools in OpenAI's shape ({type: function, function: {...}})."""
    if not tools:
        return None
    out = []
    for tool in tools:
        if isinstance(tool, dict) and "function" not in tool and isinstance(tool.get("name"), str):
            tool = {"type": "function", "function": tool}
        elif isinstance(tool, dict) and isinstance(tool.get("function"), dict) and "type" not in tool:
            tool = {**tool, "type": "function"}
        out.append(tool)
    return out


_EMPTY_ANSWER = "the answer is empty (no text and no tool call)"


def _openai_lines(rows: list[dict[str, Any]], result: ExportResult) -> Iterator[dict[str, Any]]:
    for r in rows:
        if r["kind"] != "sft":
            result.skipped[f"a {r['kind']} example (this format holds SFT examples)"] += 1
            continue
        if _target_message(r["target"]) is None:
            result.skipped[_EMPTY_ANSWER] += 1
            continue
        messages, dropped = render_messages(r["messages"], r["target"])
        result.empty_messages_dropped += dropped
        for message in messages[:-1]:
            if message["role"] == "assistant":
                message["weight"] = 0  # earlier turns are context: only the curated answer is taught
        line: dict[str, Any] = {"messages": messages}
        tools = _tools(r["tools"])
        if tools:
            line["tools"] = tools
        problems = openai_line_problems(line)
        if problems:
            result.skipped[_reason(problems)] += 1
            continue
        yield line


def _dpo_lines(rows: list[dict[str, Any]], result: ExportResult) -> Iterator[dict[str, Any]]:
    for r in rows:
        if not r.get("rejected"):
            result.skipped["no rejected answer to pair with"] += 1
            continue
        if _target_message(r["target"]) is None or _target_message(r["rejected"]) is None:
            result.skipped[_EMPTY_ANSWER] += 1
            continue
        preferred, dropped = render_messages(r["messages"], r["target"])
        rejected, _ = render_messages(r["messages"], r["rejected"])
        result.empty_messages_dropped += dropped
        tools = _tools(r["tools"])
        line = {
            "input": {"messages": preferred[:-1], **({"tools": tools} if tools else {})},
            "preferred_output": preferred[-1:],
            "non_preferred_output": rejected[-1:],
        }
        problems = dpo_line_problems(line)
        if problems:
            result.skipped[_reason(problems)] += 1
            continue
        yield line


def _parquet_table(rows: list[dict[str, Any]], result: ExportResult) -> Any:
    import pyarrow as pa

    call = pa.struct(
        [
            ("id", pa.string()),
            ("type", pa.string()),
            ("function", pa.struct([("name", pa.string()), ("arguments", pa.string())])),
        ]
    )
    message = pa.struct(
        [
            ("role", pa.string()),
            ("content", pa.string()),
            ("tool_calls", pa.list_(call)),
            ("tool_call_id", pa.string()),
            ("name", pa.string()),
        ]
    )
    columns: dict[str, list[Any]] = {
        k: []
        for k in ("id", "task_id", "session_id", "split", "weight", "kind", "source", "rule", "messages")
    }
    columns["tools"], columns["quality"] = [], []
    for r in rows:
        if _target_message(r["target"]) is None:
            result.skipped[_EMPTY_ANSWER] += 1
            continue
        messages, dropped = render_messages(r["messages"], r["target"], parts=False)
        result.empty_messages_dropped += dropped
        tools = _tools(r["tools"])
        problems = openai_line_problems({"messages": messages, **({"tools": tools} if tools else {})})
        if problems:
            result.skipped[_reason(problems)] += 1
            continue
        for key in ("id", "task_id", "session_id", "split", "kind", "source", "rule"):
            columns[key].append(r[key])
        columns["weight"].append(float(r["weight"]))
        columns["messages"].append(
            [
                {k: m.get(k) for k in ("role", "content", "tool_calls", "tool_call_id", "name")}
                for m in messages
            ]
        )
        columns["tools"].append(json.dumps(tools, ensure_ascii=False) if tools else None)
        columns["quality"].append(json.dumps(r["quality"], ensure_ascii=False, default=str))
    types = {"weight": pa.float64(), "messages": pa.list_(message)}
    return pa.table({k: pa.array(v, type=types.get(k, pa.string())) for k, v in columns.items()})


def _nothing_written(fmt: str, rows: list[dict[str, Any]], result: ExportResult, name: str) -> InvalidInput:
    if not rows:
        return InvalidInput(
            f"{name} has no examples to export",
            hint="choose another split (--split all), or curate more traffic first",
        )
    if fmt == "dpo-jsonl" and not any(r.get("rejected") for r in rows):
        return InvalidInput(
            f"no preference pairs in {name}",
            hint="preferences come from corrections (the corrected answer against the agent's own) "
            "and from reviewers' pairwise-preference annotations: correct or annotate some tasks, "
            "curate again, then export",
        )
    if fmt == "openai-jsonl" and not any(r["kind"] == "sft" for r in rows):
        kinds = ", ".join(sorted({r["kind"] for r in rows}))
        return InvalidInput(
            f"no SFT examples in {name} (only {kinds})",
            hint="export preference pairs with --format dpo-jsonl, or everything with --format parquet",
        )
    reasons = "; ".join(f"{reason} ({n})" for reason, n in result.skipped.most_common(3))
    return InvalidInput(
        f"none of the {len(rows)} examples of {name} is valid {fmt}: {reasons}",
        hint="the logged messages miss pieces the format needs; see 'Exports' in docs/curate.md",
    )


def export_dataset(
    rows: list[dict[str, Any]], fmt: str, path: Path, *, name: str = "the dataset"
) -> ExportResult:
    """Write ``rows`` (examples with split and weight) to ``path`` as ``fmt``.

    Examples that cannot be made valid for the format are skipped and counted
    by reason; when nothing is left to write, ``InvalidInput`` says why (named
    ``name``) and no file is written.
    """
    if fmt not in EXPORT_FORMATS:
        raise InvalidInput(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    result = ExportResult(fmt, path, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")  # the whole file, or none
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            table = _parquet_table(rows, result)
            result.written = table.num_rows
            if result.written:
                pq.write_table(table, temporary)
        else:
            lines = _openai_lines(rows, result) if fmt == "openai-jsonl" else _dpo_lines(rows, result)
            with temporary.open("w", encoding="utf-8") as out:
                for line in lines:
                    out.write(json.dumps(line, ensure_ascii=False) + "\n")
                    result.written += 1
        if not result.written:
            raise _nothing_written(fmt, rows, result, name)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return result
