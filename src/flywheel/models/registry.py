"""Turning a model spec from an agent version into a runtime.

local                    the bundled student (Gemma 3 270M, llama.cpp)
local:/path/model.gguf   another GGUF in llama.cpp
openai:MODEL[@BASE_URL]  any OpenAI-compatible endpoint (key: OPENAI_API_KEY or the arg)
replay                   the simulated teacher (answers from ground truth)

A LoRA adapter is a GGUF path or an artefact reference (``sha256:...``) that
is read from the store into a local cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from flywheel.errors import ConfigError
from flywheel.models.base import ChatModel

if TYPE_CHECKING:
    from flywheel.store import Store

__all__ = ["adapter_file", "load_model"]

_cache: dict[tuple[str, str | None], ChatModel] = {}


def load_model(
    spec: str,
    *,
    adapter: str | None = None,
    api_key: str | None = None,
    replay_answers: dict[str, list[dict[str, Any]]] | None = None,
    replay_error_rate: float = 0.1,
    seed: int = 0,
    store: Store | None = None,
) -> ChatModel:
    key = (spec, adapter)
    if key in _cache:
        return _cache[key]
    model: ChatModel
    if spec == "local" or spec.startswith("local:"):
        from flywheel.models.local import LocalModel

        path = Path(spec.split(":", 1)[1]) if ":" in spec else None
        model = LocalModel(path, lora_path=adapter_file(adapter, store) if adapter else None)
    elif spec.startswith("openai:"):
        from flywheel.models.remote import OpenAIModel

        name, _, base_url = spec.removeprefix("openai:").partition("@")
        model = OpenAIModel(name, base_url=base_url or None, api_key=api_key)
    elif spec == "replay":
        from flywheel.models.replay import ReplayTeacher

        if replay_answers is None:
            raise ConfigError("the replay teacher needs the workload's answers")
        model = ReplayTeacher(replay_answers, error_rate=replay_error_rate, seed=seed)
    else:
        raise ConfigError(
            f"unknown model {spec!r}", hint="use local, local:PATH.gguf, openai:MODEL[@BASE_URL] or replay"
        )
    _cache[key] = model
    return model


def adapter_file(adapter: str, store: Store | None) -> Path:
    """The local file of an adapter given as a path or as an artefact reference."""
    from flywheel.store.artefacts import artefact_path, is_ref

    if not is_ref(adapter):
        return Path(adapter)
    if store is None:
        raise ConfigError(
            f"adapter {adapter} is an artefact in the store, and no store was given to read it from",
            hint="pass the store (load_model(..., store=store))",
        )
    import os

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "data-flywheel" / "artefacts"
    return artefact_path(store, adapter, cache, ".gguf")
