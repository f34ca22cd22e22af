"""Fine-tuning the local student with LoRA, served by llama.cpp.

The base weights come from the student's own GGUF: transformers de-quantises
it once and the result is cached (bf16 safetensors, ~0.5 GB) so later runs
load in seconds. Training (torch on CPU, ``peft``; extra ``train``) sees each
example exactly as the runtime will prompt it (``build_prompt`` with the
candidate's system prompt) followed by the right answer; the loss is
computed on the answer tokens only, and only those positions are projected
onto the 262k-token vocabulary (the projection of every prompt position
would dominate the step). Examples are batched by length to waste little on
padding.

The adapter is written as a llama.cpp LoRA GGUF (``general.type = adapter``,
tensors ``blk.N.<tensor>.weight.lora_a|b``) and kept in the store as a
content-addressed artefact; the candidate version pins it by hash
(``adapter: sha256:...``), with the training data and settings recorded.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import random
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flywheel.agents.tool_agent import AgentConfig
from flywheel.errors import ConfigError, InvalidInput
from flywheel.improve.few_shot import Candidate, make_candidate
from flywheel.models.base import ChatRequest
from flywheel.models.local import build_prompt, student_model_path
from flywheel.records import AgentVersion
from flywheel.store import Store
from flywheel.store.artefacts import get_artefact, put_artefact, reader

__all__ = ["LoraResult", "LoraSettings", "LoraStrategy", "TrainingExample", "student_hf", "train_lora"]

_INSTALL = "pip install torch==2.13.0 && pip install 'data-flywheel[train]'"
#: the projections adapted in every transformer block
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TrainingExample:
    """A request as the agent sees it and the calls that answer it."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    calls: list[dict[str, Any]]
    system: str = ""
    weight: float = 1.0  # the dataset's weight (stale examples count less)


@dataclass
class LoraSettings:
    rank: int = 8
    alpha: float = 16.0
    learning_rate: float = 1e-3
    epochs: int = 3
    # A small dataset gets more epochs, so that training sees at least this many
    # examples in all (at most max_epochs), as OpenAI's fine-tuning API chooses its
    # default epochs (its cookbook: 3, raised to see at least 100 examples, at most
    # 25). In a cycle, 18 corrections for 3 epochs (15 optimiser steps) gained
    # nothing on the eval split (docs/improve.md).
    min_examples_seen: int = 100
    max_epochs: int = 25
    batch_size: int = 4
    max_sequence_tokens: int = 768  # longer examples are skipped (and counted)
    seed: int = 0
    threads: int | None = None  # torch threads; default: all cores
    # Compounding: a candidate's adapter starts from the serving version's (same
    # rank), and trains on all the labels so far, not from scratch each cycle.
    warm_start: bool = True
    # A warm start trains the serving adapter further on all the labels so far,
    # most of which it has already learnt: at the cold start's rate it overshoots
    # (a cycle-3 candidate fell from 43.2% to 35.8% held out, docs/improve.md).
    # It starts at this share of learning_rate instead, as continued fine-tuning
    # usually does.
    warm_start_lr_scale: float = 0.3

    def __post_init__(self) -> None:
        for name in ("rank", "epochs", "max_epochs", "batch_size", "max_sequence_tokens"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"LoRA setting {name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.learning_rate < 1:
            raise InvalidInput(f"LoRA learning_rate must be in (0, 1), got {self.learning_rate}")
        if not 0 < self.warm_start_lr_scale <= 1:
            raise InvalidInput(
                f"LoRA warm_start_lr_scale must be in (0, 1], got {self.warm_start_lr_scale}"
            )
        if self.min_examples_seen < 0:
            raise InvalidInput(f"LoRA min_examples_seen must be at least 0, got {self.min_examples_seen}")

    def epochs_for(self, examples: int) -> int:
        """The epochs to train ``examples`` for: ``epochs``, more for a small dataset."""
        needed = -(-self.min_examples_seen // max(examples, 1))
        return max(self.epochs, min(needed, self.max_epochs))


@dataclass
class LoraResult:
    adapter: bytes  # the llama.cpp LoRA GGUF
    warm_started: bool
    examples: int
    skipped: int  # longer than max_sequence_tokens
    answer_tokens: int
    tokens: int
    seconds: float
    losses: list[float] = field(default_factory=list)  # mean loss per epoch
    learning_rate: float = 0.0  # the rate training started at (lower for a warm start)

    @property
    def examples_per_second(self) -> float:
        return self.examples * len(self.losses) / self.seconds if self.seconds else 0.0


def _own_sources(task_id: str) -> frozenset[str]:
    """The knowledge sources a task's own labels became (see improve.knowledge)."""
    return frozenset({f"correction:{task_id}", f"missing_knowledge:{task_id}"})


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "data-flywheel"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _imports() -> tuple[Any, Any, Any]:
    try:
        import peft
        import torch
        import transformers
    except ImportError as exc:
        raise ConfigError(f"LoRA fine-tuning needs {exc.name}", hint=_INSTALL) from exc
    return torch, transformers, peft


def student_hf(gguf: Path | None = None, cache_dir: Path | None = None) -> Path:
    """A transformers copy of the student's GGUF (de-quantised once, then cached)."""
    torch, transformers, _ = _imports()
    gguf = gguf or student_model_path()
    target = (cache_dir or _cache_root() / "hf") / f"{gguf.stem}-{gguf.stat().st_size}"
    if (target / "model.safetensors").exists():
        return target
    with _file_lock(target.with_suffix(".lock")):
        if (target / "model.safetensors").exists():
            return target
        from safetensors.torch import save_file

        tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        partial = Path(tempfile.mkdtemp(dir=target.parent, prefix=".part-"))
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # de-quantised: plain weights from here on
        config.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
        weights = {
            k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items() if k not in tied
        }
        save_file(weights, partial / "model.safetensors", metadata={"format": "pt", "source": gguf.name})
        os.replace(partial, target)
    return target


def _batches(lengths: list[int], size: int, rng: random.Random) -> list[list[int]]:
    """Indices grouped by similar length (little padding), in a shuffled order."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], rng.random()))
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    rng.shuffle(batches)
    return batches


def train_lora(
    examples: Sequence[TrainingExample],
    settings: LoraSettings | None = None,
    *,
    base: Path | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    init_adapter: bytes | None = None,
) -> LoraResult:
    """Train a LoRA adapter for the student on ``examples``; returns it as GGUF.

    ``progress(step, steps, loss)`` is called after every optimiser step. Each
    example's answer tokens count by its ``weight``. ``init_adapter`` (a GGUF
    written by this trainer, same rank) is where training starts: a warm start.
    """
    settings = settings or LoraSettings()
    torch, transformers, peft = _imports()
    torch.set_num_threads(settings.threads or os.cpu_count() or 1)
    torch.manual_seed(settings.seed)
    folder = base or student_hf()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    if getattr(model.config, "final_logit_softcapping", None):
        raise ConfigError("models with final logit soft-capping are not supported by this trainer")

    encoded: list[tuple[list[int], list[int]]] = []
    weights: list[float] = []
    skipped = 0
    for example in examples:
        prompt = build_prompt(
            ChatRequest(messages=example.messages, tools=example.tools, system=example.system)
        )
        answer = json.dumps(
            [{"name": c["name"], "arguments": c.get("arguments") or {}} for c in example.calls]
        )
        prompt_ids = tokenizer(prompt)["input_ids"]
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        if len(prompt_ids) + len(answer_ids) > settings.max_sequence_tokens:
            skipped += 1
            continue
        encoded.append((prompt_ids, answer_ids))
        weights.append(max(0.0, float(example.weight)))
    if not encoded:
        raise InvalidInput(
            f"no training example fits in {settings.max_sequence_tokens} tokens ({skipped} skipped)",
            hint="raise max_sequence_tokens",
        )

    lora = peft.LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=0.0,
        target_modules=list(TARGETS),
        bias="none",
    )
    with warnings.catch_warnings():  # peft calls a transformers property deprecated in v5
        warnings.simplefilter("ignore", FutureWarning)
        wrapped = peft.get_peft_model(model, lora)
    causal = wrapped.base_model.model  # the *ForCausalLM with LoRA layers inside
    warm = _load_adapter(wrapped, model.config, init_adapter) if init_adapter else 0
    trainable = [p for p in wrapped.parameters() if p.requires_grad]
    rate = settings.learning_rate * (settings.warm_start_lr_scale if warm else 1.0)
    optimiser = torch.optim.AdamW(trainable, lr=rate, weight_decay=0.0)
    rng = random.Random(settings.seed)
    lengths = [len(p) + len(a) for p, a in encoded]
    epochs = settings.epochs_for(len(encoded))
    steps = epochs * -(-len(encoded) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: max(0.05, 1 - s / max(steps, 1)))
    started = time.perf_counter()
    losses: list[float] = []
    step = 0
    wrapped.train()
    for _ in range(epochs):
        epoch_loss, epoch_tokens = 0.0, 0
        for batch in _batches(lengths, settings.batch_size, rng):
            width = max(lengths[i] for i in batch)
            ids = torch.zeros((len(batch), width), dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            rows: list[int] = []
            positions: list[int] = []
            targets: list[int] = []
            token_weights: list[float] = []
            for row, i in enumerate(batch):
                prompt_ids, answer_ids = encoded[i]
                sequence = prompt_ids + answer_ids
                ids[row, : len(sequence)] = torch.tensor(sequence)
                mask[row, : len(sequence)] = 1
                # the position before each answer token predicts it
                for j, token in enumerate(answer_ids):
                    rows.append(row)
                    positions.append(len(prompt_ids) + j - 1)
                    targets.append(token)
                    token_weights.append(weights[i])
            hidden = causal.model(input_ids=ids, attention_mask=mask).last_hidden_state
            logits = causal.lm_head(hidden[torch.tensor(rows), torch.tensor(positions)])
            per_token = torch.nn.functional.cross_entropy(
                logits.float(), torch.tensor(targets), reduction="none"
            )
            scale = torch.tensor(token_weights)
            loss = (per_token * scale).sum() / scale.sum().clamp(min=1e-9)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimiser.step()
            schedule.step()
            optimiser.zero_grad(set_to_none=True)
            step += 1
            value = float(loss.detach())
            epoch_loss += value * len(targets)
            epoch_tokens += len(targets)
            if progress:
                progress(step, steps, value)
        losses.append(epoch_loss / max(epoch_tokens, 1))
    seconds = time.perf_counter() - started
    adapter = _adapter_gguf(wrapped, model.config, settings)
    return LoraResult(
        adapter=adapter,
        warm_started=warm > 0,
        examples=len(encoded),
        skipped=skipped,
        answer_tokens=sum(len(a) for _, a in encoded),
        tokens=sum(lengths),
        seconds=seconds,
        losses=losses,
        learning_rate=rate,
    )


def _gguf_names(config: Any) -> tuple[Any, Any, Any]:
    """The gguf module, the architecture, and its map of tensor names."""
    try:
        import gguf
    except ImportError as exc:
        raise ConfigError("reading or writing an adapter needs the gguf package", hint=_INSTALL) from exc
    arch_name = {"gemma3_text": "GEMMA3", "gemma3": "GEMMA3"}.get(
        config.model_type, config.model_type.upper()
    )
    arch = getattr(gguf.MODEL_ARCH, arch_name, None)
    if arch is None:
        raise ConfigError(f"no GGUF tensor names known for architecture {config.model_type!r}")
    return gguf, arch, gguf.get_tensor_name_map(arch, config.num_hidden_layers)


def _lora_tensors(wrapped: Any, names: Any) -> Iterator[tuple[str, Any]]:
    """(GGUF tensor name, parameter) of every LoRA weight of ``wrapped``."""
    for name, tensor in wrapped.named_parameters():
        if ".lora_A." not in name and ".lora_B." not in name:
            continue
        module = name.removeprefix("base_model.model.").rsplit(".lora_", 1)[0]
        mapped = names.get_name(module)
        if mapped is None:
            raise ConfigError(f"no GGUF name for {module}")
        part = "a" if ".lora_A." in name else "b"
        yield f"{mapped}.weight.lora_{part}", tensor


def _load_adapter(wrapped: Any, config: Any, data: bytes) -> int:
    """Start the LoRA weights from an adapter this trainer wrote; the tensors
    loaded (0 when its shapes differ, e.g. another rank: a cold start)."""
    import torch

    gguf, _, names = _gguf_names(config)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "parent.gguf"
        path.write_bytes(data)
        stored = {t.name: t.data for t in gguf.GGUFReader(str(path)).tensors}
        pairs = list(_lora_tensors(wrapped, names))
        if any(name not in stored or stored[name].size != tensor.numel() for name, tensor in pairs):
            return 0
        with torch.no_grad():
            for name, tensor in pairs:
                values = torch.from_numpy(stored[name].astype("float32").reshape(tuple(tensor.shape)))
                tensor.copy_(values)
    return len(pairs)


def _adapter_gguf(wrapped: Any, config: Any, settings: LoraSettings) -> bytes:
    """The trained LoRA weights as a llama.cpp adapter GGUF (float16 tensors)."""
    gguf, arch, names = _gguf_names(config)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "adapter.gguf"
        writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
        writer.add_string("general.type", "adapter")
        writer.add_string("adapter.type", "lora")
        writer.add_float32("adapter.lora.alpha", float(settings.alpha))
        for name, tensor in _lora_tensors(wrapped, names):
            writer.add_tensor(name, tensor.detach().to("cpu").half().numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path.read_bytes()


@dataclass
class LoraStrategy:
    """LoRA on the dataset's train split (human corrections and right answers).

    The candidate serves the current version's model with the adapter; by
    default its few-shot examples are dropped (``keep_few_shot=False``): the
    adapter has learnt from far more examples than a prompt holds, and the
    prompt is five times shorter; the few-shot split then trains as well.
    Prompt rules and tool hints are kept and trained with, so the adapter sees
    the prompt it will be served with.
    """

    name: str = "lora"
    k: int = 3  # accepted for a uniform interface; unused
    min_examples: int = 8
    keep_few_shot: bool = False
    settings: LoraSettings = field(default_factory=LoraSettings)
    progress: Callable[[str], None] | None = None

    def build(self, store: Store, workload: str, dataset_id: str, current: AgentVersion | None) -> Candidate:
        config: dict[str, Any] = dict(current.config) if current else {"model": "local"}
        spec = str(config.get("model", "local"))
        if spec != "local" and not spec.startswith("local:"):
            raise InvalidInput(
                f"the current version's model is {spec!r}; LoRA trains the local student (local[:PATH.gguf])",
                hint="use the openai_fine_tune strategy for models behind an API",
            )
        gguf_path = Path(spec.split(":", 1)[1]) if ":" in spec else student_model_path()
        # The few-shot pool trains too when the candidate drops its few-shot
        # examples: nothing else would use it, and labels are few (never the
        # eval split, which judges the candidate).
        splits = ("train",) if self.keep_few_shot else ("train", "few_shot")
        rows = [
            r
            for r in store.dataset_examples(dataset_id)
            if r["split"] in splits and r["kind"] == "sft" and r["target"].get("tool_calls") is not None
        ]
        if len(rows) < self.min_examples:
            raise InvalidInput(
                f"dataset {dataset_id} has {len(rows)} training examples with tool calls; "
                f"LoRA needs at least {self.min_examples}",
                hint="curate more traffic first",
            )
        if not self.keep_few_shot:
            config.pop("few_shot", None)
            config.pop("few_shot_pool", None)
        parent_adapter = config.pop("adapter", None)
        agent = AgentConfig.from_config(config, artefacts=reader(store))  # trained as it is served
        # Leave-one-out: an example's prompt never retrieves the knowledge made from
        # its own task (its correction would be the answer, and the adapter would
        # learn to copy retrieved calls instead of answering).
        examples = [
            TrainingExample(
                r["messages"],
                r["tools"] or [],
                r["target"]["tool_calls"],
                agent.system_for(r["messages"], _own_sources(r["task_id"])),
                float(r.get("weight", 1.0)),
            )
            for r in rows
        ]
        sources: dict[str, int] = {}
        for r in rows:
            sources[r["source"]] = sources.get(r["source"], 0) + 1
        self._say(f"LoRA: {len(examples)} examples, {self.settings.epochs_for(len(examples))} epochs")

        def tick(step: int, steps: int, loss: float) -> None:
            if step == steps or step % 10 == 0:
                self._say(f"LoRA step {step}/{steps}: loss {loss:.3f}")

        init = None
        if parent_adapter and self.settings.warm_start:
            init = get_artefact(store, parent_adapter)[1]
        result = train_lora(
            examples, self.settings, base=student_hf(gguf_path), progress=tick, init_adapter=init
        )
        data_hash = hashlib.sha256(json.dumps(sorted(r["id"] for r in rows)).encode()).hexdigest()
        meta = {
            "base_model": gguf_path.name,
            "dataset_id": dataset_id,
            "examples": result.examples,
            "skipped": result.skipped,
            "training_data_sha256": data_hash,
            "rank": self.settings.rank,
            "alpha": self.settings.alpha,
            "epochs": len(result.losses),
            "learning_rate": result.learning_rate,
            "losses": [round(x, 4) for x in result.losses],
            "warm_start_from": parent_adapter if result.warm_started else None,
            "weighted": sum(1 for e in examples if e.weight != 1.0),
            "seconds": round(result.seconds, 1),
        }
        ref = put_artefact(store, "lora-adapter", result.adapter, meta)
        config["adapter"] = ref
        changes = [
            f"LoRA adapter {ref[:19]}… ({len(result.adapter) / 1e6:.1f} MB, rank {self.settings.rank}) "
            f"trained on {result.examples} {' and '.join(splits)} examples "
            f"({', '.join(f'{n} {s}' for s, n in sorted(sources.items()))}; {result.skipped} too long) "
            f"for {len(result.losses)} epochs in {result.seconds:.0f} s "
            f"({result.examples_per_second:.2f} examples/s); loss by epoch "
            + " -> ".join(f"{x:.3f}" for x in result.losses)
        ]
        if result.warm_started:
            changes.append(
                f"warm-started from the serving adapter {str(parent_adapter)[:19]}… "
                f"at learning rate {result.learning_rate:g}"
            )
        elif parent_adapter and self.settings.warm_start:
            changes.append("the serving adapter's shapes differ (another rank): trained from scratch")
        if (
            current
            and not self.keep_few_shot
            and (current.config.get("few_shot") or current.config.get("few_shot_pool"))
        ):
            changes.append("few-shot examples dropped: the adapter has learnt from the training split")
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
