"""`tool_choice` as vLLM serves it: "none" (tools shown to the template, nothing parsed),
"auto" (the configured parser reads the model's text), "required" and a named function (the
output held to a JSON schema built from the tools, then read back as calls)."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from vllm_hydra.entrypoints.openai.errors import BadRequestError
from vllm_hydra.entrypoints.openai.protocol import (
    ChatCompletionRequest,
    ChatCompletionToolParam,
    ExtractedToolCallInformation,
    FunctionCall,
    NamedToolChoice,
    ToolCall,
)
from vllm_hydra.entrypoints.openai.tool_parsers.abstract_tool_parser import (
    PartialParse,
    PartialToolCall,
    ToolParser,
    ToolParserManager,
    is_json,
    max_calls,
    partial_call,
)
from vllm_hydra.entrypoints.openai.tool_parsers.json_call_scanner import (
    scan_call,
    skip_whitespace,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from vllm_hydra.config.server import ServerConfig

# A function without `parameters` takes none.
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


def tool_choice(request: ChatCompletionRequest) -> str | NamedToolChoice:
    """The request's choice; unset means "auto" with tools and "none" without (OpenAI's rule)."""
    if request.tool_choice is not None:
        return request.tool_choice
    return "auto" if request.tools else "none"


def check_tool_request(request: ChatCompletionRequest, server: ServerConfig) -> None:
    """The 400s of vLLM's tool-usage checks, each naming its field."""
    choice = tool_choice(request)
    if request.tool_choice not in (None, "none") and not request.tools:
        raise BadRequestError("When using `tool_choice`, `tools` must be set.", param="tools")
    if isinstance(choice, NamedToolChoice):
        names = [tool.function.name for tool in request.tools or []]
        if choice.function.name not in names:
            raise BadRequestError(
                f"Tool '{choice.function.name}' has not been passed in `tools` "
                f"(tools: {', '.join(names)}).",
                param="tool_choice",
            )
    if choice == "auto" and request.tools and not server.enable_auto_tool_choice:
        raise BadRequestError(
            '"auto" tool choice requires server.enable_auto_tool_choice=true and '
            'server.tool_call_parser to be set. Send tool_choice "required", a named '
            'function or "none", or start the server with those keys.',
            param="tool_choice",
        )
    constrained = request.response_format is not None and request.response_format.type != "text"
    if tool_schema(request) is not None and (constrained or request.structured_outputs):
        raise BadRequestError(
            f"tool_choice={_choice_name(choice)} constrains the output itself; send it "
            "without response_format or structured_outputs.",
            param="tool_choice",
        )


def _choice_name(choice: str | NamedToolChoice) -> str:
    return choice if isinstance(choice, str) else f"function {choice.function.name}"


def tool_schema(request: ChatCompletionRequest) -> dict[str, Any] | None:
    """The JSON schema the output must follow for "required" or a named function, else None."""
    choice, tools = tool_choice(request), request.tools or []
    if isinstance(choice, NamedToolChoice):
        tool = next(t for t in tools if t.function.name == choice.function.name)
        return tool.function.parameters or NO_PARAMETERS
    if choice != "required":
        return None
    return get_json_schema_from_tools(tools, request.parallel_tool_calls)


def get_json_schema_from_tools(
    tools: list[ChatCompletionToolParam], parallel_tool_calls: bool
) -> dict[str, Any]:
    """A JSON array of one or more `{"name": <a tool>, "parameters": <its schema>}` (vLLM's
    schema for "required"); each tool's `$defs` are lifted to the top, where `$ref`s find them."""
    defs: dict[str, Any] = {}
    alternatives = []
    for tool in tools:
        parameters = copy.deepcopy(tool.function.parameters or NO_PARAMETERS)
        for name, schema in parameters.pop("$defs", {}).items():
            if defs.setdefault(name, schema) != schema:
                raise BadRequestError(
                    f"Tool definition '{name}' has multiple schemas, which is not supported.",
                    param="tools",
                )
        alternatives.append(
            {
                "properties": {
                    "name": {"type": "string", "enum": [tool.function.name]},
                    "parameters": parameters,
                },
                "required": ["name", "parameters"],
            }
        )
    schema: dict[str, Any] = {
        "type": "array",
        "minItems": 1,
        "items": {"type": "object", "anyOf": alternatives},
    }
    if not parallel_tool_calls:
        schema["maxItems"] = 1
    if defs:
        schema["$defs"] = defs
    return schema


class RequiredToolChoiceParser(ToolParser):
    """tool_choice="required": the output is the schema's JSON array of calls."""

    def partial_parse(self, text: str, final: bool) -> PartialParse:
        index = skip_whitespace(text, 0)
        if index == len(text):
            return PartialParse(content="")
        if text[index] != "[":
            return PartialParse(content=text)
        calls: list[PartialToolCall] = []
        index = skip_whitespace(text, index + 1)
        while text.startswith("{", index):
            scanned = scan_call(text, index, ("parameters",))
            calls.append(partial_call(scanned))
            if scanned.end is None:
                break
            index = skip_whitespace(text, scanned.end)
            if text.startswith(",", index):
                index = skip_whitespace(text, index + 1)
        return PartialParse(content="", calls=calls)

    def extract_tool_calls(
        self, model_output: str, request: ChatCompletionRequest
    ) -> ExtractedToolCallInformation:
        """An array cut short by max_tokens still answers with its calls, the last one's
        arguments cut too (finish_reason says "length"), as its stream has sent them."""
        view = self.partial_parse(model_output, final=True)
        calls = [call for call in view.calls if call.name is not None][: max_calls(request)]
        if not calls:
            return ExtractedToolCallInformation(tools_called=False, content=model_output)
        return ExtractedToolCallInformation(
            tools_called=True,
            tool_calls=[
                ToolCall(function=FunctionCall(name=c.name or "", arguments=c.arguments))
                for c in calls
            ],
        )


class NamedToolChoiceParser(ToolParser):
    """A named function: the whole output is that function's arguments."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase | None, name: str) -> None:
        super().__init__(tokenizer)
        self.name = name

    def partial_parse(self, text: str, final: bool) -> PartialParse:
        complete = final and is_json(text)
        return PartialParse(content="", calls=[PartialToolCall(self.name, text, complete)])

    def extract_tool_calls(
        self, model_output: str, request: ChatCompletionRequest
    ) -> ExtractedToolCallInformation:
        # Cut short by max_tokens the arguments are still the call (finish_reason says "length").
        call = ToolCall(function=FunctionCall(name=self.name, arguments=model_output))
        return ExtractedToolCallInformation(tools_called=True, tool_calls=[call])


def new_tool_parser(
    request: ChatCompletionRequest,
    server: ServerConfig,
    tokenizer: PreTrainedTokenizerBase | None,
) -> ToolParser | None:
    """The parser for one choice of the request; None: the output is plain content."""
    choice = tool_choice(request)
    if isinstance(choice, NamedToolChoice):
        return NamedToolChoiceParser(tokenizer, choice.function.name)
    if choice == "required":
        return RequiredToolChoiceParser(tokenizer)
    if choice == "auto" and request.tools and server.tool_call_parser is not None:
        return ToolParserManager.get_tool_parser(server.tool_call_parser.value)(tokenizer)
    return None
