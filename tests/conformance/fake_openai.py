"""A deterministic OpenAI-compatible chat server: the one fake of the conformance tests.

``POST /v1/chat/completions`` answers from the request alone, so every
instrumentation sees the same bytes for the same flow:

* a user message containing ``FAIL`` -> HTTP 400 with an OpenAI error body
  (``FAIL_500`` -> HTTP 500; the openai client retries those);
* tools offered and no tool result yet -> one ``get_weather`` tool call with
  id ``call_weather_1``;
* a tool result in the conversation -> the final answer, built from it;
* ``"stream": true`` -> SSE chunks, with a last usage chunk when
  ``stream_options.include_usage`` is set;
* otherwise a plain answer.

Run it on its own with ``python -m tests.conformance.fake_openai [PORT]``.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CREATED = 1_767_225_600
PLAIN_ANSWER = "The capital of France is Paris."
STREAM_ANSWER = "Paris is the capital of France."
TOOL_CALL_ID = "call_weather_1"
TOOL_ARGUMENTS = '{"city": "Paris"}'
ERROR_MESSAGE = "The model `gpt-4o-mini` cannot answer this request: FAIL was asked for."

USAGE = {
    "plain": (21, 8),
    "tool_call": (64, 17),
    "final": (92, 14),
    "stream": (19, 7),
}


def _usage(kind: str) -> dict[str, int]:
    prompt, completion = USAGE[kind]
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def answer(request: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
    """The status, the completion body and its kind for a chat request."""
    messages = request.get("messages") or []
    model = str(request.get("model") or "gpt-4o-mini")
    users = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
    if any("FAIL_500" in u for u in users):
        return 500, _error("The server had an error while processing your request.", "server_error"), "error"
    if any("FAIL" in u for u in users):
        return 400, _error(ERROR_MESSAGE, "invalid_request_error"), "error"
    tool_results = [m for m in messages if m.get("role") == "tool"]
    if tool_results:
        result = _text(tool_results[-1].get("content"))
        message: dict[str, Any] = {"role": "assistant", "content": f"In Paris it is {result}."}
        return 200, _completion("final", model, message, "stop"), "final"
    if request.get("tools"):
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": TOOL_CALL_ID,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": TOOL_ARGUMENTS},
                }
            ],
        }
        return 200, _completion("tool_call", model, message, "tool_calls"), "tool_call"
    if request.get("stream"):
        return (
            200,
            _completion("stream", model, {"role": "assistant", "content": STREAM_ANSWER}, "stop"),
            "stream",
        )
    return 200, _completion("plain", model, {"role": "assistant", "content": PLAIN_ANSWER}, "stop"), "plain"


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _completion(kind: str, model: str, message: dict[str, Any], finish: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{kind}",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": _usage(kind),
    }


def stream_chunks(body: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """The completion ``body`` as streamed chunks: role, a few words each, finish, usage."""
    message = body["choices"][0]["message"]
    base = {
        "id": body["id"],
        "object": "chat.completion.chunk",
        "created": body["created"],
        "model": body["model"],
        "system_fingerprint": body["system_fingerprint"],
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            **base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            out["usage"] = None
        return out

    words = (message.get("content") or "").split(" ")
    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": w if i == 0 else " " + w}) for i, w in enumerate(words)]
    chunks.append(chunk({}, body["choices"][0]["finish_reason"]))
    if include_usage:
        chunks.append({**base, "choices": [], "usage": body["usage"]})
    return chunks


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._json(200, {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]})
        else:
            self._json(404, _error(f"no route {self.path}", "invalid_request_error"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._json(404, _error(f"no route {self.path}", "invalid_request_error"))
            return
        try:
            request = json.loads(raw)
        except ValueError:
            self._json(400, _error("the body is not JSON", "invalid_request_error"))
            return
        status, body, _kind = answer(request)
        if status != 200 or not request.get("stream"):
            self._json(status, body)
            return
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        payload = b"".join(
            b"data: " + json.dumps(c).encode() + b"\n\n" for c in stream_chunks(body, include_usage)
        )
        payload += b"data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status >= 400:
            self.send_header("x-should-retry", "false")
        self.end_headers()
        self.wfile.write(data)


class FakeOpenAI:
    """The fake server in a background thread: ``with FakeOpenAI() as fake: fake.url``."""

    def __init__(self, port: int = 0) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


if __name__ == "__main__":
    fake = FakeOpenAI(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print(fake.url, flush=True)
    fake.server.serve_forever()
