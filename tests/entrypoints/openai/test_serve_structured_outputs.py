"""Issue 16, Done-when 1, 2 and 4: structured outputs through the official openai client against
`python serve.py` on the embedded tiny model (whose free text is never JSON). Every sample of
every kind, seeded at temperature 1.0 and greedy, streamed and not, obeys its constraint."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

import jsonschema
import openai
import partial_json_parser
import pytest

from tests.entrypoints.openai.conftest import MODEL
from tests.entrypoints.openai.remote_server import RemoteServer

NUM_SEEDS = 20
PROMPT = "Tell me about the cat."
MESSAGES = [{"role": "user", "content": "Describe a person as JSON."}]

# Nested objects, arrays, enums, required fields, additionalProperties: false; bounded so that
# every sample can finish inside max_tokens.
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "user", "guest"]},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 8},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
        "tags": {
            "type": "array",
            "items": {"type": "string", "maxLength": 5},
            "minItems": 1,
            "maxItems": 3,
        },
    },
    "required": ["name", "age", "role", "address", "tags"],
    "additionalProperties": False,
}
REGEX = r"[a-z]{3}-\d{2}"
CHOICES = ["yes", "no", "maybe later"]
GRAMMAR = 'root ::= animal " " number\nanimal ::= "cat" | "dog" | "bird"\nnumber ::= [1-9] [0-9]?'
GRAMMAR_AS_REGEX = r"(cat|dog|bird) [1-9][0-9]?"


@pytest.fixture(scope="module")
def server(structured_server: RemoteServer) -> RemoteServer:
    """Compact JSON (see conftest.py); the model's template also shows tools, which these
    requests do not send."""
    return structured_server


def check_schema(text: str) -> None:
    jsonschema.validate(json.loads(text), PERSON)


def check_json_object(text: str) -> None:
    assert isinstance(json.loads(text), dict)


def check_regex(text: str) -> None:
    assert re.fullmatch(REGEX, text), text


def check_choice(text: str) -> None:
    assert text in CHOICES, text


def check_grammar(text: str) -> None:
    assert re.fullmatch(GRAMMAR_AS_REGEX, text), text


# kind: (request fields, checker, max_tokens)
KINDS: dict[str, tuple[dict[str, Any], Callable[[str], None], int]] = {
    "json_schema": (
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "person", "schema": PERSON, "strict": True},
            }
        },
        check_schema,
        160,
    ),
    "json_object": ({"response_format": {"type": "json_object"}}, check_json_object, 160),
    "regex": ({"structured_outputs": {"regex": REGEX}}, check_regex, 20),
    "choice": ({"structured_outputs": {"choice": CHOICES}}, check_choice, 20),
    "grammar": ({"structured_outputs": {"grammar": GRAMMAR}}, check_grammar, 20),
}


async def _chat(
    client: openai.AsyncOpenAI, fields: dict[str, Any], stream: bool, **sampling: Any
) -> tuple[str, str | None]:
    response_format = fields.get("response_format")
    extra = {k: v for k, v in fields.items() if k != "response_format"}
    args: dict[str, Any] = dict(model=MODEL, messages=MESSAGES, extra_body=extra, **sampling)
    if response_format is not None:
        args["response_format"] = response_format
    if not stream:
        reply = await client.chat.completions.create(**args)
        return reply.choices[0].message.content or "", reply.choices[0].finish_reason
    text, finish = "", None
    async for chunk in await client.chat.completions.create(**args, stream=True):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    return text, finish


async def _completion(
    client: openai.AsyncOpenAI, fields: dict[str, Any], stream: bool, **sampling: Any
) -> tuple[str, str | None]:
    args: dict[str, Any] = dict(model=MODEL, prompt=PROMPT, extra_body=fields, **sampling)
    if not stream:
        reply = await client.completions.create(**args)
        return reply.choices[0].text, reply.choices[0].finish_reason
    text, finish = "", None
    async for chunk in await client.completions.create(**args, stream=True):
        if chunk.choices:
            text += chunk.choices[0].text
            finish = chunk.choices[0].finish_reason or finish
    return text, finish


async def _samples(server: RemoteServer, kind: str) -> list[tuple[str, str | None]]:
    fields, _, max_tokens = KINDS[kind]
    client = server.async_client()
    calls = []
    for seed in range(NUM_SEEDS):  # chat and completions, streamed and not, alternately
        send = _chat if seed % 2 == 0 else _completion
        calls.append(
            send(client, fields, seed % 4 < 2, temperature=1.0, seed=seed, max_tokens=max_tokens)
        )
    for stream in (False, True):
        calls.append(_chat(client, fields, stream, temperature=0, max_tokens=max_tokens))
        calls.append(_completion(client, fields, stream, temperature=0, max_tokens=max_tokens))
    return await asyncio.gather(*calls)


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_sample_obeys_its_constraint(server: RemoteServer, kind: str) -> None:
    _, check, _ = KINDS[kind]
    samples = asyncio.run(_samples(server, kind))
    for text, finish in samples:
        if kind == "json_object" and finish == "length":
            # Any object: its strings are unbounded, so a sample may be cut; what was written
            # is still a prefix of valid JSON.
            assert isinstance(partial_json_parser.loads(text), dict), text
            continue
        assert finish == "stop", (finish, text)
        check(text)
    assert sum(finish == "stop" for _, finish in samples) >= NUM_SEEDS // 2
    if kind == "json_schema":
        assert len({text for text, _ in samples}) > NUM_SEEDS // 2  # really sampled


def test_free_text_is_not_json(server: RemoteServer) -> None:
    """Control: without a constraint the tiny model's text does not parse."""
    reply = server.client().chat.completions.create(
        model=MODEL, messages=MESSAGES, temperature=0, max_tokens=40
    )
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply.choices[0].message.content or "")


def test_too_few_tokens_is_length_not_stop(server: RemoteServer) -> None:
    fields, _, _ = KINDS["json_schema"]
    reply = server.client().chat.completions.create(
        model=MODEL, messages=MESSAGES, temperature=0, max_tokens=5, **fields
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 5


BAD = [
    (
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "foo"}},
            }
        },
        "response_format",
    ),
    (
        {"extra_body": {"structured_outputs": {"json": {"type": "object", "properties": 3}}}},
        "structured_outputs.json",
    ),
    ({"extra_body": {"structured_outputs": {"regex": "[a-"}}}, "structured_outputs.regex"),
    (
        {"extra_body": {"structured_outputs": {"grammar": "root ::= ("}}},
        "structured_outputs.grammar",
    ),
    ({"extra_body": {"structured_outputs": {"choice": []}}}, "structured_outputs.choice"),
    ({"extra_body": {"structured_outputs": {"regex": "a", "choice": ["a"]}}}, "structured_outputs"),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("fields", "param"), BAD)
def test_bad_constraint_is_400_naming_param(
    server: RemoteServer, fields: dict[str, Any], param: str, stream: bool
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        server.client().chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=5, stream=stream, **fields
        )
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == param, caught.value.body


async def _mixed_batch(server: RemoteServer) -> tuple[list[list[str]], list[list[str]]]:
    """30 free greedy completions alone, then again with structured ones in the same batch."""
    client = server.async_client()
    prompts = [f"The {word} was" for word in ["cat", "dog", "sun", "king", "tree"] * 6]

    async def free(prompt: str) -> list[str]:
        reply = await client.completions.create(
            model=MODEL, prompt=prompt, max_tokens=16, temperature=0, logprobs=0
        )
        return reply.choices[0].logprobs.tokens

    alone = await asyncio.gather(*(free(p) for p in prompts))
    fields, _, _ = KINDS["json_schema"]
    structured = [
        _completion(client, fields, False, temperature=1.0, seed=s, max_tokens=60) for s in range(3)
    ]
    mixed = await asyncio.gather(*(free(p) for p in prompts), *structured)
    return alone, mixed[: len(prompts)]


def test_structured_request_leaves_free_ones_unchanged(server: RemoteServer) -> None:
    alone, mixed = asyncio.run(_mixed_batch(server))
    assert mixed == alone
