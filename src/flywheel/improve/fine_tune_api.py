"""Fine-tuning through an OpenAI-compatible fine-tuning API.

The dataset's train split (right answers and human corrections, never the
held-out split) is exported as OpenAI chat fine-tuning JSONL with tools and
tool calls, uploaded (``POST /files``, purpose ``fine-tune``), and a job is
created (``POST /fine_tuning/jobs``) on the current version's model; the job
is polled until it ends. On success the candidate version serves the
fine-tuned model (``openai:FT_MODEL@BASE_URL``) and pins the job, the file and
the training data's hash; on failure or timeout the error says why and what
to do. Needs the ``openai`` extra and a model of the form
``openai:MODEL[@BASE_URL]`` in the current version.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flywheel.curate.export import export_dataset
from flywheel.errors import ConfigError, InvalidInput, StoreUnavailable
from flywheel.improve.few_shot import Candidate, make_candidate
from flywheel.records import AgentVersion
from flywheel.store import Store

__all__ = ["OpenAIFineTuneStrategy"]

TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class OpenAIFineTuneStrategy:
    name: str = "openai_fine_tune"
    k: int = 3  # accepted for a uniform interface; unused
    min_examples: int = 10  # the API's documented minimum
    poll_seconds: float = 30.0
    timeout_seconds: float = 6 * 3600
    suffix: str = "flywheel"
    api_key: str | None = None
    client_factory: Callable[[str | None, str | None], Any] | None = None  # (base_url, api_key) -> client
    progress: Callable[[str], None] | None = None

    def _client(self, base_url: str | None) -> Any:
        if self.client_factory is not None:
            return self.client_factory(base_url, self.api_key)
        try:
            import openai
        except ImportError as exc:
            raise ConfigError(
                "fine-tuning through an API needs the openai package",
                hint="pip install 'data-flywheel[openai]'",
            ) from exc
        return openai.OpenAI(base_url=base_url, api_key=self.api_key)

    def build(self, store: Store, workload: str, dataset_id: str, current: AgentVersion | None) -> Candidate:
        config: dict[str, Any] = dict(current.config) if current else {}
        spec = str(config.get("model", ""))
        if not spec.startswith("openai:"):
            raise InvalidInput(
                f"the current version's model is {spec or 'unset'!r}; "
                "API fine-tuning needs openai:MODEL[@BASE_URL]",
                hint="point the version at an OpenAI-compatible model (openai:MODEL@URL)",
            )
        model, _, base_url = spec.removeprefix("openai:").partition("@")
        rows = [r for r in store.dataset_examples(dataset_id, "train") if r["kind"] == "sft"]
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"{dataset_id}-train.jsonl"
            count = len(rows)
            if count >= self.min_examples:  # else too few to export: said below
                train = [{**r, "split": "train"} for r in rows]
                count = export_dataset(train, "openai-jsonl", path, name=f"{dataset_id} (train)").written
            if count < self.min_examples:
                raise InvalidInput(
                    f"dataset {dataset_id} has {count} training examples; "
                    f"fine-tuning needs at least {self.min_examples}",
                    hint="curate more traffic first",
                )
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            client = self._client(base_url or None)
            with path.open("rb") as data:
                uploaded = client.files.create(file=(path.name, data), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model=model, training_file=uploaded.id, suffix=self.suffix)
        self._say(f"fine-tuning job {job.id} on {model}: {count} examples")
        deadline = time.monotonic() + self.timeout_seconds
        while job.status not in TERMINAL:
            if time.monotonic() > deadline:
                raise StoreUnavailable(
                    f"fine-tuning job {job.id} still {job.status} after {self.timeout_seconds:.0f} s",
                    hint="run the cycle again later: the job keeps going on the provider's side",
                )
            time.sleep(self.poll_seconds)
            job = client.fine_tuning.jobs.retrieve(job.id)
            self._say(f"fine-tuning job {job.id}: {job.status}")
        if job.status != "succeeded" or not job.fine_tuned_model:
            error = getattr(job, "error", None)
            message = getattr(error, "message", None) or str(error or "no reason given")
            raise InvalidInput(f"fine-tuning job {job.id} {job.status}: {message}")
        config["model"] = f"openai:{job.fine_tuned_model}" + (f"@{base_url}" if base_url else "")
        changes = [
            f"model {model} -> {job.fine_tuned_model}: fine-tuned by job {job.id} on {count} train examples "
            f"(file {uploaded.id}, sha256 {digest[:16]})"
        ]
        return make_candidate(
            store,
            workload,
            config,
            strategy=self.name,
            dataset_id=dataset_id,
            current=current,
            changes=changes,
        )

    def _say(self, text: str) -> None:
        if self.progress:
            self.progress(text)
