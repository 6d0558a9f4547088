"""Pydantic models of the OpenAI API's requests and responses (vLLM's openai/protocol.py).

Unknown request fields are accepted and logged, never rejected: clients written for OpenAI send
fields this server does not know, and refusing them would break those clients. Known fields are
strict (`OpenAIRequestModel`): OpenAI's types without coercion, finite floats, valid Unicode.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

logger = logging.getLogger(__name__)

# OpenAI's limit on n (vLLM's own, 16384, let one request queue thousands of sequences).
MAX_N = 128
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def random_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class OpenAIBaseModel(BaseModel):
    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _log_extra_fields(self) -> OpenAIBaseModel:
        if self.model_extra:
            logger.warning(
                "%s: ignoring unknown fields %s", type(self).__name__, sorted(self.model_extra)
            )
        return self


class OpenAIRequestModel(OpenAIBaseModel):
    """A request (or a part of one): strict, so `true` is not a number and `"yes"` not a bool,
    no NaN or Infinity, and every string valid Unicode (JSON's `\\ud800` escapes decode to lone
    surrogates that no tokenizer takes). Fields added later inherit all of it."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _valid_unicode(cls, value: Any, info: ValidationInfo) -> Any:
        check_unicode(value, info.field_name or "")
        return value

    @model_validator(mode="after")
    def _valid_unicode_extra(self) -> OpenAIRequestModel:
        for name, value in (self.model_extra or {}).items():
            check_unicode(value, name)
        return self


def check_unicode(value: Any, where: str = "") -> None:
    """Raise ValueError naming the first string (at any depth) that is not valid Unicode."""
    stack: list[tuple[str, Any]] = [(where, value)]
    while stack:  # iterative: a deeply nested value must not exhaust the recursion limit
        path, item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as e:
                at = f" ({path})" if path else ""
                raise ValueError(f"invalid Unicode{at}: {e.reason} at index {e.start}") from None
        elif isinstance(item, dict):
            stack.extend((f"{path}.{k}".lstrip("."), k) for k in item)
            stack.extend((f"{path}.{k}".lstrip("."), v) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((f"{path}.{i}".lstrip("."), v) for i, v in enumerate(item))


# ---- errors and usage -------------------------------------------------------------------------


class ErrorInfo(OpenAIBaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorResponse(OpenAIBaseModel):
    error: ErrorInfo


class UsageInfo(OpenAIBaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class StreamOptions(OpenAIRequestModel):
    include_usage: bool = False
    # vLLM: usage (so far) on every chunk, not only in a final one.
    continuous_usage_stats: bool = False


# ---- requests ---------------------------------------------------------------------------------


class JsonSchemaResponseFormat(OpenAIRequestModel):
    name: str | None = None
    description: str | None = None
    # `schema` as the API spells it (a BaseModel attribute in pydantic, hence the alias).
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(OpenAIRequestModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaResponseFormat | None = None


class StructuredOutputsRequest(OpenAIRequestModel):
    """vLLM's `structured_outputs` request field: exactly one constraint."""

    json_spec: str | dict[str, Any] | None = Field(default=None, alias="json")
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    structural_tag: str | None = None


class SamplingRequest(OpenAIRequestModel):
    """Fields completions and chat share: OpenAI's, then vLLM's extras."""

    model: str | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    n: int = Field(1, ge=1, le=MAX_N)
    seed: int | None = Field(None, ge=INT64_MIN, le=INT64_MAX)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    user: str | None = None
    # vLLM extras
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    prompt_logprobs: int | None = None  # top-N logprobs of each prompt token (-1: all)
    # Keep only the prompt's last N tokens (-1: max_model_len), as vLLM.
    truncate_prompt_tokens: int | None = Field(None, ge=-1)
    # The prompt's and each choice's token ids in the response.
    return_token_ids: bool = False
    # Logprob tokens as "token_id:<id>" (for tokens that are not valid text on their own).
    return_tokens_as_token_ids: bool = False
    # structured outputs (OpenAI's response_format, vLLM's structured_outputs)
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputsRequest | None = None


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    logprobs: int | None = None
    max_tokens: int | None = 16
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1, le=MAX_N)


class ChatContentPart(OpenAIRequestModel):
    type: Literal["text"]
    text: str


class FunctionCall(OpenAIRequestModel):
    name: str
    arguments: str  # JSON, as the model wrote it


class ToolCall(OpenAIRequestModel):
    id: str = Field(default_factory=lambda: random_id("chatcmpl-tool"))
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(OpenAIRequestModel):
    # OpenAI's roles, or any other the chat template renders (vLLM's custom roles).
    role: str = Field(min_length=1)
    content: str | list[ChatContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # an assistant's earlier calls
    tool_call_id: str | None = None  # a tool message: the call it answers

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class FunctionDefinition(OpenAIRequestModel):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatCompletionToolParam(OpenAIRequestModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(OpenAIRequestModel):
    name: str


class NamedToolChoice(OpenAIRequestModel):
    type: Literal["function"] = "function"
    function: NamedFunction


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = None
    max_tokens: int | None = None  # deprecated by OpenAI in favour of max_completion_tokens
    max_completion_tokens: int | None = None
    add_generation_prompt: bool = True
    # vLLM: the last (assistant) message is left open and the model continues it.
    continue_final_message: bool = False
    # vLLM: the answer starts with the last message when it has the response's role.
    echo: bool = False
    tools: list[ChatCompletionToolParam] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True


class TokenizeRequest(OpenAIRequestModel):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    return_token_strs: bool = False  # the tokens as the vocabulary spells them
    tools: list[ChatCompletionToolParam] | None = None  # rendered with messages


class DetokenizeRequest(OpenAIRequestModel):
    model: str | None = None
    tokens: list[int]


# ---- responses --------------------------------------------------------------------------------


class CompletionLogProbs(OpenAIBaseModel):
    text_offset: list[int] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    tokens: list[str] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)


class PromptLogprob(OpenAIBaseModel):
    """One token's entry in `prompt_logprobs` (vLLM's Logprob)."""

    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


# Per prompt position, token id -> its logprob; None for the first token (nothing predicts it).
PromptLogprobsList = list[dict[int, PromptLogprob] | None]


class CompletionResponseChoice(OpenAIBaseModel):
    index: int
    text: str
    logprobs: CompletionLogProbs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    prompt_logprobs: PromptLogprobsList | None = None
    prompt_token_ids: list[int] | None = None  # return_token_ids
    token_ids: list[int] | None = None  # return_token_ids


class CompletionResponse(OpenAIBaseModel):
    id: str = Field(default_factory=lambda: random_id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionResponseChoice]
    usage: UsageInfo | None = None


class CompletionStreamResponse(CompletionResponse):
    pass


class ChatLogProb(OpenAIBaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatLogProbsContent(ChatLogProb):
    top_logprobs: list[ChatLogProb] = Field(default_factory=list)


class ChatCompletionLogProbs(OpenAIBaseModel):
    content: list[ChatLogProbsContent] | None = None


class ChatResponseMessage(OpenAIBaseModel):
    role: str = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)


class ExtractedToolCallInformation(OpenAIBaseModel):
    """What a tool parser read from a model's whole output (vLLM's name)."""

    tools_called: bool
    tool_calls: list[ToolCall] = Field(default_factory=list)
    content: str | None = None  # the text outside the calls


class ChatCompletionResponseChoice(OpenAIBaseModel):
    index: int
    message: ChatResponseMessage
    logprobs: ChatCompletionLogProbs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    token_ids: list[int] | None = None  # return_token_ids


class ChatCompletionResponse(OpenAIBaseModel):
    id: str = Field(default_factory=lambda: random_id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatCompletionResponseChoice]
    usage: UsageInfo
    prompt_logprobs: PromptLogprobsList | None = None
    prompt_token_ids: list[int] | None = None  # return_token_ids


class DeltaFunctionCall(OpenAIBaseModel):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(OpenAIBaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunctionCall | None = None


class DeltaMessage(OpenAIBaseModel):
    role: str | None = None
    content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


class ChatCompletionStreamChoice(OpenAIBaseModel):
    index: int
    delta: DeltaMessage
    logprobs: ChatCompletionLogProbs | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    token_ids: list[int] | None = None  # return_token_ids: this chunk's


class ChatCompletionStreamResponse(OpenAIBaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatCompletionStreamChoice]
    usage: UsageInfo | None = None
    prompt_token_ids: list[int] | None = None  # return_token_ids: in the first chunk


class ModelCard(OpenAIBaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "vllm_hydra"
    root: str | None = None
    parent: str | None = None
    max_model_len: int | None = None


class ModelList(OpenAIBaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard] = Field(default_factory=list)


class TokenizeResponse(OpenAIBaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeResponse(OpenAIBaseModel):
    prompt: str
