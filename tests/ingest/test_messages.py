"""One message model: each chat shape we accept becomes the same OpenAI chat messages."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flywheel.messages import (
    normalize_completion,
    normalize_messages,
    normalize_tools,
    unflatten,
)

# The conversation every shape below spells: a system prompt, a question, a tool
# call with its id, the tool's result, and the final answer.
OPENAI = [
    {"role": "system", "content": "You are a weather bot."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
]

GENAI_PARTS = [
    {"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]},
    {
        "role": "assistant",
        "parts": [
            {"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}
        ],
    },
    {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "18C and sunny"}]},
]

OPENINFERENCE_FLAT = {
    "0.message.role": "system",
    "0.message.content": "You are a weather bot.",
    "1.message.role": "user",
    "1.message.contents.0.message_content.type": "text",
    "1.message.contents.0.message_content.text": "Weather in Paris?",
    "2.message.role": "assistant",
    "2.message.tool_calls.0.tool_call.id": "call_1",
    "2.message.tool_calls.0.tool_call.function.name": "get_weather",
    "2.message.tool_calls.0.tool_call.function.arguments": '{"city": "Paris"}',
    "3.message.role": "tool",
    "3.message.tool_call_id": "call_1",
    "3.message.content": "18C and sunny",
}

OPENLLMETRY_FLAT = {
    "0.role": "system",
    "0.content": "You are a weather bot.",
    "1.role": "user",
    "1.content": "Weather in Paris?",
    "2.role": "assistant",
    "2.tool_calls.0.id": "call_1",
    "2.tool_calls.0.name": "get_weather",
    "2.tool_calls.0.arguments": '{"city": "Paris"}',
    "3.role": "tool",
    "3.tool_call_id": "call_1",
    "3.content": "18C and sunny",
}

LANGCHAIN_SERIALISED = [
    {
        "lc": 1,
        "type": "constructor",
        "id": ["langchain", "schema", "messages", "SystemMessage"],
        "kwargs": {"content": "You are a weather bot.", "type": "system"},
    },
    {
        "lc": 1,
        "type": "constructor",
        "id": ["langchain", "schema", "messages", "HumanMessage"],
        "kwargs": {"content": "Weather in Paris?", "type": "human"},
    },
    {
        "lc": 1,
        "type": "constructor",
        "id": ["langchain", "schema", "messages", "AIMessage"],
        "kwargs": {
            "content": "",
            "type": "ai",
            "tool_calls": [
                {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1", "type": "tool_call"}
            ],
        },
    },
    {
        "lc": 1,
        "type": "constructor",
        "id": ["langchain", "schema", "messages", "ToolMessage"],
        "kwargs": {
            "content": "18C and sunny",
            "type": "tool",
            "tool_call_id": "call_1",
            "name": "get_weather",
        },
    },
]

ANTHROPIC = [
    {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
    {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}],
    },
    {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "18C and sunny"}],
    },
]


def _canonical(messages):
    """Arguments compared as JSON values (spacing differs between libraries)."""
    out = json.loads(json.dumps(messages))
    for m in out:
        for call in m.get("tool_calls") or []:
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    return out


def test_openai_messages_are_kept_as_they_are():
    assert normalize_messages(OPENAI) == OPENAI


@pytest.mark.parametrize(
    ("shape", "system"),
    [
        (GENAI_PARTS, [{"type": "text", "content": "You are a weather bot."}]),
        (unflatten(OPENINFERENCE_FLAT), None),
        (unflatten(OPENLLMETRY_FLAT), None),
        (LANGCHAIN_SERIALISED, None),
        ([{"role": "system", "content": "You are a weather bot."}, *ANTHROPIC], None),
    ],
    ids=["genai-parts", "openinference", "openllmetry", "langchain", "anthropic-blocks"],
)
def test_every_shape_becomes_the_same_openai_conversation(shape, system):
    assert _canonical(normalize_messages(shape, system_instructions=system)) == _canonical(OPENAI)


def test_langchain_dict_messages_and_tool_results_as_serialised_messages():
    messages = normalize_messages(
        [
            {"type": "human", "content": "hi"},
            {"role": "tool", "tool_call_id": "c1", "content": json.dumps(LANGCHAIN_SERIALISED[3])},
        ]
    )
    assert messages == [
        {"role": "user", "content": "hi"},
        {"role": "tool", "content": "18C and sunny", "tool_call_id": "c1"},
    ]


def test_several_tool_results_in_one_genai_message_become_one_tool_message_each():
    messages = normalize_messages(
        [
            {
                "role": "tool",
                "parts": [
                    {"type": "tool_call_response", "id": "a", "response": {"temp": 18}},
                    {"type": "tool_call_response", "id": "b", "response": "ok"},
                ],
            }
        ]
    )
    assert messages == [
        {"role": "tool", "content": '{"temp":18}', "tool_call_id": "a"},
        {"role": "tool", "content": "ok", "tool_call_id": "b"},
    ]


def test_images_stay_content_parts_and_reasoning_is_not_content():
    messages = normalize_messages(
        [
            {
                "role": "user",
                "parts": [
                    {"type": "text", "content": "What is this?"},
                    {"type": "uri", "uri": "https://example.com/cat.png", "modality": "image"},
                ],
            },
            {
                "role": "assistant",
                "parts": [{"type": "reasoning", "content": "hmm"}, {"type": "text", "content": "A cat."}],
            },
        ]
    )
    assert messages[0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    assert messages[1] == {"role": "assistant", "content": "A cat.", "reasoning_content": "hmm"}


def test_tools_from_each_convention_become_openai_tools():
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    expected = [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": "Weather now", "parameters": schema},
        }
    ]
    openai_tool = expected[0]
    genai = [{"type": "function", "name": "get_weather", "description": "Weather now", "parameters": schema}]
    openinference = unflatten({"0.tool.json_schema": json.dumps(openai_tool)})
    openllmetry = unflatten(
        {"0.name": "get_weather", "0.description": "Weather now", "0.parameters": json.dumps(schema)}
    )
    anthropic = [{"name": "get_weather", "description": "Weather now", "input_schema": schema}]
    for shape in ([openai_tool], json.dumps(genai), openinference, openllmetry, anthropic):
        assert normalize_tools(shape) == expected, shape
    assert normalize_tools(None) is None
    assert normalize_tools("not json") is None


def test_answers_become_a_chat_completion():
    call = {
        "role": "assistant",
        "parts": [{"type": "tool_call", "id": "c", "name": "f", "arguments": {"x": 1}}],
        "finish_reason": "tool_calls",
    }
    completion = normalize_completion([call], model="gpt-4o-mini", usage={"prompt_tokens": 3})
    assert completion == {
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}}
                    ],
                },
            }
        ],
        "model": "gpt-4o-mini",
        "usage": {"prompt_tokens": 3},
    }
    # the older GenAI choice event, a LangChain LLMResult, plain text
    assert normalize_completion({"index": 0, "finish_reason": "stop", "message": {"content": "hi"}})[
        "choices"
    ] == [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]
    result = {
        "generations": [
            [{"text": "hi", "message": {"lc": 1, "id": ["x", "AIMessage"], "kwargs": {"content": "hi"}}}]
        ]
    }
    assert normalize_completion(result)["choices"][0]["message"] == {"role": "assistant", "content": "hi"}
    assert normalize_completion("hi")["choices"][0]["message"] == {"role": "assistant", "content": "hi"}
    assert normalize_completion(None) is None
    assert normalize_completion([]) is None


@pytest.mark.parametrize("junk", [None, 42, 1.5, True, "", "[", {"role": 3}, [None, 3, "x"], {"parts": "x"}])
def test_junk_never_raises(junk):
    normalize_messages(junk)
    normalize_tools(junk)
    normalize_completion(junk)


def test_what_no_shape_explains_is_kept_not_lost():
    """Content a user logged through the SDK survives normalisation."""
    messages = normalize_messages(
        [
            {"role": "user", "content": '[{"sku": "A1", "qty": 2}]'},  # the user's own JSON text
            {"role": "user", "content": {"query": "shoes", "size": 42}},  # structured content
            {
                "role": "user",
                "content": [{"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}}],
            },
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u", "detail": "high"}}]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "42"},
                    {"type": "text", "text": "and now?"},
                ],
            },
            {"role": "function", "name": "get_weather", "content": "18C"},
            {"role": "assistant", "content": "hi", "refusal": None, "reasoning_content": "because"},
            {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 20.10}'},
        ]
    )
    assert messages[0]["content"] == '[{"sku": "A1", "qty": 2}]'
    assert json.loads(messages[1]["content"]) == {"query": "shoes", "size": 42}
    assert messages[2]["content"][0]["input_audio"]["data"] == "UklG"
    assert messages[3]["content"][0]["image_url"]["detail"] == "high"
    assert messages[4] == {"role": "tool", "content": "42", "tool_call_id": "t1"}
    assert messages[5] == {"role": "user", "content": "and now?"}
    assert messages[6] == {"role": "tool", "content": "18C", "name": "get_weather"}
    assert messages[7] == {"role": "assistant", "content": "hi", "reasoning_content": "because"}
    assert messages[8]["content"] == '{"temp": 20.10}'  # exactly as the tool wrote it
    # a structured answer is the answer's text, not a message
    assert normalize_completion('{"title": "T", "content": "body"}')["choices"][0]["message"]["content"] == (
        '{"title": "T", "content": "body"}'
    )
    assert normalize_completion({"answer": 42}) is None  # no chat shape: the caller keeps it as it came


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["user", "assistant", "tool", "text", "tool_call", "parts", "[{}]", '{"a":1}']),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "role",
                    "content",
                    "parts",
                    "type",
                    "tool_calls",
                    "function",
                    "name",
                    "arguments",
                    "id",
                    "lc",
                    "kwargs",
                    "message",
                    "choices",
                    "text",
                    "tool_call_id",
                    "generations",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_any_json_is_read_without_an_exception(value):
    """Logged content is untrusted: whatever its shape, reading it never raises."""
    normalize_messages(value)
    normalize_messages([value])
    normalize_tools(value)
    normalize_completion(value)
