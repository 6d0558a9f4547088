"""`OpenAIServingChat`: POST /v1/chat/completions, as JSON or as SSE chunks.

The messages (and the request's tools) go through the model's chat template; a stream sends
each choice's role first, then content deltas, then (with `stream_options.include_usage`) one
usage chunk. With tools, a `ToolParser` per choice turns the output into `tool_calls` (whole, or
as OpenAI streams them: a call's id and name, then its arguments in pieces).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

from fastapi import Request

from vllm_hydra.entrypoints.openai.errors import BadRequestError
from vllm_hydra.entrypoints.openai.protocol import (
    ChatCompletionLogProbs,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionResponseChoice,
    ChatCompletionStreamChoice,
    ChatCompletionStreamResponse,
    ChatLogProb,
    ChatLogProbsContent,
    ChatResponseMessage,
    DeltaMessage,
    NamedToolChoice,
    random_id,
)
from vllm_hydra.entrypoints.openai.server_load import AdmittedStream
from vllm_hydra.entrypoints.openai.serving_engine import (
    OpenAIServing,
    last_output,
    prompt_logprobs_json,
    render_chat,
    token_text,
    until_disconnected,
    usage,
)
from vllm_hydra.entrypoints.openai.tool_parsers import ToolParser
from vllm_hydra.entrypoints.openai.tool_parsers.tool_choice import (
    check_tool_request,
    new_tool_parser,
    tool_choice,
    tool_schema,
)
from vllm_hydra.request_output import CompletionOutput, Logprob, RequestOutput
from vllm_hydra.sampling_params import SamplingParams, StructuredOutputsParams


class OpenAIServingChat(OpenAIServing):
    prompt_param = "messages"

    async def create_chat_completion(
        self, request: ChatCompletionRequest, raw_request: Request
    ) -> ChatCompletionResponse | AsyncIterator[str]:
        """Validate everything, then answer as JSON or return the SSE stream."""
        admission = self.check_request(request, request.n)
        try:
            check_tool_request(request, self.engine_client.vllm_config.server)
            self._new_tool_parser(request)  # (may adjust the request, as in vLLM)
            # The template sees the tools whatever the choice ("none" too, as vLLM's default).
            lora = self.lora_request(request.model)
            token_ids = await self.render(request)
            params = self._params(request, token_ids)
            request_id = random_id("chatcmpl")
            prompt = self._decode(token_ids)
            outputs = self.generate(token_ids, params, request_id, prompt, raw_request, lora)
            if request.stream:
                return AdmittedStream(self._stream(request, request_id, outputs), admission)
            final = await until_disconnected(last_output(outputs), raw_request)
        except BaseException:
            admission.release()
            raise
        admission.release()
        return self._response(request, request_id, final)

    async def render(self, request: ChatCompletionRequest) -> list[int]:
        """The messages through the model's chat template (in the tokenizer thread), keeping
        the last truncate_prompt_tokens tokens when that is set."""
        keep = self.truncation(request)
        token_ids = await render_chat(
            self.async_tokenizer,
            request.messages,
            request.add_generation_prompt,
            for_generation=keep is None,  # a prompt to be truncated may be of any length
            continue_final_message=request.continue_final_message,
            tools=request.tools,
        )
        if keep is not None and len(token_ids) > keep:
            token_ids = token_ids[len(token_ids) - keep :]
        return token_ids

    def _new_tool_parser(self, request: ChatCompletionRequest) -> ToolParser | None:
        """A fresh parser for one choice (None: plain content), after it adjusted the request."""
        server = self.engine_client.vllm_config.server
        parser = new_tool_parser(request, server, self.engine_client.tokenizer)
        if parser is not None:
            parser.adjust_request(request)
        return parser

    def _params(self, request: ChatCompletionRequest, token_ids: list[int]) -> SamplingParams:
        max_param = (
            "max_tokens" if request.max_completion_tokens is None else ("max_completion_tokens")
        )
        requested = request.max_completion_tokens
        if requested is None:
            requested = request.max_tokens
        if request.top_logprobs is not None and not request.logprobs:
            raise BadRequestError(
                "top_logprobs requires logprobs to be true.", param="top_logprobs"
            )
        max_tokens = self.check_length(len(token_ids), requested, max_param)
        logprobs = (request.top_logprobs or 0) if request.logprobs else None
        params = self.sampling_params(request, max_tokens, logprobs)
        renames = {"max_tokens": max_param, "logprobs": "top_logprobs", "prompt": "messages"}
        schema = tool_schema(request)
        if schema is not None:  # "required" or a named function: held to the tools' schema
            params.structured_outputs = StructuredOutputsParams(json=json.dumps(schema))
            renames["structured_outputs.json"] = "tools"
        self.validate(token_ids, params, renames, request)
        return params

    def _decode(self, token_ids: list[int]) -> str | None:
        tokenizer = self.engine_client.tokenizer
        return None if tokenizer is None else tokenizer.decode(token_ids)

    # ---- non-streaming -----------------------------------------------------------------------

    def _response(
        self, request: ChatCompletionRequest, request_id: str, final: RequestOutput
    ) -> ChatCompletionResponse:
        echo, with_ids = _echoed(request), request.return_token_ids
        choices = [self._choice(request, output, echo) for output in final.outputs]
        num_generated = sum(len(o.token_ids) for o in final.outputs)
        return ChatCompletionResponse(
            id=request_id,
            model=self.models.model_name(request.model),
            choices=choices,
            usage=usage(len(final.prompt_token_ids), num_generated),
            prompt_logprobs=(
                prompt_logprobs_json(final.prompt_logprobs)
                if request.prompt_logprobs is not None
                else None
            ),
            prompt_token_ids=list(final.prompt_token_ids) if with_ids else None,
        )

    def _choice(
        self, request: ChatCompletionRequest, output: CompletionOutput, echo: str = ""
    ) -> ChatCompletionResponseChoice:
        message, called = ChatResponseMessage(content=echo + output.text), False
        parser = self._new_tool_parser(request)
        if parser is not None:
            info = parser.extract_tool_calls(output.text, request)
            if called := info.tools_called:
                message = ChatResponseMessage(content=info.content, tool_calls=info.tool_calls)
        return ChatCompletionResponseChoice(
            index=output.index,
            message=message,
            logprobs=self._logprobs(request, output),
            finish_reason=_finish_reason(request, output.finish_reason, called),
            stop_reason=output.stop_reason,
            token_ids=list(output.token_ids) if request.return_token_ids else None,
        )

    def _logprobs(
        self, request: ChatCompletionRequest, output: CompletionOutput
    ) -> ChatCompletionLogProbs | None:
        if not request.logprobs:
            return None
        positions = output.logprobs or []
        top_n = request.top_logprobs or 0
        tokenizer, as_id = self.engine_client.tokenizer, request.return_tokens_as_token_ids

        def text_of(token_id: int, logprob: Logprob | None) -> str:
            return token_text(tokenizer, token_id, logprob, as_id)

        content = [
            _logprob_content(token_id, entry, top_n, text_of)
            for token_id, entry in zip(output.token_ids, positions, strict=False)
        ]
        return ChatCompletionLogProbs(content=content)

    # ---- streaming ---------------------------------------------------------------------------

    async def _stream(
        self,
        request: ChatCompletionRequest,
        request_id: str,
        outputs: AsyncIterator[RequestOutput],
    ) -> AsyncIterator[str]:
        created = int(time.time())
        num_prompt = num_generated = 0
        started: set[int] = set()
        model = self.models.model_name(request.model)
        options = request.stream_options
        continuous = options is not None and options.continuous_usage_stats
        echo = _echoed(request)
        streams: dict[int, _ChoiceStream] = {}

        def chunk(
            choices: list[ChatCompletionStreamChoice], prompt_ids: list[int] | None = None
        ) -> str:
            body = ChatCompletionStreamResponse(
                id=request_id,
                created=created,
                model=model,
                choices=choices,
                usage=usage(num_prompt, num_generated) if continuous else None,
                prompt_token_ids=prompt_ids,
            )
            return f"data: {body.model_dump_json(exclude_none=True)}\n\n"

        async with aclosing(outputs):  # type: ignore[type-var]
            async for delta in outputs:
                num_prompt = len(delta.prompt_token_ids)
                for output in delta.outputs:
                    if output.index not in started:  # the role goes first, alone
                        started.add(output.index)
                        role = DeltaMessage(role="assistant", content="")
                        prompt_ids = (
                            list(delta.prompt_token_ids) if request.return_token_ids else None
                        )
                        first = ChatCompletionStreamChoice(index=output.index, delta=role)
                        yield chunk([first], prompt_ids)
                        if echo:
                            echoed = DeltaMessage(content=echo)
                            yield chunk(
                                [ChatCompletionStreamChoice(index=output.index, delta=echoed)]
                            )
                    num_generated += len(output.token_ids)
                    if output.index not in streams:
                        streams[output.index] = _ChoiceStream(self._new_tool_parser(request))
                    choice = streams[output.index].choice(request, output)
                    if choice is not None:
                        choice.logprobs = self._logprobs(request, output)
                        yield chunk([choice])
        if request.stream_options and request.stream_options.include_usage:
            body = ChatCompletionStreamResponse(
                id=request_id,
                created=created,
                model=model,
                choices=[],
                usage=usage(num_prompt, num_generated),
            )
            yield f"data: {body.model_dump_json(exclude_none=True)}\n\n"
        yield "data: [DONE]\n\n"


def _finish_reason(
    request: ChatCompletionRequest, finish_reason: str | None, called: bool
) -> str | None:
    """A model that stopped after calling tools, by its own choice or because "required" made
    it, finishes with "tool_calls"; a named function ends with "stop" (as OpenAI and vLLM
    answer), and a call cut short keeps "length"."""
    forced = isinstance(tool_choice(request), NamedToolChoice)
    if called and finish_reason == "stop" and not forced:
        return "tool_calls"
    return finish_reason


class _ChoiceStream:
    """One choice of a stream: its text so far and its tool parser (None: plain content)."""

    def __init__(self, parser: ToolParser | None) -> None:
        self.parser = parser
        self.text = ""
        self.token_ids: list[int] = []

    def choice(
        self, request: ChatCompletionRequest, output: CompletionOutput
    ) -> ChatCompletionStreamChoice | None:
        """This output's chunk; None when the parser holds everything back for now."""
        delta: DeltaMessage | None = DeltaMessage(content=output.text)
        if self.parser is not None:
            delta = self._parsed_delta(request, output)
        finished = output.finish_reason is not None
        if delta is None and not finished:
            return None
        called = self.parser is not None and self.parser.tools_called
        return ChatCompletionStreamChoice(
            index=output.index,
            delta=delta or DeltaMessage(content=""),
            finish_reason=_finish_reason(request, output.finish_reason, called),
            stop_reason=output.stop_reason,
            token_ids=list(output.token_ids) if request.return_token_ids else None,
        )

    def _parsed_delta(
        self, request: ChatCompletionRequest, output: CompletionOutput
    ) -> DeltaMessage | None:
        assert self.parser is not None
        previous_text, previous_ids = self.text, list(self.token_ids)
        self.text += output.text
        self.token_ids += output.token_ids
        delta = self.parser.extract_tool_calls_streaming(
            previous_text,
            self.text,
            output.text,
            previous_ids,
            self.token_ids,
            output.token_ids,
            request,
        )
        if output.finish_reason is None:
            return delta
        return _merge(delta, self.parser.flush_streaming(self.text, request))


def _merge(first: DeltaMessage | None, second: DeltaMessage | None) -> DeltaMessage | None:
    if first is None or second is None:
        return first or second
    content = (first.content or "") + (second.content or "")
    calls = (first.tool_calls or []) + (second.tool_calls or [])
    return DeltaMessage(content=content or None, tool_calls=calls or None)


def _echoed(request: ChatCompletionRequest) -> str:
    """With echo, the last message's text when it has the answer's role ("assistant")."""
    last = request.messages[-1]
    return last.text() if request.echo and last.role == "assistant" else ""


def _logprob_content(
    token_id: int,
    entry: dict[int, Logprob],
    top_n: int,
    text_of: Callable[[int, Logprob | None], str],
) -> ChatLogProbsContent:
    """The chosen token and its top `top_n` alternatives (-1: every one the engine sent,
    the whole vocabulary), most likely first."""
    chosen = entry[token_id]
    ranked = sorted(
        (
            (token, lp)
            for token, lp in entry.items()
            if lp.rank is not None and (top_n == -1 or lp.rank <= top_n)
        ),
        key=lambda item: item[1].rank or 0,
    )
    if top_n != -1:
        ranked = ranked[:top_n]
    token = text_of(token_id, chosen)
    return ChatLogProbsContent(
        token=token,
        logprob=chosen.logprob,
        bytes=list(token.encode()),
        top_logprobs=[
            ChatLogProb(
                token=(text := text_of(other, lp)), logprob=lp.logprob, bytes=list(text.encode())
            )
            for other, lp in ranked
        ],
    )
