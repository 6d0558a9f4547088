"""Issue 16, Done-when 3: tool calling through the official openai client against
`python serve.py` on a copy of the embedded tiny model whose chat template shows tools and renders
assistant tool calls and `tool` messages (tests/entrypoints/openai/tool_model.py), served with the
hermes parser for tool_choice="auto" (the `structured_server` of conftest.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import partial_json_parser
import pytest
from transformers import AutoTokenizer

from tests.entrypoints.openai.conftest import MODEL
from tests.entrypoints.openai.remote_server import RemoteServer

NUM_SEEDS = 4
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]

# Bounded schemas, so that every sample can finish inside max_tokens.
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 8},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {
        "zone": {"enum": ["UTC", "CET", "PST"]},
        "hour": {"type": "integer", "minimum": 0, "maximum": 23},
    },
    "required": ["zone", "hour"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER},
    },
    {"type": "function", "function": {"name": "get_time", "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
# tool_choice="auto" on a model that never writes the format by itself: a regex holds the output
# to the hermes format, and the parser reads the calls back out of the text.
HERMES_CALL = (
    r'<tool_call>\{"name": "get_time", "arguments": \{"zone": "(UTC|CET|PST)", "hour": [1-9]\}\}'
    r"</tool_call>"
)
FORCED = {"structured_outputs": {"regex": HERMES_CALL}}


@pytest.fixture(scope="module")
def tool_server(structured_server: RemoteServer) -> RemoteServer:
    return structured_server


@pytest.fixture(scope="module")
def tokenizer(tool_model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(tool_model_dir)


async def _chat(
    client: openai.AsyncOpenAI, stream: bool, **fields: Any
) -> tuple[str | None, list[dict[str, str]], str | None]:
    """(content, tool calls as {id, name, arguments}, finish_reason), streamed or not."""
    args: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "max_tokens": 80, **fields}
    if not stream:
        reply = await client.chat.completions.create(**args)
        choice = reply.choices[0]
        calls = [
            {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
            for c in choice.message.tool_calls or []
        ]
        return choice.message.content, calls, choice.finish_reason
    content, calls, finish = None, {}, None
    async for chunk in await client.chat.completions.create(**args, stream=True):
        for choice in chunk.choices:
            if choice.delta.content:
                content = (content or "") + choice.delta.content
            for delta in choice.delta.tool_calls or []:
                _accumulate(calls, delta)
            finish = choice.finish_reason or finish
    return content, [calls[i] for i in sorted(calls)], finish


def _accumulate(calls: dict[int, dict[str, str]], delta: Any) -> None:
    """OpenAI's stream shape: a call's first delta has id, type and name; then arguments."""
    if delta.index not in calls:
        assert delta.id and delta.type == "function" and delta.function.name, delta
        calls[delta.index] = {"id": delta.id, "name": "", "arguments": ""}
    else:
        assert delta.id is None and not delta.function.name, delta
    calls[delta.index]["name"] += delta.function.name or ""
    calls[delta.index]["arguments"] += delta.function.arguments or ""


def _check_calls(calls: list[dict[str, str]]) -> None:
    for call in calls:
        assert call["id"].startswith("chatcmpl-tool-"), call
        jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])
    assert len({call["id"] for call in calls}) == len(calls)


async def _samples(tool_server: RemoteServer, **fields: Any) -> list[Any]:
    """Seeded samples at temperature 1.0, streamed and not alternately, plus greedy both ways."""
    client = tool_server.async_client()
    seeded = [
        _chat(client, seed % 2 == 1, temperature=1.0, seed=seed, **fields)
        for seed in range(NUM_SEEDS)
    ]
    greedy = [_chat(client, stream, temperature=0, **fields) for stream in (False, True)]
    return await asyncio.gather(*seeded, *greedy)


def test_required_calls_validate_against_their_tools(tool_server: RemoteServer) -> None:
    """The tiny model never closes the array by itself: max_tokens cuts it ("length"). Every
    call but the last validates; the last is whole or a prefix of JSON, cut where the stream
    stopped."""
    samples = asyncio.run(_samples(tool_server, tools=TOOLS, tool_choice="required", max_tokens=50))
    for content, calls, finish in samples:
        assert finish == "length" and not content, (finish, content)
        assert calls and calls[-1]["id"].startswith("chatcmpl-tool-"), calls
        partial_json_parser.loads(calls[-1]["arguments"] or "{}")
        _check_calls(calls[:-1])
    assert len({json.dumps(calls) for _, calls, _ in samples}) > NUM_SEEDS // 2  # really sampled


def test_required_without_parallel_calls_makes_one(tool_server: RemoteServer) -> None:
    samples = asyncio.run(
        _samples(tool_server, tools=TOOLS, tool_choice="required", parallel_tool_calls=False)
    )
    for content, calls, finish in samples:
        assert finish == "tool_calls" and not content, (finish, content)
        assert len(calls) == 1, calls
        _check_calls(calls)


def test_named_function_arguments_validate(tool_server: RemoteServer) -> None:
    named = {"type": "function", "function": {"name": "get_time"}}
    samples = asyncio.run(_samples(tool_server, tools=TOOLS, tool_choice=named))
    for content, calls, finish in samples:
        # A forced function ends with "stop", as OpenAI and vLLM answer it.
        assert finish == "stop" and not content, (finish, content)
        assert [call["name"] for call in calls] == ["get_time"]
        _check_calls(calls)


def test_auto_parses_a_reply_in_the_parser_format(tool_server: RemoteServer) -> None:
    samples = asyncio.run(_samples(tool_server, tools=TOOLS, extra_body=FORCED, max_tokens=120))
    for content, calls, finish in samples:
        assert finish == "tool_calls" and content is None, (finish, content)
        assert [call["name"] for call in calls] == ["get_time"]
        _check_calls(calls)


def test_auto_free_text_stays_content(tool_server: RemoteServer) -> None:
    """The model's own text has no call: auto returns it as content, as "none" does."""

    async def both() -> list[Any]:
        client = tool_server.async_client()
        sends = [
            _chat(client, stream, tools=TOOLS, tool_choice=choice, temperature=0, max_tokens=24)
            for choice in ("auto", "none")
            for stream in (False, True)
        ]
        return await asyncio.gather(*sends)

    replies = asyncio.run(both())
    assert all(calls == [] and finish == "length" for _, calls, finish in replies)
    assert len({content for content, _, _ in replies}) == 1 and replies[0][0]


def test_none_leaves_a_call_unparsed(tool_server: RemoteServer) -> None:
    content, calls, finish = asyncio.run(
        _chat(
            tool_server.async_client(),
            False,
            tools=TOOLS,
            tool_choice="none",
            extra_body=FORCED,
            max_tokens=120,
        )
    )
    assert calls == [] and finish == "stop"
    assert content is not None and content.startswith('<tool_call>{"name": "get_time"')


def _tokenize(tool_server: RemoteServer, messages: list[dict[str, Any]]) -> list[int]:
    body = {"model": MODEL, "messages": messages, "tools": TOOLS}
    response = httpx.post(f"{tool_server.url}/tokenize", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["tokens"]


def _reference(tokenizer: Any, messages: list[dict[str, Any]]) -> list[int]:
    """transformers' own rendering, with the arguments as dicts (its convention)."""
    rendered = json.loads(json.dumps(messages))
    for message in rendered:
        for call in message.get("tool_calls", []):
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    encoded = tokenizer.apply_chat_template(
        rendered, tools=TOOLS, add_generation_prompt=True, tokenize=True
    )
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def test_tools_reach_the_chat_template(tool_server: RemoteServer, tokenizer: Any) -> None:
    tokens = _tokenize(tool_server, MESSAGES)
    assert tokens == _reference(tokenizer, MESSAGES)
    assert '"name": "get_weather"' in tokenizer.decode(tokens)
    reply = tool_server.client().chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice="none", max_tokens=1
    )
    assert reply.usage.prompt_tokens == len(tokens)


def test_round_trip_with_a_tool_message(tool_server: RemoteServer, tokenizer: Any) -> None:
    """A call, its result as a `tool` message, and the model's next turn."""
    client = tool_server.client()
    first = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=60,
    )
    call = first.choices[0].message.tool_calls[0]
    messages = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [call.model_dump(include={"id", "type", "function"})],
        },
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'},
    ]
    second = client.chat.completions.create(
        model=MODEL, messages=messages, tools=TOOLS, tool_choice="none", max_tokens=8
    )
    assert second.choices[0].message.content
    tokens = _tokenize(tool_server, messages)
    assert tokens == _reference(tokenizer, messages)
    assert second.usage.prompt_tokens == len(tokens)
    text = tokenizer.decode(tokens)
    assert '<tool_response>{"temperature": 21}</tool_response>' in text
    assert f'<tool_call>{{"name": "{call.function.name}"' in text


BAD = [
    ({"tool_choice": "required"}, "tools"),
    (
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "tool_choice",
    ),
    (
        {"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}},
        "tool_choice",
    ),
    (
        {
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 3}}}],
            "tool_choice": "required",
        },
        "tools",
    ),
    (
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{"}}
                    ],
                }
            ]
        },
        "messages",
    ),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("fields", "param"), BAD)
def test_bad_tool_request_is_400_naming_param(
    tool_server: RemoteServer, fields: dict[str, Any], param: str, stream: bool
) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 4, "stream": stream, **fields}
    response = httpx.post(f"{tool_server.url}/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param, response.text
