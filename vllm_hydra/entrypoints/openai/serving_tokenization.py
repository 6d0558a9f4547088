"""`OpenAIServingTokenization`: POST /tokenize and POST /detokenize with the served tokenizer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from transformers import PreTrainedTokenizerBase

from vllm_hydra.entrypoints.openai.errors import BadRequestError
from vllm_hydra.entrypoints.openai.protocol import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from vllm_hydra.entrypoints.openai.serving_models import OpenAIServingModels
from vllm_hydra.sampling_params import SamplingParamsError

if TYPE_CHECKING:
    from vllm_hydra.engine.async_llm import AsyncLLM


class OpenAIServingTokenization:
    def __init__(self, engine_client: AsyncLLM, models: OpenAIServingModels) -> None:
        self.engine_client = engine_client
        self.models = models
        self.max_model_len = engine_client.vllm_config.model.max_model_len or 0
        self.vocab_size = engine_client.vllm_config.arch.vocab_size

    def tokenize(self, request: TokenizeRequest) -> TokenizeResponse:
        self.models.check_model(request.model)
        tokens = self._tokens(request)
        return TokenizeResponse(count=len(tokens), max_model_len=self.max_model_len, tokens=tokens)

    def detokenize(self, request: DetokenizeRequest) -> DetokenizeResponse:
        self.models.check_model(request.model)
        if any(not 0 <= t < self.vocab_size for t in request.tokens):
            raise BadRequestError(
                f"Token ids must be in [0, {self.vocab_size}) for this model.", param="tokens"
            )
        return DetokenizeResponse(prompt=self._tokenizer("tokens").decode(request.tokens))

    def _tokens(self, request: TokenizeRequest) -> list[int]:
        if (request.prompt is None) == (request.messages is None):
            raise BadRequestError("Send exactly one of prompt and messages.", param="prompt")
        if request.messages is not None:
            messages = [{"role": m.role, "content": m.text()} for m in request.messages]
            try:
                return self.engine_client.input_processor.apply_chat_template(messages)
            except SamplingParamsError as e:
                raise BadRequestError(str(e), param="messages") from e
        tokenizer = self._tokenizer("prompt")
        return list(tokenizer.encode(request.prompt, add_special_tokens=request.add_special_tokens))

    def _tokenizer(self, param: str) -> PreTrainedTokenizerBase:
        tokenizer = self.engine_client.tokenizer
        if tokenizer is None:
            raise BadRequestError("This server runs without a tokenizer.", param=param)
        return tokenizer
