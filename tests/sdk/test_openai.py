"""The real openai client against a fake endpoint (the paid API is the only fake)."""

import asyncio
import json

import httpx
import openai
import pytest

import flywheel

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
        }
    ],
    "usage": {"prompt_tokens": 31, "completion_tokens": 9, "total_tokens": 40},
}


def _sse(chunks):
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


STREAM = _sse(
    [
        {
            "id": "c2",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_9",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": ""},
                            }
                        ],
                    },
                }
            ],
        },
        {
            "id": "c2",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [
                {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}}
            ],
        },
        {
            "id": "c2",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]},
                    "finish_reason": "tool_calls",
                }
            ],
        },
        {
            "id": "c2",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [],
            "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27},
        },
    ]
)


def handler(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    if body["messages"][-1]["content"] == "fail":
        return httpx.Response(
            400, json={"error": {"message": "bad request", "type": "invalid_request_error"}}
        )
    if body.get("stream"):
        return httpx.Response(200, text=STREAM, headers={"content-type": "text/event-stream"})
    return httpx.Response(200, json=COMPLETION)


@pytest.fixture
def fw(settings):
    client = flywheel.init("weather", settings=settings)
    yield client
    client.close()


def _client():
    return openai.OpenAI(
        api_key="sk-test",
        base_url="http://fake/v1",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
        max_retries=0,
    )


def test_chat_completion_inside_a_task_is_a_step(fw, store):
    client = fw.instrument_openai(_client())
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    with fw.task(input="Weather in Paris?") as task:
        response = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=TOOLS)
        task.finish(response.choices[0].message.tool_calls[0].function.arguments)
    assert response.choices[0].message.tool_calls[0].function.name == "get_weather"
    fw.flush()
    step = store.get_task(task.id).steps[0]
    assert step.kind == "llm_call" and step.name == "gpt-4o-mini"
    assert step.data["messages"] == messages and step.data["tools"] == TOOLS
    assert (
        step.data["response"]["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    )
    assert (step.data["input_tokens"], step.data["output_tokens"]) == (31, 9)
    assert step.latency_ms is not None


def test_call_outside_a_task_is_a_task_of_its_own(fw, store):
    client = fw.instrument_openai(_client())
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    fw.flush()
    tasks, _ = store.list_tasks(workload="weather")
    assert len(tasks) == 1 and tasks[0].success is True
    assert tasks[0].output["tool_calls"][0]["id"] == "call_1"


def test_errors_are_logged_and_still_raised(fw, store):
    client = fw.instrument_openai(_client())
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "fail"}])
    fw.flush()
    task = store.list_tasks(workload="weather")[0][0]
    assert task.success is False and "BadRequestError" in task.error
    assert "BadRequestError" in store.get_task(task.id).steps[0].error


def test_streaming_is_passed_through_and_reassembled(fw, store):
    client = fw.instrument_openai(_client())
    with fw.task(input="Oslo?") as task:
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Oslo?"}],
            tools=TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        task.finish("ok")
    assert len(chunks) == 4
    fw.flush()
    step = store.get_task(task.id).steps[0]
    call = step.data["response"]["choices"][0]["message"]["tool_calls"][0]
    assert call == {
        "id": "call_9",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    }
    assert step.data["input_tokens"] == 20


def test_async_client_plain_and_streaming(fw, store):
    client = fw.instrument_openai(
        openai.AsyncOpenAI(
            api_key="sk-test",
            base_url="http://fake/v1",
            http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
            max_retries=0,
        )
    )

    async def main():
        async with fw.task(input="both") as task:
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "a"}]
            )
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "b"}], stream=True
            )
            async for _ in stream:
                pass
            task.finish("ok")
        return task.id

    task_id = asyncio.run(main())
    fw.flush()
    steps = store.get_task(task_id).steps
    assert [s.kind for s in steps] == ["llm_call", "llm_call"]
    assert steps[1].data["response"]["choices"][0]["message"]["tool_calls"][0]["id"] == "call_9"


def test_instrumenting_twice_logs_once(fw, store):
    client = fw.instrument_openai(fw.instrument_openai(_client()))
    with fw.task(input="x") as task:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    fw.flush()
    assert len(store.get_task(task.id).steps) == 1
