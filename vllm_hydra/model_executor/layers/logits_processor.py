"""Hidden states of the rows that sample -> float32 logits over the real vocabulary."""

from __future__ import annotations

import torch
from torch import nn

from vllm_hydra.distributed.parallel_state import tensor_model_parallel_all_gather
from vllm_hydra.model_executor.layers.vocab_parallel_embedding import ParallelLMHead


class LogitsProcessor(nn.Module):
    """Projects through the (vocabulary-split) LM head, gathers the slices, drops padding."""

    def __init__(self, vocab_size: int, scale: float = 1.0) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.scale = scale

    def forward(self, lm_head: ParallelLMHead, hidden_states: torch.Tensor) -> torch.Tensor:
        # The matmul runs in the model dtype (the bf16 fast path on CPU); the sampler and the
        # logprobs need float32.
        logits = lm_head.gemm(hidden_states, lm_head.weight, None)
        logits = tensor_model_parallel_all_gather(logits)[..., : self.vocab_size].float()
        if self.scale != 1.0:
            logits.mul_(self.scale)
        return logits
