"""`Llama3JsonToolParser` ("llama3_json"): Llama 3.1+ JSON tool calling, a reply that is one or
more `{"name": ..., "parameters": {...}}` objects (separated by ";"), optionally after
`<|python_tag|>`. A reply that starts otherwise is plain content."""

from __future__ import annotations

from vllm_hydra.entrypoints.openai.tool_parsers.abstract_tool_parser import (
    PartialParse,
    PartialToolCall,
    ToolParser,
    ToolParserManager,
    partial_call,
)
from vllm_hydra.entrypoints.openai.tool_parsers.json_call_scanner import (
    scan_call,
    skip_whitespace,
)

# Llama writes "parameters"; "arguments" is accepted too, as vLLM does.
ARGUMENT_KEYS = ("parameters", "arguments")


@ToolParserManager.register_module("llama3_json")
class Llama3JsonToolParser(ToolParser):
    bot_token = "<|python_tag|>"

    def partial_parse(self, text: str, final: bool) -> PartialParse:
        index = skip_whitespace(text, 0)
        if text.startswith(self.bot_token, index):
            index = skip_whitespace(text, index + len(self.bot_token))
        elif not final and self.bot_token.startswith(text[index:]):
            return PartialParse(content="")  # nothing yet, or the start of the tag
        if index == len(text):
            return PartialParse(content="" if not final else text)
        if text[index] != "{":
            return PartialParse(content=text)
        return PartialParse(content="", calls=self._calls(text, index))

    def _calls(self, text: str, index: int) -> list[PartialToolCall]:
        calls: list[PartialToolCall] = []
        while index < len(text) and text[index] == "{":
            scanned = scan_call(text, index, ARGUMENT_KEYS)
            calls.append(partial_call(scanned))
            if scanned.end is None:
                break
            index = skip_whitespace(text, scanned.end)
            if text.startswith(";", index):
                index = skip_whitespace(text, index + 1)
        return calls
