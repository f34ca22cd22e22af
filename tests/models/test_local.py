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
