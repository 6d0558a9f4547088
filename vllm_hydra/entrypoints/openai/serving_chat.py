"""`OpenAIServingChat`: POST /v1/chat/completions, as JSON or as SSE chunks.

The messages go through the model's chat template; a stream sends each choice's role first,
then content deltas, then (with `stream_options.include_usage`) one usage chunk.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
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
    ChatMessage,
    ChatResponseMessage,
    DeltaMessage,
    random_id,
)
from vllm_hydra.entrypoints.openai.server_load import AdmittedStream
from vllm_hydra.entrypoints.openai.serving_engine import (
    OpenAIServing,
    last_output,
    render_chat,
    until_disconnected,
    usage,
)
from vllm_hydra.request_output import CompletionOutput, Logprob, RequestOutput
from vllm_hydra.sampling_params import SamplingParams


class OpenAIServingChat(OpenAIServing):
    prompt_param = "messages"

    async def create_chat_completion(
        self, request: ChatCompletionRequest, raw_request: Request
    ) -> ChatCompletionResponse | AsyncIterator[str]:
        """Validate everything, then answer as JSON or return the SSE stream."""
        admission = self.check_request(request, request.n)
        try:
            lora = self.lora_request(request.model)
            token_ids = await self.render(request.messages, request.add_generation_prompt)
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

    async def render(self, messages: list[ChatMessage], add_generation_prompt: bool) -> list[int]:
        """The messages through the model's chat template (in the tokenizer thread)."""
        return await render_chat(self.async_tokenizer, messages, add_generation_prompt)

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
        self.validate(token_ids, params, renames, request)
        return params

    def _decode(self, token_ids: list[int]) -> str | None:
        tokenizer = self.engine_client.tokenizer
        return None if tokenizer is None else tokenizer.decode(token_ids)

    # ---- non-streaming -----------------------------------------------------------------------

    def _response(
        self, request: ChatCompletionRequest, request_id: str, final: RequestOutput
    ) -> ChatCompletionResponse:
        choices = [
            ChatCompletionResponseChoice(
                index=output.index,
                message=ChatResponseMessage(content=output.text),
                logprobs=self._logprobs(request, output),
                finish_reason=output.finish_reason,
                stop_reason=output.stop_reason,
            )
            for output in final.outputs
        ]
        num_generated = sum(len(o.token_ids) for o in final.outputs)
        return ChatCompletionResponse(
            id=request_id,
            model=self.models.served_model_name,
            choices=choices,
            usage=usage(len(final.prompt_token_ids), num_generated),
        )

    def _logprobs(
        self, request: ChatCompletionRequest, output: CompletionOutput
    ) -> ChatCompletionLogProbs | None:
        if not request.logprobs:
            return None
        positions = output.logprobs or []
        top_n = request.top_logprobs or 0
        content = [
            _logprob_content(token_id, entry, top_n)
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
        model = self.models.served_model_name

        def chunk(choices: list[ChatCompletionStreamChoice]) -> str:
            body = ChatCompletionStreamResponse(
                id=request_id, created=created, model=model, choices=choices
            )
            return f"data: {body.model_dump_json(exclude_none=True)}\n\n"

        async with aclosing(outputs):  # type: ignore[type-var]
            async for delta in outputs:
                num_prompt = len(delta.prompt_token_ids)
                for output in delta.outputs:
                    if output.index not in started:  # the role goes first, alone
                        started.add(output.index)
                        role = DeltaMessage(role="assistant", content="")
                        yield chunk([ChatCompletionStreamChoice(index=output.index, delta=role)])
                    num_generated += len(output.token_ids)
                    yield chunk([self._stream_choice(request, output)])
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

    def _stream_choice(
        self, request: ChatCompletionRequest, output: CompletionOutput
    ) -> ChatCompletionStreamChoice:
        return ChatCompletionStreamChoice(
            index=output.index,
            delta=DeltaMessage(content=output.text),
            logprobs=self._logprobs(request, output),
            finish_reason=output.finish_reason,
            stop_reason=output.stop_reason,
        )


def _logprob_content(token_id: int, entry: dict[int, Logprob], top_n: int) -> ChatLogProbsContent:
    chosen = entry[token_id]
    ranked = sorted(
        (lp for lp in entry.values() if lp.rank is not None and lp.rank <= top_n),
        key=lambda lp: lp.rank or 0,
    )
    token = chosen.decoded_token or ""
    return ChatLogProbsContent(
        token=token,
        logprob=chosen.logprob,
        bytes=list(token.encode()),
        top_logprobs=[
            ChatLogProb(
                token=lp.decoded_token or "",
                logprob=lp.logprob,
                bytes=list((lp.decoded_token or "").encode()),
            )
            for lp in ranked[:top_n]
        ],
    )
