"""`OpenAIServing`: what the completion and chat serving classes share (vLLM's serving_engine).

Every check a request can fail runs here before anything is sent to the engine, so a streaming
request gets its 400 as JSON, never after the first SSE byte.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request

from vllm_hydra.entrypoints.openai.async_tokenizer import AsyncTokenizer
from vllm_hydra.entrypoints.openai.errors import (
    BadRequestError,
    OpenAIError,
    ServiceUnavailableError,
)
from vllm_hydra.entrypoints.openai.protocol import (
    ChatCompletionToolParam,
    ChatMessage,
    PromptLogprob,
    PromptLogprobsList,
    SamplingRequest,
    UsageInfo,
)
from vllm_hydra.entrypoints.openai.server_load import Admission, ServerLoad
from vllm_hydra.entrypoints.openai.serving_models import OpenAIServingModels
from vllm_hydra.entrypoints.openai.structured_outputs import (
    structured_output_renames,
    structured_outputs_params,
)
from vllm_hydra.lora.request import LoRARequest
from vllm_hydra.request_output import Logprob, PromptLogprobs, RequestOutput
from vllm_hydra.sampling_params import RequestOutputKind, SamplingParams, SamplingParamsError
from vllm_hydra.tracing import extract_trace_headers

if TYPE_CHECKING:
    from vllm_hydra.engine.async_llm import AsyncLLM

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The HTTP client went away before its non-streaming answer was ready."""


class OpenAIServing:
    # The request's name for the prompt, used in errors: "prompt" or "messages".
    prompt_param = "prompt"

    def __init__(
        self,
        engine_client: AsyncLLM,
        models: OpenAIServingModels,
        load: ServerLoad | None = None,
        async_tokenizer: AsyncTokenizer | None = None,
    ) -> None:
        self.engine_client = engine_client
        self.models = models
        self.max_model_len = engine_client.vllm_config.model.max_model_len or 0
        self.load = load or ServerLoad(max_num_seqs=1)  # no max_queued: admits everything
        self.async_tokenizer = async_tokenizer or AsyncTokenizer(engine_client)

    def check_request(self, request: SamplingRequest, num_seqs: int) -> Admission:
        """Checks that need no tokenization (model name, engine alive, stream options), then
        admission: the request's `num_seqs` sequences count from now; release them when done."""
        self.models.check_model(request.model)
        self.check_engine_alive()
        if request.stream_options is not None and not request.stream:
            raise BadRequestError(
                "stream_options is only allowed with stream=true.", param="stream_options"
            )
        if request.prompt_logprobs is not None and request.stream:
            raise BadRequestError(
                "prompt_logprobs are not available when stream=true.", param="prompt_logprobs"
            )
        self.truncation(request)
        return self.load.admit(num_seqs, param="n")

    def truncation(self, request: SamplingRequest) -> int | None:
        """How many of the prompt's last tokens to keep (truncate_prompt_tokens); None: all."""
        keep = request.truncate_prompt_tokens
        if keep is None:
            return None
        if keep == -1:
            return self.max_model_len
        if keep > self.max_model_len:
            raise BadRequestError(
                f"truncate_prompt_tokens={keep} is more than this model's maximum context "
                f"length ({self.max_model_len}).",
                param="truncate_prompt_tokens",
            )
        return keep

    def lora_request(self, model: str | None) -> LoRARequest | None:
        """The adapter `model` names, checked against the model now (a 400 naming `model`,
        never an error mid-stream); None for the base model."""
        lora_request = self.models.check_model(model)
        if lora_request is not None:
            try:
                self.engine_client.input_processor.check_lora(lora_request)
            except SamplingParamsError as e:
                raise BadRequestError(str(e), param="model") from e
        return lora_request

    def check_engine_alive(self) -> None:
        if self.engine_client.errored:
            raise ServiceUnavailableError(
                f"The engine is dead: {self.engine_client.dead_error}", code="engine_dead"
            )

    def check_length(self, prompt_len: int, max_tokens: int | None, max_param: str) -> int:
        """The completion's token budget; a 400 worded like OpenAI's when it does not fit."""
        requested = max_tokens if max_tokens is not None else 1
        if prompt_len < self.max_model_len and prompt_len + requested <= self.max_model_len:
            return max_tokens if max_tokens is not None else self.max_model_len - prompt_len
        where = "the messages" if self.prompt_param == "messages" else "the prompt"
        param = self.prompt_param if prompt_len >= self.max_model_len else max_param
        raise BadRequestError(
            f"This model's maximum context length is {self.max_model_len} tokens. However, you "
            f"requested {prompt_len + requested} tokens ({prompt_len} in {where}, "
            f"{requested} in the completion). Please reduce the length of {where} or "
            f"completion.",
            param=param,
            code="context_length_exceeded",
        )

    def sampling_params(
        self, request: SamplingRequest, max_tokens: int, logprobs: int | None
    ) -> SamplingParams:
        """The request's sampling fields as engine SamplingParams (not yet verified)."""
        return SamplingParams(
            n=request.n,
            temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            top_k=0 if request.top_k is None else request.top_k,
            min_p=0.0 if request.min_p is None else request.min_p,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            repetition_penalty=(
                1.0 if request.repetition_penalty is None else request.repetition_penalty
            ),
            seed=request.seed,
            max_tokens=max_tokens,
            min_tokens=request.min_tokens,
            stop=[request.stop] if isinstance(request.stop, str) else list(request.stop or []),
            stop_token_ids=list(request.stop_token_ids or []),
            include_stop_str_in_output=request.include_stop_str_in_output,
            ignore_eos=request.ignore_eos,
            logprobs=logprobs,
            prompt_logprobs=request.prompt_logprobs,
            logit_bias=_logit_bias(request.logit_bias),
            skip_special_tokens=request.skip_special_tokens,
            output_kind=RequestOutputKind.DELTA if request.stream else RequestOutputKind.FINAL_ONLY,
            structured_outputs=structured_outputs_params(request),
        )

    def validate(
        self,
        prompt_token_ids: list[int],
        params: SamplingParams,
        renames: dict[str, str],
        request: SamplingRequest | None = None,
    ) -> None:
        """Run the engine's own input checks now; `renames` maps its names to the request's."""
        if request is not None:
            renames = {**structured_output_renames(request), **renames}
        try:
            self.engine_client.input_processor.process("validate", prompt_token_ids, params)
        except SamplingParamsError as e:
            param = renames.get(e.param, e.param)
            raise BadRequestError(str(e).replace(e.param, param, 1), param=param) from e

    def generate(
        self,
        prompt_token_ids: list[int],
        params: SamplingParams,
        request_id: str,
        prompt: str | None,
        raw_request: Request | None = None,
        lora_request: LoRARequest | None = None,
    ) -> AsyncIterator[RequestOutput]:
        """Start the request in the engine; `raw_request`'s traceparent parents its span.
        A request of an adapter counts as in flight for it until its outputs end."""
        trace_headers = extract_trace_headers(raw_request.headers) if raw_request else None
        outputs = self.engine_client.generate(
            prompt_token_ids,
            params,
            request_id,
            prompt=prompt,
            trace_headers=trace_headers,
            lora_request=lora_request,
        )
        if lora_request is None:
            return outputs
        return self.models.track(lora_request.lora_name, outputs)


async def render_chat(
    async_tokenizer: AsyncTokenizer,
    messages: list[ChatMessage],
    add_generation_prompt: bool,
    for_generation: bool = False,
    continue_final_message: bool = False,
    tools: list[ChatCompletionToolParam] | None = None,
) -> list[int]:
    """Chat messages (and the tools, for templates that show them) through the model's chat
    template; a 400 naming `messages` if it fails. `for_generation`: messages that cannot fit
    max_model_len are refused before templating. `continue_final_message`: the last message is
    left open for the model to continue."""
    if continue_final_message and add_generation_prompt:
        raise BadRequestError(
            "Cannot set both continue_final_message and add_generation_prompt to true.",
            param="continue_final_message",
        )
    conversation = [template_message(m) for m in messages]
    param = "messages" if for_generation else None
    kwargs: dict[str, Any] = {"continue_final_message": True} if continue_final_message else {}
    if tools:
        kwargs["tools"] = [tool.model_dump(exclude_none=True) for tool in tools]
    try:
        return await async_tokenizer.apply_chat_template(
            conversation, add_generation_prompt, param=param, **kwargs
        )
    except OpenAIError:
        raise
    except SamplingParamsError as e:
        raise BadRequestError(str(e), param="messages") from e
    except Exception as e:  # jinja's TemplateError: the messages do not fit the template
        raise BadRequestError(
            f"The chat template rejected the messages: {e}", param="messages"
        ) from e


def token_text(tokenizer: Any, token_id: int, logprob: Logprob | None, as_id: bool) -> str:
    """A logprob entry's token: its text, or "token_id:<id>" (return_tokens_as_token_ids)."""
    if as_id:
        return f"token_id:{token_id}"
    if logprob is not None and logprob.decoded_token is not None:
        return logprob.decoded_token
    return "" if tokenizer is None else tokenizer.decode([token_id])


def prompt_logprobs_json(prompt_logprobs: PromptLogprobs | None) -> PromptLogprobsList | None:
    """The engine's prompt logprobs as the response carries them (vLLM's shape)."""
    if prompt_logprobs is None:
        return None
    return [
        None
        if entry is None
        else {
            token: PromptLogprob(logprob=lp.logprob, rank=lp.rank, decoded_token=lp.decoded_token)
            for token, lp in entry.items()
        }
        for entry in prompt_logprobs
    ]


def template_message(message: ChatMessage) -> dict[str, Any]:
    """A message as chat templates read it: an assistant's earlier calls carry their arguments
    as a dict (the transformers convention), a tool message the id of the call it answers."""
    rendered: dict[str, Any] = {"role": message.role, "content": message.text()}
    if message.name is not None:
        rendered["name"] = message.name
    if message.tool_call_id is not None:
        rendered["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        rendered["tool_calls"] = [
            {
                "id": call.id,
                "type": call.type,
                "function": {
                    "name": call.function.name,
                    "arguments": _arguments_dict(call.function.arguments),
                },
            }
            for call in message.tool_calls
        ]
    return rendered


def _arguments_dict(arguments: str) -> Any:
    try:
        return json.loads(arguments) if arguments else {}
    except json.JSONDecodeError as e:
        raise BadRequestError(f"A tool call's arguments are not JSON: {e}", param="messages") from e


def usage(prompt_tokens: int, completion_tokens: int) -> UsageInfo:
    return UsageInfo(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )


def _logit_bias(bias: dict[str, float] | None) -> dict[int, float] | None:
    if bias is None:
        return None
    try:
        return {int(token): value for token, value in bias.items()}
    except ValueError as e:
        raise BadRequestError(
            "logit_bias keys must be token ids (integers as strings).", param="logit_bias"
        ) from e


async def last_output(outputs: AsyncIterator[RequestOutput]) -> RequestOutput:
    final: RequestOutput | None = None
    async for output in outputs:
        final = output
    if final is None:
        raise RuntimeError("The engine finished a request without any output.")
    return final


async def until_disconnected(work: Awaitable[T], raw_request: Request) -> T:
    """Await `work`, cancelling it (which aborts its requests) if the client goes away."""
    task = asyncio.ensure_future(work)
    listener = asyncio.ensure_future(_wait_for_disconnect(raw_request))
    done, _ = await asyncio.wait({task, listener}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        listener.cancel()
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    raise ClientDisconnected


async def _wait_for_disconnect(raw_request: Request) -> None:
    while True:
        message: dict[str, Any] = await raw_request.receive()
        if message["type"] == "http.disconnect":
            return


async def merge_async_iterators(
    *iterators: AsyncIterator[T],
) -> AsyncIterator[tuple[int, T]]:
    """Items of several iterators as they come, tagged with the iterator's index."""
    if len(iterators) == 1:
        async with aclosing(iterators[0]):  # type: ignore[type-var]
            async for item in iterators[0]:
                yield 0, item
        return
    queue: asyncio.Queue[tuple[int, T] | BaseException | None] = asyncio.Queue()

    async def drain(index: int, iterator: AsyncIterator[T]) -> None:
        try:
            async for item in iterator:
                await queue.put((index, item))
            await queue.put(None)
        except BaseException as e:  # handed to the consumer, which re-raises it
            await queue.put(e)

    tasks = [asyncio.ensure_future(drain(i, it)) for i, it in enumerate(iterators)]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
