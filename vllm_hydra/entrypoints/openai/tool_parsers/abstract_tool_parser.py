"""`ToolParser` and `ToolParserManager` (vLLM's names): read tool calls out of a model's text,
whole (`extract_tool_calls`) or as it streams (`extract_tool_calls_streaming`).

A parser only says how far its format has been read (`partial_parse`): the text meant as content
and each call's name and arguments so far. The base class turns that view into OpenAI's answer,
and, while streaming, into deltas: a call's id, type and name once its name is complete, then its
arguments as they grow.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from vllm_hydra.entrypoints.openai.protocol import (
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    ExtractedToolCallInformation,
    FunctionCall,
    ToolCall,
    random_id,
)
from vllm_hydra.entrypoints.openai.tool_parsers.json_call_scanner import ScannedCall

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from vllm_hydra.entrypoints.openai.protocol import ChatCompletionRequest


@dataclass
class PartialToolCall:
    name: str | None  # None until the model has written all of it
    arguments: str  # JSON text so far; only ever grows
    complete: bool  # the call is whole and its arguments parse


@dataclass
class PartialParse:
    content: str  # text that is not a tool call; only ever grows while streaming
    calls: list[PartialToolCall] = field(default_factory=list)


def partial_call(scanned: ScannedCall) -> PartialToolCall:
    """A scanned JSON call as the stream may show it: arguments written as a JSON string
    (`"{\\"a\\": 1}"`) are shown decoded, once the string is complete."""
    arguments = scanned.arguments
    if arguments is None:
        arguments = "{}" if scanned.end is not None else ""
    elif arguments.startswith('"'):
        arguments = json.loads(arguments) if scanned.arguments_done else ""
        arguments = arguments if isinstance(arguments, str) else ""
    complete = scanned.end is not None and not scanned.invalid and scanned.name is not None
    return PartialToolCall(scanned.name, arguments, complete and is_json(arguments))


def is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


class ToolParser:
    """One instance per choice of one request: streaming keeps what it has sent."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase | None) -> None:
        self.model_tokenizer = tokenizer
        self._sent_content = 0
        self._call_ids: list[str] = []  # of the calls announced so far
        self._sent_arguments: list[int] = []  # characters of each call's arguments sent

    def adjust_request(self, request: ChatCompletionRequest) -> ChatCompletionRequest:
        return request

    def partial_parse(self, text: str, final: bool) -> PartialParse:
        """How far `text` reads in this format; `final`: no more text will come."""
        raise NotImplementedError

    def extract_tool_calls(
        self, model_output: str, request: ChatCompletionRequest
    ) -> ExtractedToolCallInformation:
        view = self.partial_parse(model_output, final=True)
        if not view.calls or not all(call.complete for call in view.calls):
            return ExtractedToolCallInformation(tools_called=False, content=model_output)
        calls = view.calls[: max_calls(request)]
        return ExtractedToolCallInformation(
            tools_called=True,
            tool_calls=[
                ToolCall(function=FunctionCall(name=c.name or "", arguments=c.arguments))
                for c in calls
            ],
            content=view.content or None,
        )

    def extract_tool_calls_streaming(
        self,
        previous_text: str,
        current_text: str,
        delta_text: str,
        previous_token_ids: Sequence[int],
        current_token_ids: Sequence[int],
        delta_token_ids: Sequence[int],
        request: ChatCompletionRequest,
    ) -> DeltaMessage | None:
        """What is new since the last call; None while nothing can be sent yet."""
        return self._delta(self.partial_parse(current_text, final=False), request)

    def flush_streaming(
        self, current_text: str, request: ChatCompletionRequest
    ) -> DeltaMessage | None:
        """The end of the stream: text held back (a tag that never completed, or JSON that
        never became a call) goes out as content."""
        view = self.partial_parse(current_text, final=True)
        if not self._call_ids and not all(call.complete for call in view.calls):
            view = PartialParse(content=current_text)
        return self._delta(view, request)

    @property
    def tools_called(self) -> bool:
        """Whether the stream has announced a call."""
        return bool(self._call_ids)

    def _delta(self, view: PartialParse, request: ChatCompletionRequest) -> DeltaMessage | None:
        content = view.content[self._sent_content :]
        self._sent_content = max(self._sent_content, len(view.content))
        deltas: list[DeltaToolCall] = []
        for index, call in enumerate(view.calls[: max_calls(request)]):
            if index == len(self._call_ids) and call.name is None:
                break  # calls are announced in order, each once its name is known
            if index == len(self._call_ids):
                deltas.append(self._announce(index, call.name or ""))
            new_arguments = call.arguments[self._sent_arguments[index] :]
            self._sent_arguments[index] = len(call.arguments)
            if new_arguments and deltas and deltas[-1].index == index:
                deltas[-1].function = DeltaFunctionCall(name=call.name, arguments=new_arguments)
            elif new_arguments:
                function = DeltaFunctionCall(arguments=new_arguments)
                deltas.append(DeltaToolCall(index=index, function=function))
        if not content and not deltas:
            return None
        return DeltaMessage(content=content or None, tool_calls=deltas or None)

    def _announce(self, index: int, name: str) -> DeltaToolCall:
        """A call's first delta: its id, type and name (OpenAI's first chunk of a call)."""
        self._call_ids.append(random_id("chatcmpl-tool"))
        self._sent_arguments.append(0)
        return DeltaToolCall(
            index=index,
            id=self._call_ids[index],
            type="function",
            function=DeltaFunctionCall(name=name, arguments=""),
        )


def max_calls(request: ChatCompletionRequest) -> int | None:
    """parallel_tool_calls=false: only the first call counts (as in vLLM)."""
    return None if request.parallel_tool_calls else 1


def without_partial_tag(text: str, tag: str) -> str:
    """`text` less a tail that may be the start of `tag` (held back until it is decided)."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:length]):
            return text[:-length]
    return text


class ToolParserManager:
    """Tool parsers by the name `server.tool_call_parser` gives (vLLM's registry)."""

    tool_parsers: ClassVar[dict[str, type[ToolParser]]] = {}

    @classmethod
    def register_module(
        cls, names: str | list[str]
    ) -> Callable[[type[ToolParser]], type[ToolParser]]:
        def register(parser: type[ToolParser]) -> type[ToolParser]:
            for name in [names] if isinstance(names, str) else names:
                cls.tool_parsers[name] = parser
            return parser

        return register

    @classmethod
    def get_tool_parser(cls, name: str) -> type[ToolParser]:
        if name not in cls.tool_parsers:
            known = ", ".join(sorted(cls.tool_parsers))
            raise KeyError(f"No tool parser named {name!r}; registered: {known}.")
        return cls.tool_parsers[name]
