"""`Hermes2ProToolParser` ("hermes"): Hermes 2 Pro / 3 and Qwen 2.5+ write each call as
`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`; the text before the first call is
the content."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vllm_hydra.entrypoints.openai.tool_parsers.abstract_tool_parser import (
    PartialParse,
    PartialToolCall,
    ToolParser,
    ToolParserManager,
    partial_call,
    without_partial_tag,
)
from vllm_hydra.entrypoints.openai.tool_parsers.json_call_scanner import (
    ScannedCall,
    scan_call,
    skip_whitespace,
)

if TYPE_CHECKING:
    from vllm_hydra.entrypoints.openai.protocol import ChatCompletionRequest


@ToolParserManager.register_module("hermes")
class Hermes2ProToolParser(ToolParser):
    tool_call_start_token = "<tool_call>"
    tool_call_end_token = "</tool_call>"

    def adjust_request(self, request: ChatCompletionRequest) -> ChatCompletionRequest:
        # The tags are special tokens in Hermes and Qwen vocabularies: keep them in the text.
        if request.tools and request.tool_choice != "none":
            request.skip_special_tokens = False
        return request

    def partial_parse(self, text: str, final: bool) -> PartialParse:
        first = text.find(self.tool_call_start_token)
        if first < 0:
            held = text if final else without_partial_tag(text, self.tool_call_start_token)
            return PartialParse(content=held)
        calls: list[PartialToolCall] = []
        start = first
        while start >= 0:
            scanned = _scan_body(text, start + len(self.tool_call_start_token))
            calls.append(partial_call(scanned))
            if scanned.end is None:
                break  # the rest of the text is this call's
            # The JSON's end ends the call (a "</tool_call>" inside a string does not).
            start = text.find(self.tool_call_start_token, scanned.end)
        return PartialParse(content=text[:first], calls=calls)


def _scan_body(text: str, index: int) -> ScannedCall:
    index = skip_whitespace(text, index)
    if index == len(text):
        return ScannedCall()
    if text[index] != "{":
        return ScannedCall(invalid=True)
    return scan_call(text, index, ("arguments",))
