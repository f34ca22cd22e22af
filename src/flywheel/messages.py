"""One message model: every chat shape we accept becomes OpenAI chat messages.

Agents reach us through our SDK (OpenAI chat), LangChain, and OpenTelemetry
instrumentation of three families, each with its own idea of a message:

* OpenAI chat: ``{"role", "content", "tool_calls": [{"id", "type", "function":
  {"name", "arguments"}}], "tool_call_id"}``, content a string or a list of parts;
* GenAI semantic conventions: ``{"role", "parts": [{"type": "text", "content"},
  {"type": "tool_call", "id", "name", "arguments"}, {"type": "tool_call_response",
  "id", "response"}], "finish_reason"}``, the system prompt apart
  (``gen_ai.system_instructions``), and the older log events (``gen_ai.user.message``,
  ``gen_ai.choice``: a body with ``content``, ``tool_calls``, ``message``);
* OpenInference's flattened attributes, unflattened: ``{"message": {"role",
  "content", "contents": [{"message_content": {...}}], "tool_calls": [{"tool_call":
  {"id", "function": {"name", "arguments"}}}], "tool_call_id"}}``;
* OpenLLMetry's ``gen_ai.prompt.N.*`` / ``gen_ai.completion.N.*``, unflattened:
  ``{"role", "content", "tool_calls": [{"id", "name", "arguments"}], "tool_call_id"}``;
* LangChain messages, as dicts (``{"type": "human", ...}``) or serialised
  (``{"lc": 1, "id": [..., "ToolMessage"], "kwargs": {...}}``);
* Anthropic-style content blocks (``text``, ``tool_use``, ``tool_result``).

The internal form is OpenAI chat, canonical: roles ``system``, ``user``,
``assistant``, ``tool``; content a string when it is all text, else a list of
OpenAI parts, ``None`` on an assistant message that only calls tools; tool-call
arguments a JSON string; a tool message's content its text. A model's answer is
stored as a chat completion, ``{"choices": [{"index", "message", "finish_reason"}]}``
with ``model`` and ``usage`` when known. Ids are never invented here.

This module imports nothing of ours.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = [
    "assistant_text",
    "normalize_completion",
    "normalize_message",
    "normalize_messages",
    "normalize_tools",
    "parse_json",
    "unflatten",
]

_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "tool": "tool",
    "function": "tool",
    "ipython": "tool",
}

_LANGCHAIN_CLASSES = {
    "HumanMessage": "user",
    "HumanMessageChunk": "user",
    "AIMessage": "assistant",
    "AIMessageChunk": "assistant",
    "SystemMessage": "system",
    "SystemMessageChunk": "system",
    "ToolMessage": "tool",
    "ToolMessageChunk": "tool",
    "FunctionMessage": "tool",
    "ChatMessage": "",
}


def parse_json(value: Any) -> Any:
    """A JSON string's value, else the value itself (attributes often hold JSON)."""
    if isinstance(value, str | bytes) and value[:1] in ("{", "[", b"{", b"["):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def unflatten(flat: dict[str, Any]) -> Any:
    """``{"a.0.b": 1, "a.1.b": 2}`` -> ``{"a": [{"b": 1}, {"b": 2}]}``: dotted keys to
    nested dicts, and dicts whose keys are all digits to lists in index order."""
    root: dict[str, Any] = {}
    for key, value in flat.items():
        node = root
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        last = parts[-1]
        if isinstance(node.get(last), dict):
            node[last]["__value__"] = value
        else:
            node[last] = value
    return _lists(root)


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {k: _lists(v) for k, v in node.items()}
    if items and all(k.isdigit() for k in items):
        return [items[k] for k in sorted(items, key=int)]
    return items


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str).decode()
    except TypeError:  # an integer beyond 64 bits: the standard library writes it
        import json

        return json.dumps(value, default=str, ensure_ascii=False)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return _dumps(value)


def _arguments(value: Any) -> str:
    if isinstance(value, str):
        return value  # kept as the model wrote it
    if value is None:
        return "{}"
    return _dumps(value)


def _tool_call(call: Any) -> dict[str, Any] | None:
    """One tool call in any shape -> ``{"id"?, "type": "function", "function": {...}}``."""
    if not isinstance(call, dict):
        return None
    if "tool_call" in call and isinstance(call["tool_call"], dict):  # OpenInference
        call = call["tool_call"]
    function = call.get("function")
    if isinstance(function, dict):
        name, arguments = function.get("name"), function.get("arguments")
    else:
        name = call.get("name")
        arguments = next((call[k] for k in ("arguments", "args", "input") if k in call), None)
    if not name:
        return None
    out: dict[str, Any] = {}
    if call.get("id"):
        out["id"] = str(call["id"])
    out["type"] = "function"
    out["function"] = {"name": str(name), "arguments": _arguments(arguments)}
    return out


_PART_TYPES = {
    "text",
    "input_text",
    "output_text",
    "image_url",
    "image",
    "uri",
    "blob",
    "file",
    "input_audio",
}
_NOT_CONTENT = {"tool_call", "tool_use", "tool_call_response", "tool_result", "reasoning", "thinking"}


def _type(value: dict[str, Any]) -> str | None:
    """A part's or message's ``type``, when it is a string (logged content is untrusted)."""
    kind = value.get("type")
    return kind if isinstance(kind, str) else None


def _parts_in_text(value: str) -> Any:
    """Content a library wrote as the JSON of a list of parts (and only that: a
    user's own JSON text stays text)."""
    if value[:1] != "[":
        return value
    parsed = parse_json(value)
    if (
        isinstance(parsed, list)
        and parsed
        and all(isinstance(p, dict) and (_type(p) in _PART_TYPES | _NOT_CONTENT) for p in parsed)
    ):
        return parsed
    return value


def _content(value: Any, reasoning: list[str] | None = None) -> Any:
    """Content in any shape -> a string when it is all text, else OpenAI parts.
    Parts we do not map (audio, files...) are kept as they came; reasoning goes
    to ``reasoning`` (not content, not lost)."""
    if isinstance(value, str):
        value = _parts_in_text(value)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and "type" not in value and "message_content" not in value:
        return _text(value)  # structured content: kept whole, as JSON text
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return _text(value)
    parts: list[dict[str, Any]] = []
    for part in value:
        if isinstance(part, str):
            parts.append({"type": "text", "text": part})
            continue
        if not isinstance(part, dict):
            parts.append({"type": "text", "text": _text(part)})
            continue
        if "message_content" in part and isinstance(part["message_content"], dict):  # OpenInference
            part = part["message_content"]
        kind = _type(part)
        if kind in ("text", "input_text", "output_text") or (kind is None and "text" in part):
            parts.append({"type": "text", "text": _text(part.get("text", part.get("content")))})
        elif kind == "image_url" and isinstance(part.get("image_url"), dict):
            parts.append(part)  # OpenAI's own (with its detail)
        elif kind in ("image_url", "image"):
            image = part.get("image_url") or part.get("image") or {}
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(image, dict) and isinstance(image.get("image"), dict):
                url = image["image"].get("url")
            parts.append({"type": "image_url", "image_url": {"url": str(url)}} if url else part)
        elif kind == "uri" and part.get("uri") and str(part.get("modality", "image")) == "image":
            parts.append({"type": "image_url", "image_url": {"url": str(part["uri"])}})
        elif kind in ("reasoning", "thinking"):
            if reasoning is not None:
                reasoning.append(_text(part.get("content", part.get("thinking", part.get("text")))))
        elif kind in _NOT_CONTENT:
            continue  # calls and results are read apart
        else:
            parts.append(part)  # audio, files, what we do not know: kept as it came
    if all(p.get("type") == "text" for p in parts):
        return "".join(p["text"] for p in parts) if parts else None
    return parts


#: Keys of a message that the model reads apart; any other key is kept as it came.
_MAPPED = {
    "role",
    "content",
    "parts",
    "tool_calls",
    "tool_call_id",
    "name",
    "function_call",
    "additional_kwargs",
    "type",
    "lc",
    "kwargs",
    "id",
    "finish_reason",
    "index",
    "message",
    "contents",
    "function_call_name",
    "function_call_arguments_json",
    "response_metadata",
    "usage_metadata",
    "invalid_tool_calls",
    "example",
    "tool_call_chunks",
    "status",
    "artifact",
}


def normalize_message(message: Any, role: str | None = None) -> list[dict[str, Any]]:
    """One message in any accepted shape -> OpenAI chat messages (usually one; a
    message holding several tool results becomes one tool message per result)."""
    if isinstance(message, str):
        return [{"role": role or "user", "content": message}]
    if not isinstance(message, dict):
        return []
    if isinstance(message.get("message"), dict) and "role" not in message:
        # OpenInference ({"message": {...}}) and the GenAI choice event ({"index", "message"}).
        inner = dict(message["message"])
        if "content" not in inner and "content" in message:
            inner["content"] = message["content"]
        return normalize_message(inner, role)
    if message.get("lc") and isinstance(message.get("kwargs"), dict):  # a serialised LangChain message
        path = message.get("id")
        class_name = path[-1] if isinstance(path, list) and path and isinstance(path[-1], str) else ""
        kwargs = dict(message["kwargs"])
        kwargs["role"] = kwargs.get("role") or _LANGCHAIN_CLASSES.get(class_name) or role or "user"
        return normalize_message(kwargs, role)
    kind = message.get("role") or role
    if kind is None and _type(message) in _ROLES:  # LangChain's dict form
        kind = message["type"]
    kind = _ROLES.get(str(kind).lower(), role or "user") if kind else "user"

    extras: dict[str, Any] = {}
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    reasoning: list[str] = []
    if isinstance(message.get("parts"), list):  # GenAI semantic conventions
        text_parts = []
        for part in message["parts"]:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "tool_call":
                call = _tool_call(part)
                if call:
                    calls.append(call)
            elif part.get("type") == "tool_call_response":
                response = next((part[k] for k in ("response", "result", "content") if k in part), None)
                results.append({"role": "tool", "tool_call_id": part.get("id"), "content": response})
            else:
                text_parts.append(part)
        content = _content(text_parts, reasoning)
    else:
        raw = message.get("content")
        if isinstance(raw, list):  # Anthropic-style blocks may hold calls and results
            for block in raw:
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "tool_use":
                    call = _tool_call(block)
                    if call:
                        calls.append(call)
                elif block.get("type") == "tool_result":
                    results.append(
                        {
                            "role": "tool",
                            "tool_call_id": block.get("tool_use_id"),
                            "content": block.get("content"),
                        }
                    )
        content = _content(raw, reasoning)
        if "contents" in message and content is None:  # OpenInference's list of parts
            content = _content(message["contents"], reasoning)
    for call in _listed(message.get("tool_calls")):
        normalized = _tool_call(call)
        if normalized:
            calls.append(normalized)
    if not calls:
        legacy = message.get("function_call") or (message.get("additional_kwargs") or {}).get("function_call")
        if isinstance(legacy, dict):
            normalized = _tool_call(legacy)
            if normalized:
                calls.append(normalized)
        for call in _listed((message.get("additional_kwargs") or {}).get("tool_calls")):
            normalized = _tool_call(call)
            if normalized:
                calls.append(normalized)
    if not calls and message.get("function_call_name"):  # OpenInference, legacy functions
        calls.append(
            {
                "type": "function",
                "function": {
                    "name": str(message["function_call_name"]),
                    "arguments": _arguments(message.get("function_call_arguments_json")),
                },
            }
        )

    if results and kind != "assistant":
        # tool results (Anthropic-style, or GenAI parts), and what else the message said
        rest = (
            []
            if content in (None, "", [])
            else [{"role": kind if kind != "tool" else "user", "content": content}]
        )
        return [_tool_message(r) for r in results] + rest
    out: dict[str, Any] = {"role": kind, "content": content}
    if kind == "assistant" and calls:
        out["tool_calls"] = calls
        if content == "":
            out["content"] = None
    if kind == "tool":
        tool_call_id = message.get("tool_call_id") or message.get("id")
        if tool_call_id:
            extras["tool_call_id"] = str(tool_call_id)
        raw = message.get("content")
        out["content"] = _tool_content(raw if isinstance(raw, str) or content is None else content)
    name = message.get("name")
    if isinstance(name, str) and name and (kind != "tool" or "tool_call_id" not in extras):
        extras["name"] = name  # a legacy function result is known by its name
    reasoning_text = message.get("reasoning_content") or (
        (message.get("additional_kwargs") or {}).get("reasoning_content")
        if isinstance(message.get("additional_kwargs"), dict)
        else None
    )
    if reasoning and not reasoning_text:
        extras["reasoning_content"] = "".join(reasoning)
    if "parts" not in message and "lc" not in message:
        # fields of an OpenAI-like message we do not read (refusal, audio, reasoning...) are kept
        extras.update({k: v for k, v in message.items() if k not in _MAPPED and v is not None})
    out.update(extras)
    if content is None and kind in ("user", "system"):
        out["content"] = ""
    return [out]


def _tool_message(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "tool", "content": _tool_content(result.get("content"))}
    if result.get("tool_call_id"):
        out["tool_call_id"] = str(result["tool_call_id"])
    return out


def _tool_content(value: Any) -> str:
    """A tool's result as text: a serialised LangChain ToolMessage gives its content;
    any other text is kept exactly as it came."""
    parsed = parse_json(value) if isinstance(value, str) else value
    if isinstance(parsed, dict) and parsed.get("lc") and isinstance(parsed.get("kwargs"), dict):
        return _tool_content(parsed["kwargs"].get("content"))
    if isinstance(parsed, dict) and parsed.get("type") == "tool" and isinstance(parsed.get("data"), dict):
        return _tool_content(parsed["data"].get("content"))
    if (
        isinstance(parsed, dict)
        and parsed.get("type") == "tool"
        and "content" in parsed
        and "tool_call_id" in parsed
    ):
        return _tool_content(parsed["content"])
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(p, dict) and "text" in p for p in value):
        return "".join(_text(p["text"]) for p in value)
    return _text(value)


def _listed(value: Any) -> list[Any]:
    value = parse_json(value)
    if isinstance(value, dict):
        return [value]
    return value if isinstance(value, list) else []


def normalize_messages(value: Any, *, system_instructions: Any = None) -> list[dict[str, Any]]:
    """A conversation in any accepted shape -> OpenAI chat messages."""
    value = parse_json(value)
    out: list[dict[str, Any]] = []
    system = parse_json(system_instructions)
    if system is not None and system != []:
        content = _content(system)
        if content:
            out.append({"role": "system", "content": content})
    if isinstance(value, dict):
        value = value["messages"] if isinstance(value.get("messages"), list) else [value]
    elif isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return out
    for item in value:
        if isinstance(item, list):  # LangChain batches: [[messages of prompt 0], ...]
            for inner in item:
                out.extend(normalize_message(inner))
        else:
            out.extend(normalize_message(item))
    return out


def normalize_tools(value: Any) -> list[dict[str, Any]] | None:
    """Offered tools in any accepted shape -> OpenAI ``tools``; None when none."""
    value = parse_json(value)
    if isinstance(value, dict):
        value = value.get("tools") if isinstance(value.get("tools"), list) else [value]
    if not isinstance(value, list):
        return None
    out = []
    for tool in value:
        tool = parse_json(tool)
        if not isinstance(tool, dict):
            continue
        if isinstance(tool.get("tool"), dict):  # OpenInference: {"tool": {"json_schema": ...}}
            tool = parse_json(tool["tool"].get("json_schema")) or tool["tool"]
        if isinstance(tool.get("json_schema"), str | dict):
            tool = parse_json(tool["json_schema"])
            if not isinstance(tool, dict):
                continue
        function = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        name = function.get("name")
        if not name:
            continue
        spec: dict[str, Any] = {"name": str(name)}
        if function.get("description"):
            spec["description"] = str(function["description"])
        parameters = parse_json(
            next((function[k] for k in ("parameters", "input_schema", "args_schema") if k in function), None)
        )
        if isinstance(parameters, dict):
            spec["parameters"] = parameters
        if function.get("strict") is not None:
            spec["strict"] = function["strict"]
        out.append({"type": "function", "function": spec})
    return out or None


def normalize_completion(
    value: Any, *, model: str | None = None, usage: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """A model's answer in any accepted shape -> a chat completion (choices of
    normalised assistant messages); None when there is no answer, or when
    ``value`` is no chat shape at all (a structured output stays the caller's)."""
    if isinstance(value, str):
        parsed = parse_json(value)
        value = parsed if _chat_shaped(parsed) else value  # JSON an answer holds is its text
    elif not _chat_shaped(value):
        return None
    if value is None or value == [] or value == "":
        return None
    body: dict[str, Any] = {}
    choices: list[dict[str, Any]] = []
    if isinstance(value, dict) and isinstance(value.get("choices"), list):
        for i, choice in enumerate(value["choices"]):
            if not isinstance(choice, dict):
                continue
            messages = normalize_message(choice.get("message") or choice.get("delta") or {}, "assistant")
            if messages:
                choices.append(_choice(choice.get("index", i), messages[0], choice.get("finish_reason")))
        for key in ("id", "model"):
            if isinstance(value.get(key), str):
                body[key] = value[key]
        if isinstance(value.get("usage"), dict):
            body["usage"] = value["usage"]
    elif isinstance(value, dict) and isinstance(value.get("generations"), list):  # LangChain LLMResult
        for batch in value["generations"]:
            for i, generation in enumerate(batch if isinstance(batch, list) else [batch]):
                if not isinstance(generation, dict):
                    continue
                message = generation.get("message") or {
                    "role": "assistant",
                    "content": generation.get("text"),
                }
                messages = normalize_message(message, "assistant")
                info = generation.get("generation_info") or {}
                if messages:
                    choices.append(_choice(i, messages[0], info.get("finish_reason")))
    else:
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            finish = item.get("finish_reason") if isinstance(item, dict) else None
            for message in normalize_message(item, "assistant"):
                if message["role"] == "assistant":
                    choices.append(
                        _choice(item.get("index", i) if isinstance(item, dict) else i, message, finish)
                    )
    # An answer with neither text nor a tool call (a failed call's empty generation) is no answer.
    choices = [c for c in choices if c["message"].get("content") or c["message"].get("tool_calls")]
    if not choices:
        return None
    body["choices"] = choices
    if model and "model" not in body:
        body["model"] = model
    if usage and "usage" not in body:
        body["usage"] = usage
    return body


_FINISH_REASONS = {"tool_call": "tool_calls", "function_call": "tool_calls", "max_tokens": "length"}


_CHAT_KEYS = {"choices", "generations", "role", "parts", "message", "lc", "tool_calls"}


def _chat_shaped(value: Any) -> bool:
    """A chat completion, a message or a list of messages (not just any JSON)."""
    if isinstance(value, dict):
        return bool(_CHAT_KEYS & value.keys())
    if isinstance(value, list):
        return bool(value) and all(
            isinstance(v, dict) and (_CHAT_KEYS | {"content"}) & v.keys() for v in value
        )
    return value is None


def _choice(index: Any, message: dict[str, Any], finish_reason: Any) -> dict[str, Any]:
    if isinstance(finish_reason, str):
        finish_reason = _FINISH_REASONS.get(finish_reason, finish_reason)
    return {
        "index": index if isinstance(index, int) else 0,
        "message": message,
        "finish_reason": finish_reason if isinstance(finish_reason, str) else None,
    }


def assistant_text(completion: Any) -> Any:
    """The first choice's answer: its text, else the message with its tool calls."""
    if not isinstance(completion, dict):
        return None
    try:
        message = completion["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return None
    if message.get("tool_calls"):
        return message
    return message.get("content")
