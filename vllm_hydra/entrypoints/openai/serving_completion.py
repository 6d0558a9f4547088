"""`OpenAIServingCompletion`: POST /v1/completions, as JSON or as SSE chunks.

A request may carry several prompts; each runs as its own engine request, and choice `index` is
`prompt_index * n + sequence_index`, as in vLLM.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from fastapi import Request

from vllm_hydra.entrypoints.openai.errors import BadRequestError
from vllm_hydra.entrypoints.openai.protocol import (
    CompletionLogProbs,
    CompletionRequest,
    CompletionResponse,
    CompletionResponseChoice,
    CompletionStreamResponse,
    random_id,
)
from vllm_hydra.entrypoints.openai.server_load import AdmittedStream
from vllm_hydra.entrypoints.openai.serving_engine import (
    OpenAIServing,
    last_output,
    merge_async_iterators,
    prompt_logprobs_json,
    token_text,
    until_disconnected,
    usage,
)
from vllm_hydra.request_output import CompletionOutput, Logprob, RequestOutput
from vllm_hydra.sampling_params import SamplingParams


@dataclass
class PreparedPrompt:
    token_ids: list[int]
    text: str  # what echo repeats
    params: SamplingParams


class OpenAIServingCompletion(OpenAIServing):
    prompt_param = "prompt"

    async def create_completion(
        self, request: CompletionRequest, raw_request: Request
    ) -> CompletionResponse | AsyncIterator[str]:
        """Validate everything, then answer as JSON or return the SSE stream."""
        if request.suffix is not None:
            raise BadRequestError("suffix (insertion) is not supported.", param="suffix")
        _check_best_of(request)
        prompt_list = self._prompt_list(request)
        admission = self.check_request(request, request.n * len(prompt_list))
        try:
            lora = self.lora_request(request.model)
            prompts = [await self._prepare(p, request) for p in prompt_list]
            request_id = random_id("cmpl")
            streams = [
                self.generate(p.token_ids, p.params, f"{request_id}-{i}", p.text, raw_request, lora)
                for i, p in enumerate(prompts)
            ]
            if request.stream:
                return AdmittedStream(
                    self._stream(request, request_id, prompts, streams), admission
                )
            finals = await until_disconnected(_gather_last(streams), raw_request)
        except BaseException:
            admission.release()
            raise
        admission.release()
        return self._response(request, request_id, prompts, finals)

    def _prompt_list(self, request: CompletionRequest) -> list[str | list[int]]:
        prompt = request.prompt
        if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
            return [prompt]  # type: ignore[list-item]
        if not prompt:
            return [[]]  # empty: the engine's check names it
        return list(prompt)  # type: ignore[arg-type]

    async def _prepare(self, prompt: str | list[int], request: CompletionRequest) -> PreparedPrompt:
        keep = self.truncation(request)
        if isinstance(prompt, str):
            # A prompt to be truncated may be of any length: no early refusal for it.
            param = "prompt" if keep is None else None
            token_ids = await self.async_tokenizer.encode(prompt, param=param) if prompt else []
        else:
            token_ids = list(prompt)
        truncated = keep is not None and len(token_ids) > keep
        if truncated:
            token_ids = token_ids[len(token_ids) - keep :]  # type: ignore[operator]
        max_tokens = self.check_length(len(token_ids), request.max_tokens, "max_tokens")
        params = self.sampling_params(request, max_tokens, request.logprobs)
        if request.echo and request.logprobs is not None:
            params.prompt_logprobs = _wider(params.prompt_logprobs, request.logprobs)
        self.validate(token_ids, params, {}, request)
        text = prompt if isinstance(prompt, str) and not truncated else self._decode(token_ids)
        return PreparedPrompt(token_ids, text, params)

    def _decode(self, token_ids: list[int]) -> str:
        tokenizer = self.engine_client.tokenizer
        return "" if tokenizer is None else tokenizer.decode(token_ids)

    # ---- non-streaming -----------------------------------------------------------------------

    def _response(
        self,
        request: CompletionRequest,
        request_id: str,
        prompts: list[PreparedPrompt],
        finals: list[RequestOutput],
    ) -> CompletionResponse:
        choices: list[CompletionResponseChoice] = []
        num_prompt = num_generated = 0
        for prompt_index, (prompt, final) in enumerate(zip(prompts, finals, strict=True)):
            num_prompt += len(final.prompt_token_ids)
            for output in final.outputs:
                num_generated += len(output.token_ids)
                index = prompt_index * request.n + output.index
                choices.append(self._choice(request, index, prompt, final, output))
        return CompletionResponse(
            id=request_id,
            model=self.models.model_name(request.model),
            choices=choices,
            usage=usage(num_prompt, num_generated),
        )

    def _choice(
        self,
        request: CompletionRequest,
        index: int,
        prompt: PreparedPrompt,
        final: RequestOutput,
        output: CompletionOutput,
    ) -> CompletionResponseChoice:
        text = (prompt.text if request.echo else "") + output.text
        logprobs = None
        if request.logprobs is not None:
            logprobs = CompletionLogProbs()
            text_of = self.text_of(request)
            if request.echo:
                _extend_logprobs(logprobs, prompt.token_ids, final.prompt_logprobs, 0, text_of)
            offset = len(prompt.text) if request.echo else 0
            _extend_logprobs(logprobs, output.token_ids, output.logprobs, offset, text_of)
        with_ids = request.return_token_ids
        return CompletionResponseChoice(
            index=index,
            text=text,
            logprobs=logprobs,
            finish_reason=output.finish_reason,
            stop_reason=output.stop_reason,
            prompt_logprobs=(
                prompt_logprobs_json(final.prompt_logprobs)
                if request.prompt_logprobs is not None
                else None
            ),
            prompt_token_ids=list(final.prompt_token_ids) if with_ids else None,
            token_ids=list(output.token_ids) if with_ids else None,
        )

    # ---- streaming ---------------------------------------------------------------------------

    async def _stream(
        self,
        request: CompletionRequest,
        request_id: str,
        prompts: list[PreparedPrompt],
        streams: list[AsyncIterator[RequestOutput]],
    ) -> AsyncIterator[str]:
        created = int(time.time())
        num_prompt = [0] * len(prompts)
        num_generated = 0
        started: set[int] = set()
        options = request.stream_options
        continuous = options is not None and options.continuous_usage_stats
        async for prompt_index, delta in merge_async_iterators(*streams):
            num_prompt[prompt_index] = len(delta.prompt_token_ids)
            choices = []
            for output in delta.outputs:
                num_generated += len(output.token_ids)
                index = prompt_index * request.n + output.index
                first = index not in started
                started.add(index)
                text = output.text
                if request.echo and first:
                    text = prompts[prompt_index].text + text
                choice = self._stream_choice(request, index, text, output)
                if request.return_token_ids and first:
                    choice.prompt_token_ids = list(delta.prompt_token_ids)
                choices.append(choice)
            for choice in choices:  # one choice per chunk, as OpenAI and vLLM send them
                chunk = CompletionStreamResponse(
                    id=request_id,
                    created=created,
                    model=self.models.model_name(request.model),
                    choices=[choice],
                    usage=usage(sum(num_prompt), num_generated) if continuous else None,
                )
                yield f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"
        if request.stream_options and request.stream_options.include_usage:
            final = CompletionStreamResponse(
                id=request_id,
                created=created,
                model=self.models.model_name(request.model),
                choices=[],
                usage=usage(sum(num_prompt), num_generated),
            )
            yield f"data: {final.model_dump_json(exclude_none=True)}\n\n"
        yield "data: [DONE]\n\n"

    def _stream_choice(
        self, request: CompletionRequest, index: int, text: str, output: CompletionOutput
    ) -> CompletionResponseChoice:
        logprobs = None
        if request.logprobs is not None:
            logprobs = CompletionLogProbs()
            _extend_logprobs(logprobs, output.token_ids, output.logprobs, 0, self.text_of(request))
        return CompletionResponseChoice(
            index=index,
            text=text,
            logprobs=logprobs,
            finish_reason=output.finish_reason,
            stop_reason=output.stop_reason,
            token_ids=list(output.token_ids) if request.return_token_ids else None,
        )

    def text_of(self, request: CompletionRequest) -> TextOf:
        """How the request wants a logprob's token written."""
        tokenizer, as_id = self.engine_client.tokenizer, request.return_tokens_as_token_ids
        return lambda token_id, logprob: token_text(tokenizer, token_id, logprob, as_id)


# A logprob entry's token as the response writes it.
TextOf = Callable[[int, Logprob | None], str]


def _wider(a: int | None, b: int | None) -> int | None:
    """The larger top-N of two logprob requests (-1, all of them, is the largest)."""
    if a is None or b is None:
        return b if a is None else a
    return -1 if -1 in (a, b) else max(a, b)


def _extend_logprobs(
    into: CompletionLogProbs,
    token_ids: list[int],
    positions: list[dict[int, Logprob] | None] | None,
    offset: int,
    text_of: TextOf,
) -> None:
    """Append OpenAI's legacy logprobs for `token_ids`; `positions[i]` holds token i's dict."""
    offset = into.text_offset[-1] + len(into.tokens[-1]) if into.tokens else offset
    for i, token_id in enumerate(token_ids):
        entry = positions[i] if positions is not None and i < len(positions) else None
        chosen = entry.get(token_id) if entry else None
        token = text_of(token_id, chosen)
        into.tokens.append(token)
        into.text_offset.append(offset)
        into.token_logprobs.append(None if chosen is None else chosen.logprob)
        into.top_logprobs.append(
            None if entry is None else {text_of(t, lp): lp.logprob for t, lp in entry.items()}
        )
        offset += len(token)


def _check_best_of(request: CompletionRequest) -> None:
    """best_of = n is plain sampling; more would need ranking, which vLLM v1 dropped too."""
    if request.best_of is None or request.best_of == request.n:
        return
    if request.best_of < request.n:
        message = f"best_of={request.best_of} must be >= n={request.n}."
    else:
        message = f"best_of={request.best_of} > n={request.n} is not supported: send best_of=n."
    raise BadRequestError(message, param="best_of")


async def _gather_last(streams: list[AsyncIterator[RequestOutput]]) -> list[RequestOutput]:
    return list(await asyncio.gather(*(last_output(s) for s in streams)))
