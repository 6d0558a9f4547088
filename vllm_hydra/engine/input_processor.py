"""`InputProcessor`: prompts and sampling parameters -> validated `EngineCoreRequest`s.

Every check a request can fail happens here, before the engine sees it, so the server can
answer 400 naming the parameter before streaming a byte.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec
from transformers import PreTrainedTokenizerBase

from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.engine.messages import EngineCoreRequest
from vllm_hydra.lora.lora_model import LoRAModel
from vllm_hydra.lora.peft_helper import LoRAAdapterError
from vllm_hydra.lora.request import LoRARequest
from vllm_hydra.sampling_params import SamplingParams, SamplingParamsError
from vllm_hydra.structured_output.validation import validate_structured_output

# Chat messages as the OpenAI API sends them (a tool call's arguments as a dict); tools likewise.
ChatMessages = Sequence[dict[str, Any]]
ChatTools = Sequence[dict[str, Any]]


class InputProcessor:
    def __init__(self, config: VllmConfig, tokenizer: PreTrainedTokenizerBase | None) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.max_model_len = config.model.max_model_len or 0
        self.vocab_size = config.arch.vocab_size
        self.eos_token_id = _eos_token_id(config, tokenizer)
        # Adapters whose weights were read and checked against the model (by lora_int_id).
        self._checked_loras: set[int] = set()

    def tokenize(self, prompt: str | list[int], add_special_tokens: bool = True) -> list[int]:
        if isinstance(prompt, str):
            return self._tokenizer("prompt").encode(prompt, add_special_tokens=add_special_tokens)
        return list(prompt)

    def apply_chat_template(
        self,
        messages: ChatMessages,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        tools: ChatTools | None = None,
    ) -> list[int]:
        encoded = self._tokenizer("messages").apply_chat_template(
            list(messages),
            tools=list(tools) if tools else None,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            tokenize=True,
        )
        # transformers 5 returns a BatchEncoding here, 4.x a list.
        return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)

    def process(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        arrival_time: float | None = None,
        priority: int = 0,
        lora_request: LoRARequest | None = None,
    ) -> EngineCoreRequest:
        self._validate(prompt_token_ids, params)
        if lora_request is not None:
            self.check_lora(lora_request)
        if params.structured_outputs is not None:
            params = self._with_structured_output_backend(params)
        return EngineCoreRequest(
            request_id=request_id,
            prompt_token_ids=prompt_token_ids,
            sampling_params=params,
            eos_token_id=self.eos_token_id,
            arrival_time=time.time() if arrival_time is None else arrival_time,
            priority=priority,
            lora_request=lora_request,
        )

    def check_lora(self, lora_request: LoRARequest) -> None:
        """Read the adapter once and check it fits the model, so that the workers (which load
        it when a step first needs it) never meet a bad one. Raises SamplingParamsError."""
        if not self.config.lora.enabled:
            raise SamplingParamsError(
                "lora_request", "This engine runs without LoRA: start it with lora=enabled."
            )
        if lora_request.lora_int_id in self._checked_loras:
            return
        try:
            LoRAModel.from_local_checkpoint(
                lora_request.lora_path,
                lora_request.lora_int_id,
                self.config.arch,
                self.config.lora.max_lora_rank,
            )
        except LoRAAdapterError as e:
            raise SamplingParamsError("lora_request", str(e)) from e
        self._checked_loras.add(lora_request.lora_int_id)

    def _with_structured_output_backend(self, params: SamplingParams) -> SamplingParams:
        """Compile-check the constraint now (a 400, not an engine error) and record the backend
        that accepted it."""
        self._tokenizer("structured_outputs")  # grammars are built over the vocabulary
        assert params.structured_outputs is not None
        so_params = validate_structured_output(
            params.structured_outputs, self.config.structured_outputs
        )
        return msgspec.structs.replace(params, structured_outputs=so_params)

    def _tokenizer(self, param: str) -> PreTrainedTokenizerBase:
        if self.tokenizer is None:
            raise SamplingParamsError(
                param, "This engine runs with model.skip_tokenizer_init=true: send token ids."
            )
        return self.tokenizer

    def _validate(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        params.verify(self.vocab_size)
        if self.tokenizer is None and params.stop:
            raise SamplingParamsError("stop", "Stop strings need a tokenizer; use stop_token_ids.")
        if not prompt_token_ids:
            raise SamplingParamsError("prompt", "The prompt is empty.")
        check_token_ids(prompt_token_ids, self.vocab_size, "prompt")
        if len(prompt_token_ids) >= self.max_model_len:
            raise SamplingParamsError(
                "prompt",
                f"The prompt has {len(prompt_token_ids)} tokens; this model's maximum context "
                f"length is {self.max_model_len}, which must leave room for at least one "
                f"output token.",
            )


def check_token_ids(token_ids: Sequence[int], vocab_size: int, param: str) -> None:
    """Raise SamplingParamsError naming the first id outside the vocabulary."""
    bad = next((t for t in token_ids if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise SamplingParamsError(
            param,
            f"Token id {bad} is out of vocabulary: this model's token ids are in "
            f"[0, {vocab_size}).",
        )


def _eos_token_id(config: VllmConfig, tokenizer: PreTrainedTokenizerBase | None) -> int | None:
    """The tokenizer's EOS, else the first one config.json names."""
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        return tokenizer.eos_token_id
    eos = config.arch.eos_token_id
    return eos[0] if isinstance(eos, list) and eos else eos  # type: ignore[return-value]
