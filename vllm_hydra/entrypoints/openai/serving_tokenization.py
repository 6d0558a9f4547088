"""`OpenAIServingTokenization`: POST /tokenize and POST /detokenize with the served tokenizer."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from transformers import PreTrainedTokenizerBase

from vllm_hydra.engine.input_processor import check_token_ids
from vllm_hydra.entrypoints.openai.async_tokenizer import AsyncTokenizer
from vllm_hydra.entrypoints.openai.errors import BadRequestError
from vllm_hydra.entrypoints.openai.protocol import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from vllm_hydra.entrypoints.openai.serving_engine import render_chat
from vllm_hydra.entrypoints.openai.serving_models import OpenAIServingModels
from vllm_hydra.sampling_params import SamplingParamsError

if TYPE_CHECKING:
    from vllm_hydra.engine.async_llm import AsyncLLM


class OpenAIServingTokenization:
    def __init__(
        self,
        engine_client: AsyncLLM,
        models: OpenAIServingModels,
        async_tokenizer: AsyncTokenizer | None = None,
    ) -> None:
        self.engine_client = engine_client
        self.models = models
        self.max_model_len = engine_client.vllm_config.model.max_model_len or 0
        self.vocab_size = engine_client.vllm_config.arch.vocab_size
        self.async_tokenizer = async_tokenizer or AsyncTokenizer(engine_client)

    async def tokenize(self, request: TokenizeRequest) -> TokenizeResponse:
        self.models.check_model(request.model)
        tokens = await self._tokens(request)
        token_strs = (
            self._tokenizer("prompt").convert_ids_to_tokens(tokens)
            if request.return_token_strs
            else None
        )
        return TokenizeResponse(
            count=len(tokens),
            max_model_len=self.max_model_len,
            tokens=tokens,
            token_strs=token_strs,
        )

    def tokenizer_info(self) -> dict[str, Any]:
        """The tokenizer's configuration (vLLM's /tokenizer_info): tokenizer_config.json's
        fields as loaded, its class, special and added tokens, and the chat template."""
        tokenizer = self._tokenizer("tokenizer")
        info = {k: v for k, v in tokenizer.init_kwargs.items() if _is_json(v)}
        info.update(
            tokenizer_class=type(tokenizer).__name__,
            model_max_length=tokenizer.model_max_length,
            chat_template=tokenizer.chat_template,
            special_tokens=tokenizer.special_tokens_map,
            added_tokens_decoder={
                str(token_id): {"content": added.content, "special": added.special}
                for token_id, added in tokenizer.added_tokens_decoder.items()
            },
            vocab_size=len(tokenizer),
        )
        return info

    def detokenize(self, request: DetokenizeRequest) -> DetokenizeResponse:
        self.models.check_model(request.model)
        try:
            check_token_ids(request.tokens, self.vocab_size, "tokens")
        except SamplingParamsError as e:
            raise BadRequestError(str(e), param="tokens") from e
        return DetokenizeResponse(prompt=self._tokenizer("tokens").decode(request.tokens))

    async def _tokens(self, request: TokenizeRequest) -> list[int]:
        if (request.prompt is None) == (request.messages is None):
            raise BadRequestError("Send exactly one of prompt and messages.", param="prompt")
        if request.messages is not None:
            return await render_chat(
                self.async_tokenizer,
                request.messages,
                request.add_generation_prompt,
                continue_final_message=request.continue_final_message,
                tools=request.tools,
            )
        self._tokenizer("prompt")  # a 400 naming `prompt` when the server has none
        return await self.async_tokenizer.encode(request.prompt, request.add_special_tokens)  # type: ignore[arg-type]

    def _tokenizer(self, param: str) -> PreTrainedTokenizerBase:
        tokenizer = self.engine_client.tokenizer
        if tokenizer is None:
            raise BadRequestError("This server runs without a tokenizer.", param=param)
        return tokenizer


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
