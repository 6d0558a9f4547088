"""The tool parsers on model texts in the formats the models write (Hermes 2 Pro / Qwen 2.5
`<tool_call>` tags, Llama 3.1 JSON), whole and streamed in pieces of every size: a stream's
deltas add up to what the whole text gives."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from vllm_hydra.config.server import ServerConfig, ToolCallParser
from vllm_hydra.entrypoints.openai.errors import BadRequestError
from vllm_hydra.entrypoints.openai.protocol import ChatCompletionRequest
from vllm_hydra.entrypoints.openai.tool_parsers import ToolParser, ToolParserManager
from vllm_hydra.entrypoints.openai.tool_parsers.tool_choice import (
    NamedToolChoiceParser,
    RequiredToolChoiceParser,
    check_tool_request,
    get_json_schema_from_tools,
    new_tool_parser,
)

TOOL = {"type": "function", "function": {"name": "get_weather"}}
REQUEST = ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}], tools=[TOOL])
WEATHER_SF = {"location": "San Francisco, CA, USA", "unit": "celsius"}

# (model text, expected content, expected calls as (name, arguments))
HERMES_TEXTS: list[tuple[str, str | None, list[tuple[str, Any]]]] = [
    (
        '<tool_call>\n{"name": "get_current_temperature", "arguments": {"location": '
        '"San Francisco, CA, USA", "unit": "celsius"}}\n</tool_call>',
        None,
        [("get_current_temperature", WEATHER_SF)],
    ),
    (
        "I'll look both up.\n<tool_call>\n"
        '{"name": "get_current_temperature", "arguments": {"location": "Zürich"}}\n'
        "</tool_call>\n<tool_call>\n"
        '{"name": "search", "arguments": {"query": "a {b} </tool_call> \\"c\\"", "n": [1, 2]}}\n'
        "</tool_call>",
        "I'll look both up.\n",
        [
            ("get_current_temperature", {"location": "Zürich"}),
            ("search", {"query": 'a {b} </tool_call> "c"', "n": [1, 2]}),
        ],
    ),
    ('<tool_call>{"name": "now", "arguments": {}}</tool_call>', None, [("now", {})]),
    (
        '<tool_call>{"arguments": {"x": 1}, "name": "late_name"}</tool_call>',
        None,
        [("late_name", {"x": 1})],
    ),
    ('<tool_call>{"name": "no_args"}</tool_call>', None, [("no_args", {})]),
    (
        '<tool_call>{"name": "stringly", "arguments": "{\\"x\\": 1}"}</tool_call>',
        None,
        [("stringly", {"x": 1})],
    ),
    ("The capital of France is Paris.", "The capital of France is Paris.", []),
    ("Use the <tool> tag < > freely", "Use the <tool> tag < > freely", []),
    # A name that is not a string: no call.
    (
        '<tool_call>{"name": 3, "arguments": {}}</tool_call>',
        '<tool_call>{"name": 3, "arguments": {}}</tool_call>',
        [],
    ),
    # The JSON's end ends a call, closing tag or not.
    ('<tool_call>{"name": "f", "arguments": {"x": 1}} and', None, [("f", {"x": 1})]),
]
# Broken calls: no call, the whole text is the content (as in vLLM). A stream that already
# announced the call cannot take it back, so these are checked whole only.
HERMES_BROKEN = [
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"</tool_call>',
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par',
]

LLAMA_TEXTS: list[tuple[str, str | None, list[tuple[str, Any]]]] = [
    (
        '{"name": "get_current_conditions", "parameters": {"location": "San Francisco, CA", '
        '"unit": "Fahrenheit"}}',
        None,
        [("get_current_conditions", {"location": "San Francisco, CA", "unit": "Fahrenheit"})],
    ),
    (
        '<|python_tag|>{"name": "brave_search", "parameters": {"query": "weather today"}}',
        None,
        [("brave_search", {"query": "weather today"})],
    ),
    (
        '{"name": "a", "parameters": {"x": 1.5}}; {"name": "b", "arguments": {"y": [true, null]}}',
        None,
        [("a", {"x": 1.5}), ("b", {"y": [True, None]})],
    ),
    ("Hello! How can I help you today?", "Hello! How can I help you today?", []),
    ("{not json at all}", "{not json at all}", []),
]
LLAMA_BROKEN = ['{"name": "a", "parameters": {"x": ', '{"name": "a", "parameters": {"x": 1}']


def _whole(parser: ToolParser, text: str) -> tuple[str | None, list[tuple[str, Any]]]:
    info = parser.extract_tool_calls(text, REQUEST)
    assert info.tools_called == bool(info.tool_calls)
    for call in info.tool_calls:
        assert call.id.startswith("chatcmpl-tool-") and call.type == "function"
    calls = [(c.function.name, json.loads(c.function.arguments)) for c in info.tool_calls]
    return info.content, calls


def _streamed(
    parser: ToolParser, text: str, sizes: list[int], request: ChatCompletionRequest = REQUEST
) -> tuple[str | None, list[tuple[str, Any]]]:
    """Feed `text` in pieces of `sizes` (cycled), then flush; add the deltas up as a client."""
    pieces, start = [], 0
    while start < len(text):
        size = sizes[len(pieces) % len(sizes)]
        pieces.append(text[start : start + size])
        start += size
    deltas, previous = [], ""
    for piece in pieces:
        current = previous + piece
        deltas.append(
            parser.extract_tool_calls_streaming(previous, current, piece, [], [], [], request)
        )
        previous = current
    deltas.append(parser.flush_streaming(text, request))
    content, calls = "", {}
    for delta in filter(None, deltas):
        content += delta.content or ""
        for call in delta.tool_calls or []:
            if call.index not in calls:
                assert call.id and call.type == "function" and call.function.name
                calls[call.index] = [call.function.name, ""]
            else:
                assert call.id is None and call.function.name is None
            calls[call.index][1] += call.function.arguments or ""
    parsed = [
        (name, json.loads(arguments)) for name, arguments in (calls[i] for i in sorted(calls))
    ]
    return content or None, parsed


SIZES = [[1], [2], [3, 1, 7], [5, 11], [10_000]]


@pytest.mark.parametrize(("text", "content", "calls"), HERMES_TEXTS)
def test_hermes(text: str, content: str | None, calls: list[tuple[str, Any]]) -> None:
    hermes = ToolParserManager.get_tool_parser("hermes")
    assert _whole(hermes(None), text) == (content, calls)
    for sizes in SIZES:
        streamed_content, streamed_calls = _streamed(hermes(None), text, sizes)
        assert streamed_calls == calls, sizes
        assert streamed_content == (content if calls else text), sizes


@pytest.mark.parametrize(
    ("name", "text"),
    [("hermes", t) for t in HERMES_BROKEN] + [("llama3_json", t) for t in LLAMA_BROKEN],
)
def test_broken_call_is_content(name: str, text: str) -> None:
    assert _whole(ToolParserManager.get_tool_parser(name)(None), text) == (text, [])


@pytest.mark.parametrize(("text", "content", "calls"), LLAMA_TEXTS)
def test_llama3_json(text: str, content: str | None, calls: list[tuple[str, Any]]) -> None:
    llama = ToolParserManager.get_tool_parser("llama3_json")
    assert _whole(llama(None), text) == (content, calls)
    for sizes in SIZES:
        streamed_content, streamed_calls = _streamed(llama(None), text, sizes)
        assert streamed_calls == calls, sizes
        assert streamed_content == (content if calls else text), sizes


def test_stream_sends_a_name_once_complete_and_arguments_as_they_grow() -> None:
    hermes = ToolParserManager.get_tool_parser("hermes")(None)
    text = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    cut = text.index("_weather")
    assert (
        hermes.extract_tool_calls_streaming("", text[:cut], text[:cut], [], [], [], REQUEST) is None
    )
    cut2 = text.index('"Paris"') + 3
    delta = hermes.extract_tool_calls_streaming(text[:cut], text[:cut2], "", [], [], [], REQUEST)
    assert delta is not None and delta.content is None and delta.tool_calls is not None
    (call,) = delta.tool_calls
    assert call.function is not None
    assert (call.index, call.type, call.function.name) == (0, "function", "get_weather")
    assert call.function.arguments == '{"city": "Pa'


def test_content_that_may_start_a_tag_is_held_back() -> None:
    hermes = ToolParserManager.get_tool_parser("hermes")(None)
    delta = hermes.extract_tool_calls_streaming("", "Sure <tool_c", "", [], [], [], REQUEST)
    assert delta is not None and delta.content == "Sure "
    assert hermes.flush_streaming("Sure <tool_c", REQUEST).content == "<tool_c"  # type: ignore[union-attr]


def test_parallel_tool_calls_false_keeps_the_first_call() -> None:
    request = REQUEST.model_copy(update={"parallel_tool_calls": False})
    text = HERMES_TEXTS[1][0]
    hermes = ToolParserManager.get_tool_parser("hermes")
    info = hermes(None).extract_tool_calls(text, request)
    assert [c.function.name for c in info.tool_calls] == ["get_current_temperature"]
    _, streamed = _streamed(hermes(None), text, [4], request)
    assert [name for name, _ in streamed] == ["get_current_temperature"]


def test_required_reads_the_array_and_keeps_a_cut_call() -> None:
    text = '[{"name": "a", "parameters": {"x": 1}}, {"name": "b", "parameters": {}}]'
    assert _whole(RequiredToolChoiceParser(None), text) == (None, [("a", {"x": 1}), ("b", {})])
    assert _streamed(RequiredToolChoiceParser(None), text, [3])[1] == [("a", {"x": 1}), ("b", {})]
    info = RequiredToolChoiceParser(None).extract_tool_calls(text[:-12], REQUEST)
    assert [(c.function.name, c.function.arguments) for c in info.tool_calls] == [
        ("a", '{"x": 1}'),
        ("b", ""),
    ]


def test_named_function_is_the_whole_output() -> None:
    text = '{"zone": "CET", "hour": 5}'
    parser = NamedToolChoiceParser(None, "get_time")
    assert _whole(parser, text) == (None, [("get_time", {"zone": "CET", "hour": 5})])
    assert _streamed(NamedToolChoiceParser(None, "get_time"), text, [2])[1] == [
        ("get_time", {"zone": "CET", "hour": 5})
    ]


def test_required_schema_lifts_defs_and_limits_items() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "f",
                "parameters": {
                    "type": "object",
                    "properties": {"p": {"$ref": "#/$defs/P"}},
                    "$defs": {"P": {"type": "integer"}},
                },
            },
        },
        {"type": "function", "function": {"name": "g"}},
    ]
    request = ChatCompletionRequest(messages=[{"role": "user", "content": "x"}], tools=tools)
    schema = get_json_schema_from_tools(request.tools or [], parallel_tool_calls=False)
    assert schema["$defs"] == {"P": {"type": "integer"}} and schema["maxItems"] == 1
    names = [alt["properties"]["name"]["enum"] for alt in schema["items"]["anyOf"]]
    assert names == [["f"], ["g"]]
    assert "$defs" not in schema["items"]["anyOf"][0]["properties"]["parameters"]
    assert "$defs" in (request.tools or [])[0].function.parameters  # the request is untouched


def test_unknown_parser_names_the_registered_ones() -> None:
    with pytest.raises(KeyError, match="hermes"):
        ToolParserManager.get_tool_parser("nope")


def test_random_chunkings_agree() -> None:
    """Every text, in 20 random chunkings each, streams to what the whole text gives."""
    rng = random.Random(0)
    for name, texts in (("hermes", HERMES_TEXTS), ("llama3_json", LLAMA_TEXTS)):
        parser = ToolParserManager.get_tool_parser(name)
        for text, _, calls in texts:
            for _ in range(20):
                sizes = [rng.randint(1, 9) for _ in range(5)]
                assert _streamed(parser(None), text, sizes)[1] == calls


def test_auto_needs_the_server_keys() -> None:
    """Tools without tool_choice mean "auto" (OpenAI's rule); a server without
    server.enable_auto_tool_choice answers 400 naming tool_choice (vLLM's rule), never free
    text. "required" needs no parser."""
    plain = ServerConfig()
    with pytest.raises(BadRequestError) as caught:
        check_tool_request(REQUEST, plain)
    assert caught.value.param == "tool_choice"
    assert "server.enable_auto_tool_choice" in str(caught.value)
    required = REQUEST.model_copy(update={"tool_choice": "required"})
    check_tool_request(required, plain)
    assert isinstance(new_tool_parser(required, plain, None), RequiredToolChoiceParser)
    auto = ServerConfig(enable_auto_tool_choice=True, tool_call_parser=ToolCallParser.llama3_json)
    check_tool_request(REQUEST, auto)
    assert type(new_tool_parser(REQUEST, auto, None)).__name__ == "Llama3JsonToolParser"
    none = REQUEST.model_copy(update={"tool_choice": "none"})
    assert new_tool_parser(none, auto, None) is None
