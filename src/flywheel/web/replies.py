"""What the assistant said, read from whatever shape a model call's response is stored in.

A stored ``llm_call`` step's ``response`` is what its capture path kept: an
OpenAI chat completion (``{"choices": [{"message": ...}]}``), an assistant
message, a list of messages (the last assistant one is the reply), GenAI
semantic-convention output messages with ``parts``, a list of tool calls, a
plain string, or any other JSON. :func:`read_reply` reads them all and never
raises: a shape it does not know gives None, and the page shows the value as
JSON. Nothing here marks content safe; the templates escape it.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Reply", "read_reply"]

#: roles an assistant's message carries (OpenAI, LangChain, Gemini)
ASSISTANT_ROLES = frozenset({"assistant", "ai", "model"})


@dataclass(frozen=True, slots=True)
class Reply:
    """The assistant's text and tool calls; each call is ``{"name", "arguments"}``, the
    shape reviewers' corrections use, with JSON-string arguments parsed."""

    text: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


def read_reply(value: Any) -> Reply | None:
    """The assistant's reply in ``value``, or None when it is no reply shape we know."""
    if isinstance(value, str):
        return Reply(text=value or None)
    if isinstance(value, dict):
        return _from_dict(value)
    if isinstance(value, list):
        return _from_list(value)
    return None


def _from_dict(value: dict[str, Any]) -> Reply | None:
    if "choices" in value:  # a whole chat completion: its first choice
        choices = value["choices"]
        first = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(first, dict):
            return None
        message = first.get("message", first.get("delta"))
        if isinstance(message, dict):
            return _from_message(message)
        text = first.get("text")  # a legacy completion
        return Reply(text=text or None) if isinstance(text, str) else None
    role = value.get("role")
    if _is_assistant(role) or (
        role is None and any(k in value for k in ("content", "parts", "tool_calls", "function_call"))
    ):
        return _from_message(value)
    return None


def _from_list(value: list[Any]) -> Reply | None:
    messages = [m for m in value if isinstance(m, dict) and "role" in m]
    if messages:  # a conversation: its last assistant message
        replies = [m for m in messages if _is_assistant(m["role"])]
        return _from_message(replies[-1]) if replies else None
    if value and all(isinstance(c, dict) and ("name" in c or "function" in c) for c in value):
        return Reply(tool_calls=[_call(c) for c in value])  # a list of tool calls
    return None


def _from_message(message: dict[str, Any]) -> Reply:
    """An assistant message: OpenAI chat (``content``, ``tool_calls``, the legacy
    ``function_call``) or GenAI semantic conventions (``parts``)."""
    texts = _texts(message.get("content"))
    calls = [_call(c) for c in _list(message.get("tool_calls")) if isinstance(c, dict)]
    if isinstance(message.get("function_call"), dict):
        calls.append(_call(message["function_call"]))
    for part in _list(message.get("parts")):
        if not isinstance(part, dict):
            continue
        if part.get("type") == "tool_call":
            calls.append(_call(part))
        elif part.get("type") == "text":
            texts.extend(_texts(part.get("content", part.get("text"))))
    return Reply(text="\n".join(texts) or None, tool_calls=calls)


def _texts(content: Any) -> list[str]:
    """The text of a message's content: a string, a list of content parts, or other JSON."""
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict) and part.get("type") in ("text", "output_text", None):
                text = part.get("text", part.get("content"))
                out.extend([text] if isinstance(text, str) else [])
        if out or not content:
            return out
    return [_json(content)]


def _call(call: dict[str, Any]) -> dict[str, Any]:
    """One tool call: OpenAI's ``{"function": {"name", "arguments"}}``, a flat
    ``{"name", "arguments"}`` (GenAI parts, corrections) or LangChain's ``args``."""
    function = call.get("function")
    spec = function if isinstance(function, dict) else call
    name = spec.get("name")
    arguments = spec.get("arguments", spec.get("args", {}))
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError, RecursionError):  # else shown as the string it is
            arguments = json.loads(arguments)
    return {
        "name": name if isinstance(name, str) or name is None else _json(name),
        "arguments": {} if arguments is None else arguments,
    }


def _is_assistant(role: Any) -> bool:
    return isinstance(role, str) and role.lower() in ASSISTANT_ROLES


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)
