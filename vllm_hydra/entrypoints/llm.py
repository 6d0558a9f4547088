"""`LLM`: offline batch generation in the caller's process (vLLM's `LLM` class).

llm = LLM(["model=tiny"])
outputs = llm.generate(["Once upon a time"], SamplingParams(max_tokens=32))
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import msgspec
from tqdm import tqdm

from vllm_hydra.config.compose import compose_config
from vllm_hydra.config.support import check_supported
from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.engine.core_client import InprocClient, SyncMPClient, make_sync_mp_client
from vllm_hydra.engine.exceptions import EngineRequestError
from vllm_hydra.engine.input_processor import ChatMessages, InputProcessor
from vllm_hydra.engine.output_processor import (
    OutputProcessor,
    ParentRequest,
    child_sampling_params,
)
from vllm_hydra.lora.request import LoRARequest
from vllm_hydra.request_output import RequestOutput
from vllm_hydra.sampling_params import RequestOutputKind, SamplingParams
from vllm_hydra.tokenizer import get_tokenizer

PromptInput = str | list[int]
Params = SamplingParams | Sequence[SamplingParams] | None
LoRAInput = LoRARequest | Sequence[LoRARequest | None] | None


class LLM:
    def __init__(
        self, config: VllmConfig | list[str] | None = None, use_engine_process: bool = False
    ) -> None:
        """`config`: a built VllmConfig, or Hydra overrides for conf/serve.yaml.
        `use_engine_process`: run the engine core in its own process (SyncMPClient); call
        `shutdown()` when done (it also stops when this object is collected or Python exits).
        With `parallel.dp > 1` the engines always run in their own processes, one per dp rank,
        and requests are balanced across them."""
        self.config = config if isinstance(config, VllmConfig) else compose_config(config or [])
        check_supported(self.config)
        self.tokenizer = get_tokenizer(self.config)
        self.input_processor = InputProcessor(self.config, self.tokenizer)
        self.output_processor = OutputProcessor(self.tokenizer)
        in_process = not use_engine_process and self.config.parallel.dp == 1
        self.engine_core: InprocClient | SyncMPClient = (
            InprocClient(self.config) if in_process else make_sync_mp_client(self.config)
        )
        self._request_counter = itertools.count()

    def generate(
        self,
        prompts: PromptInput | Sequence[PromptInput],
        sampling_params: Params = None,
        use_tqdm: bool = True,
        lora_request: LoRAInput = None,
    ) -> list[RequestOutput]:
        """Generate for each prompt (text or token ids); outputs come back in input order.
        `lora_request`: one adapter for every prompt, or one (or None) per prompt."""
        prompt_list = _as_prompt_list(prompts)
        ids = [self.input_processor.tokenize(p) for p in prompt_list]
        texts = [p if isinstance(p, str) else None for p in prompt_list]
        return self._generate(ids, texts, sampling_params, use_tqdm, lora_request)

    def chat(
        self,
        messages: ChatMessages | Sequence[ChatMessages],
        sampling_params: Params = None,
        use_tqdm: bool = True,
        lora_request: LoRAInput = None,
    ) -> list[RequestOutput]:
        """Generate a reply to each conversation, rendered with the model's chat template."""
        conversations = [messages] if messages and isinstance(messages[0], dict) else messages
        ids = [self.input_processor.apply_chat_template(c) for c in conversations]  # type: ignore[arg-type]
        texts = [self.tokenizer.decode(i) for i in ids] if self.tokenizer else [None] * len(ids)
        return self._generate(ids, texts, sampling_params, use_tqdm, lora_request)

    def get_tokenizer(self):
        return self.tokenizer

    def shutdown(self) -> None:
        """Stop the engine core (and its process, if it has one)."""
        self.engine_core.shutdown()

    def _generate(
        self,
        prompt_ids: list[list[int]],
        texts: list[str | None],
        sampling_params: Params,
        use_tqdm: bool,
        lora_request: LoRAInput = None,
    ) -> list[RequestOutput]:
        params = _per_prompt(sampling_params, len(prompt_ids))
        loras = _per_prompt_lora(lora_request, len(prompt_ids))
        order = [
            self._add_request(i, t, p, lora)
            for i, t, p, lora in zip(prompt_ids, texts, params, loras, strict=True)
        ]
        finished = self._run_engine(len(order), use_tqdm)
        return [finished[request_id] for request_id in order]

    def _add_request(
        self,
        prompt_ids: list[int],
        text: str | None,
        params: SamplingParams,
        lora_request: LoRARequest | None = None,
    ) -> str:
        request_id = str(next(self._request_counter))
        parent = ParentRequest(request_id, text, prompt_ids, params.n)
        for index in range(params.n):
            child_id = request_id if params.n == 1 else f"{index}_{request_id}"
            request = self.input_processor.process(
                child_id, prompt_ids, _child_params(params, index), lora_request=lora_request
            )
            self.output_processor.add_request(request, parent, index)
            self.engine_core.add_request(request)
        return request_id

    def _run_engine(self, num_requests: int, use_tqdm: bool) -> dict[str, RequestOutput]:
        finished: dict[str, RequestOutput] = {}
        with tqdm(total=num_requests, desc="Processed prompts", disable=not use_tqdm) as bar:
            while self.output_processor.has_unfinished_requests():
                outputs = self.engine_core.get_output().outputs
                processed = self.output_processor.process_outputs(outputs)
                self.engine_core.abort_requests(processed.reqs_to_abort)
                for request_id, reason in processed.refused.items():
                    raise EngineRequestError(f"Request {request_id}: {reason}")
                for output in processed.request_outputs:
                    if output.finished:
                        finished[output.request_id] = output
                        bar.update(1)
        return finished


def _as_prompt_list(prompts: PromptInput | Sequence[PromptInput]) -> list[PromptInput]:
    if isinstance(prompts, str):
        return [prompts]
    if prompts and isinstance(prompts[0], int):
        return [list(prompts)]  # type: ignore[arg-type]
    return list(prompts)  # type: ignore[arg-type]


def _per_prompt(params: Params, count: int) -> list[SamplingParams]:
    if params is None:
        return [SamplingParams()] * count
    if isinstance(params, SamplingParams):
        return [params] * count
    if len(params) != count:
        raise ValueError(f"Got {len(params)} sampling params for {count} prompts.")
    return list(params)


def _per_prompt_lora(lora_request: LoRAInput, count: int) -> list[LoRARequest | None]:
    if lora_request is None or isinstance(lora_request, LoRARequest):
        return [lora_request] * count
    if len(lora_request) != count:
        raise ValueError(f"Got {len(lora_request)} LoRA requests for {count} prompts.")
    return list(lora_request)


def _child_params(params: SamplingParams, index: int) -> SamplingParams:
    """Offline generation only wants finished requests (FINAL_ONLY)."""
    child = child_sampling_params(params, index)
    return msgspec.structs.replace(child, output_kind=RequestOutputKind.FINAL_ONLY)
