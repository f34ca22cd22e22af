"""LoRA fine-tuning of the real student: trained in torch, served by llama.cpp.

Slow (about two minutes on 2 cores: a one-off conversion of the GGUF, then
training); SQLite only: the store's part (artefacts) is tested on both
backends in tests/store/test_artefacts.py.
"""

import json

import pytest

import flywheel
from flywheel.curate import DEFAULT_RULES, curate, parse_rules
from flywheel.deploy import create_version
from flywheel.errors import ConfigError, InvalidInput
from flywheel.evaluate.ast_check import check_calls
from flywheel.models.base import ChatRequest
from flywheel.models.registry import load_model
from flywheel.store.artefacts import get_artefact

pytestmark = pytest.mark.model
pytest.importorskip("peft", reason="needs the train extra")


def _log_teacher_answers(fw, items):
    for n, item in enumerate(items):
        with fw.task(session_id=f"s{n}", input=item.question) as task:
            calls = item.reference_calls()
            task.llm_call(
                model="teacher",
                messages=item.messages,
                tools=item.tools,
                response={
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": f"c{i}",
                            "type": "function",
                            "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
                        }
                        for i, c in enumerate(calls)
                    ],
                },
            )
            task.finish(calls, success=True, confidence=0.95)
    fw.flush()


def _correct(model, rows):
    right = 0
    for row in rows:
        result = model.complete(ChatRequest(messages=row["messages"], tools=row["tools"], max_tokens=160))
        expected = [
            {c["name"]: {k: [v] for k, v in c["arguments"].items()}} for c in row["target"]["tool_calls"]
        ]
        right += check_calls(result.calls, expected, row["tools"]).correct
    return right


def test_lora_adapter_learns_the_train_split_and_llama_cpp_serves_it(settings, store, backend):
    if backend != "sqlite":
        pytest.skip("the model part runs once")
    from flywheel.improve.lora import LoraSettings, LoraStrategy
    from flywheel.workloads.bfcl import load_bfcl

    fw = flywheel.init("bfcl", settings=settings)
    _log_teacher_answers(fw, load_bfcl(["simple_python"], limit=36, seed=3))
    fw.close()
    rules = parse_rules(DEFAULT_RULES.replace("eval: 0.2, few_shot: 0.1", "eval: 0.0, few_shot: 0.15"))
    dataset = curate(store, "bfcl", rules).dataset_id
    train = store.dataset_examples(dataset, "train")
    few_shot = store.dataset_examples(dataset, "few_shot")
    assert len(train) >= 24 and few_shot

    # the base pins a knowledge snapshot (read from the store while training; its
    # floor keeps the one item out of every prompt, so the training is the plain one)
    from flywheel.agents.knowledge import encode_snapshot
    from flywheel.models.embedding import Embedder
    from flywheel.store.artefacts import put_artefact

    fact = "Triangle areas are half of base times height."
    snapshot = put_artefact(
        store,
        "knowledge-index",
        encode_snapshot([{"id": "k1", "text": fact, "source": "t"}], Embedder().embed([fact]), Embedder.name),
    )
    knowledge = {"ref": snapshot, "k": 1, "min_score": 0.999}
    config = {"model": "local", "max_tokens": 160, "knowledge_snapshot": knowledge}
    base = create_version(store, "bfcl", config)
    said: list[str] = []
    strategy = LoraStrategy(settings=LoraSettings(epochs=3, batch_size=4), progress=said.append)
    candidate = strategy.build(store, "bfcl", dataset, base)

    ref = candidate.version.config["adapter"]
    meta, data = get_artefact(store, ref)
    assert meta["kind"] == "lora-adapter" and meta["dataset_id"] == dataset
    # the few-shot split trains too: the candidate drops its few-shot examples
    assert meta["examples"] == len(train) + len(few_shot) and data[:4] == b"GGUF"
    assert meta["losses"][-1] < meta["losses"][0]  # it learnt
    assert candidate.version.parent_id == base.id and candidate.version.strategy == "lora"
    assert candidate.version.config["knowledge_snapshot"] == knowledge  # kept, and trained with
    assert "examples/s" in candidate.changes[0] and any("step" in line for line in said)

    sample = train[:16]
    before = _correct(load_model("local"), sample)
    after = _correct(load_model("local", adapter=ref, store=store), sample)
    assert after >= before + 6, (before, after)


def test_a_small_dataset_trains_for_more_epochs():
    from flywheel.improve.lora import LoraSettings

    settings = LoraSettings(epochs=3)  # at least 100 examples seen, at most 25 epochs
    assert settings.epochs_for(18) == 6
    assert settings.epochs_for(145) == 3
    assert settings.epochs_for(2) == 25
    assert LoraSettings(epochs=3, min_examples_seen=0).epochs_for(5) == 3
    with pytest.raises(InvalidInput, match="max_epochs"):
        LoraSettings(max_epochs=0)


def test_lora_refuses_a_model_behind_an_api_and_a_tiny_dataset(settings, store):
    from flywheel.improve.lora import LoraSettings, LoraStrategy

    fw = flywheel.init("shop", settings=settings)
    fw.close()
    version = create_version(store, "shop", {"model": "openai:gpt-4o-mini"})
    with pytest.raises(InvalidInput, match="LoRA trains the local student"):
        LoraStrategy().build(store, "shop", "ds-missing", version)
    with pytest.raises(InvalidInput, match="learning_rate"):
        LoraSettings(learning_rate=3.0)
    with pytest.raises(InvalidInput, match="warm_start_lr_scale"):
        LoraSettings(warm_start_lr_scale=0.0)
    with pytest.raises(ConfigError, match="no store was given"):
        load_model("local", adapter="sha256:" + "0" * 64)


def test_a_warm_start_begins_where_the_serving_adapter_ended():
    """Compounding: the next cycle's adapter starts from the serving one (its first
    loss is the trained adapter's, below the base's), a fresh one from the base;
    an adapter of another rank cannot be started from, and says so."""
    from flywheel.improve.lora import LoraSettings, TrainingExample, train_lora
    from flywheel.workloads.bfcl import load_bfcl

    items = load_bfcl(["simple_python"], limit=2, seed=5)
    examples = [TrainingExample(i.messages, i.tools, i.reference_calls()) for i in items]
    one_step = LoraSettings(epochs=1, min_examples_seen=0, batch_size=2)
    first = train_lora(examples, LoraSettings(epochs=3, min_examples_seen=0, batch_size=2))
    warm = train_lora(examples, one_step, init_adapter=first.adapter)
    assert warm.warm_started and not first.warm_started
    # a warm start continues at a share of the rate (the cold one's overshoots)
    assert warm.learning_rate == pytest.approx(one_step.learning_rate * one_step.warm_start_lr_scale)
    assert first.learning_rate == one_step.learning_rate
    assert warm.losses[0] < first.losses[-1] < first.losses[0], (first.losses, warm.losses)
    other = train_lora(
        examples,
        LoraSettings(
            rank=4,
            **{
                k: getattr(one_step, k)
                for k in ("epochs", "min_examples_seen", "batch_size", "learning_rate")
            },
        ),
        init_adapter=first.adapter,
    )
    assert not other.warm_started
    assert abs(other.losses[0] - first.losses[0]) < 1e-3  # from the base, as the first one began
