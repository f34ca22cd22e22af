"""The real student in llama.cpp: small and few calls, so it runs in CI in seconds."""

import json

import pytest

from flywheel.errors import ConfigError
from flywheel.models.base import ChatRequest, FewShot
from flywheel.models.local import LocalModel, build_prompt, calls_schema
from flywheel.workloads.bfcl import load_bfcl

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def student():
    return LocalModel()


@pytest.fixture(scope="module")
def items():
    return load_bfcl(["simple_python", "parallel", "irrelevance"], limit=1, seed=4)


def test_output_always_parses_as_calls_to_offered_functions(student, items):
    shots = [FewShot(i.question, i.reference_calls()) for i in load_bfcl(["simple_python"], limit=3, seed=11)]
    for item in items:
        result = student.complete(
            ChatRequest(messages=item.messages, tools=item.tools, few_shot=shots, max_tokens=96)
        )
        offered = {t["function"]["name"] for t in item.tools}
        if result.error is None:
            assert all(call["name"] in offered for call in result.calls)
            assert json.loads(result.text) is not None
        else:  # only a cut-off at max_tokens may fail to parse
            assert result.output_tokens == 96
        assert result.output_tokens > 0 and result.tokens_per_second > 0
        assert result.confidence is None or 0.0 <= result.confidence <= 1.0
        assert result.cpu_seconds and result.cpu_seconds > 0


def test_decoding_is_deterministic(student, items):
    request = ChatRequest(messages=items[0].messages, tools=items[0].tools, max_tokens=48)
    assert student.complete(request).text == student.complete(request).text


def test_the_model_is_loaded_once_per_process(student):
    assert LocalModel().llama is student.llama


def test_prompt_and_grammar_cover_the_offered_functions(items):
    item = items[1]
    prompt = build_prompt(
        ChatRequest(
            messages=item.messages,
            tools=item.tools,
            few_shot=[FewShot("q?", [{"name": "f", "arguments": {}}])],
        )
    )
    assert prompt.endswith("Calls:") and item.question in prompt and 'Calls: [{"name": "f"' in prompt
    schema = calls_schema(item.tools)
    assert schema["type"] == "array"


def test_a_missing_or_foreign_adapter_is_a_clear_error_not_a_crash(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        LocalModel(lora_path=tmp_path / "missing.gguf")
    (tmp_path / "weights.bin").write_bytes(b"PK\x03\x04 not gguf")
    with pytest.raises(ConfigError, match="not a GGUF file"):
        LocalModel(lora_path=tmp_path / "weights.bin")


def test_a_looping_answer_stops_early_and_keeps_the_complete_call():
    from flywheel.models.base import ChatRequest, FewShot
    from flywheel.models.local import LocalModel, _looping

    assert _looping([5] + [0] * 10) and _looping([9, 7] + [3, 4] * 10) and _looping([1, 2, 3] * 4)
    assert not _looping([5, 0, 0, 0, 0]) and not _looping(list(range(40)))
    tools = [
        {
            "type": "function",
            "function": {
                "name": "calculate_bmi",
                "description": "BMI",
                "parameters": {
                    "type": "object",
                    "properties": {"weight": {"type": "integer"}, "height": {"type": "integer"}},
                    "required": ["weight", "height"],
                },
            },
        }
    ]
    shot = FewShot(
        "What is the BMI of a person of 80 kg and 180 cm?",
        [{"name": "calculate_bmi", "arguments": {"weight": 80, "height": 180}}],
        tools,
    )
    request = ChatRequest(
        messages=[{"role": "user", "content": "BMI for 70 kg and 175 cm?"}],
        tools=tools,
        few_shot=[shot] * 3,  # this prompt makes the student repeat its call until max_tokens
        max_tokens=192,
    )
    result = LocalModel().complete(request)
    assert result.calls == [{"name": "calculate_bmi", "arguments": {"weight": 70, "height": 175}}]
    assert result.error is None and result.output_tokens < 60


def test_lazy_grammar_decodes_exactly_what_the_eager_grammar_does(items):
    """The lazy check (the model's best token first, the vocabulary only when it
    breaks the grammar) is a speed-up, never a change: same tokens, same confidence,
    for answers that need the fallback (the free model starts with a space, and
    invents keys) and for those that do not."""
    pool = load_bfcl(["simple_python"], limit=3, seed=11)
    shots = [FewShot(i.question, i.reference_calls(), i.tools) for i in pool]
    eager, lazy = LocalModel(lazy_grammar=False), LocalModel()
    answered = 0
    for item in items:
        for few_shot in ([], shots):
            request = ChatRequest(messages=item.messages, tools=item.tools, few_shot=few_shot, max_tokens=64)
            # (once first: a prompt read afresh and one read from llama.cpp's prefix cache
            # give logits a hair apart, whichever the grammar)
            eager.complete(request)
            a, b = eager.complete(request), lazy.complete(request)
            assert (b.text, b.output_tokens, b.calls) == (a.text, a.output_tokens, a.calls)
            assert b.confidence == pytest.approx(a.confidence, abs=1e-6)
            answered += bool(a.calls)
    assert answered >= 2  # real calls were decoded, not only "[]"
