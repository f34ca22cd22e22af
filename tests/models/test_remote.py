"""An OpenAI-compatible endpoint through the real openai client (the endpoint is faked)."""

import json

import httpx
import openai
import pytest

from flywheel.models.base import ChatRequest, FewShot
from flywheel.models.pricing import PriceTable
from flywheel.models.remote import OpenAIModel


def handler(request):
    body = json.loads(request.content)
    assert body["temperature"] == 0
    assert body["messages"][1] == {"role": "user", "content": "example?"}
    if body["messages"][-1]["content"] == "boom":
        return httpx.Response(503, json={"error": {"message": "overloaded"}})
    return httpx.Response(
        200,
        json={
            "id": "c",
            "object": "chat.completion",
            "created": 1,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "logprobs": {
                        "content": [{"token": "x", "logprob": -0.1, "bytes": None, "top_logprobs": []}]
                    },
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "1",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                            }
                        ],
                    },
                }
            ],
            "usage": {"prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48},
        },
    )


def model():
    client = openai.OpenAI(
        api_key="k",
        base_url="http://fake/v1",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    return OpenAIModel("gpt-4o-mini", client=client)


def request(question):
    return ChatRequest(
        messages=[{"role": "user", "content": question}],
        tools=[],
        system="be brief",
        few_shot=[FewShot("example?", [{"name": "f", "arguments": {}}])],
    )


def test_tool_calls_usage_and_confidence():
    result = model().complete(request("weather in Oslo?"))
    assert result.calls == [{"name": "get_weather", "arguments": {"city": "Oslo"}}]
    assert (result.input_tokens, result.output_tokens) == (40, 8)
    assert 0.9 < result.confidence < 0.91
    assert PriceTable().cost(result.model, 40, 8) == (40 * 0.15 + 8 * 0.60) / 1e6


def test_endpoint_failure_is_the_result_error_not_an_exception():
    result = model().complete(request("boom"))
    assert result.calls == [] and "InternalServerError" in result.error


def test_prices_longest_prefix_and_cpu_time():
    table = PriceTable({"gpt-4o": (2.5, 10.0), "gpt-4o-mini": (0.15, 0.6)}, cpu_hour_usd=0.036)
    assert table.cost("gpt-4o-mini-2024", 1_000_000, 0) == 0.15
    assert table.cost("unknown", 10, 10) is None
    assert table.cost("gemma", 10, 10, cpu_seconds=100) == pytest.approx(0.001)


def test_a_cut_off_list_keeps_its_complete_calls_once():
    from flywheel.models.base import salvage_calls

    call = '{"name": "f", "arguments": {"x": 1}}'
    text = f'[{call}, {call}, {{"name": "g", "arguments": {{"y": [1, 2'
    assert salvage_calls(text) == [{"name": "f", "arguments": {"x": 1}}]
    assert salvage_calls("[") == []
