"""What the model runner remembers about each request between steps (vLLM's CachedRequestState)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vllm_hydra.core.sched_output import NewRequestData
from vllm_hydra.lora.request import LoRARequest
from vllm_hydra.sampling_params import SamplingParams


@dataclass
class CachedRequestState:
    req_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    # The request's own RNG when it has a seed, so its samples do not depend on the batch.
    generator: torch.Generator | None
    block_ids: list[int]
    num_computed_tokens: int
    eos_token_id: int | None
    output_token_ids: list[int] = field(default_factory=list)
    lora_request: LoRARequest | None = None

    @classmethod
    def from_new_request(cls, new: NewRequestData, device: torch.device) -> CachedRequestState:
        params = new.sampling_params
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=device)
            generator.manual_seed(params.seed)
        return cls(
            req_id=new.req_id,
            prompt_token_ids=new.prompt_token_ids,
            sampling_params=params,
            generator=generator,
            block_ids=list(new.block_ids),
            num_computed_tokens=new.num_computed_tokens,
            eos_token_id=new.eos_token_id,
            output_token_ids=list(new.output_token_ids),
            lora_request=new.lora_request,
        )

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    def set_token_ids(self, start: int, token_ids: list[int]) -> None:
        """Write tokens [start, start + len) of prompt + outputs, as the scheduler knows them
        (a pipeline stage that does not sample learns its requests' outputs this way)."""
        for position, token_id in enumerate(token_ids, start):
            index = position - len(self.prompt_token_ids)
            if index < 0:
                continue  # a prompt token: known since the request arrived
            if index < len(self.output_token_ids):
                self.output_token_ids[index] = token_id
            else:
                self.output_token_ids.append(token_id)
