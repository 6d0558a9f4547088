"""`Sampler`: logits to one token per request, in vLLM v1's order of operations.

raw logprobs -> logit bias -> min-tokens mask -> penalties -> greedy argmax -> temperature ->
min-p -> top-k -> top-p -> exponential-race sampling -> top-N logprobs of the sampled tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from vllm_hydra.outputs import LogprobsTensors, SamplerOutput
from vllm_hydra.sample.logprobs import compute_logprobs, gather_logprobs
from vllm_hydra.sample.metadata import SamplingMetadata
from vllm_hydra.sample.ops.logits_processors import apply_logit_bias, apply_min_p, apply_min_tokens
from vllm_hydra.sample.ops.penalties import apply_penalties
from vllm_hydra.sample.ops.topk_topp import apply_top_k, apply_top_p, random_sample
from vllm_hydra.sampling_params import GREEDY_EPS


class Sampler(nn.Module):
    """Stateless: everything per request arrives in `SamplingMetadata`."""

    def forward(self, logits: torch.Tensor, metadata: SamplingMetadata) -> SamplerOutput:
        """Sample from `logits` [num_reqs, vocab]; the caller's tensor is left untouched."""
        # Logprobs of the logits as the model gave them (vLLM's default "raw_logprobs").
        raw_logprobs = None if metadata.max_num_logprobs is None else compute_logprobs(logits)
        logits = logits.to(torch.float32, copy=True)
        logits = self.apply_logits_processors(logits, metadata)
        sampled = self.sample(logits, metadata)
        logprobs_tensors: LogprobsTensors | None = None
        if raw_logprobs is not None:
            logprobs_tensors = gather_logprobs(raw_logprobs, metadata.max_num_logprobs, sampled)
        return SamplerOutput(sampled_token_ids=sampled, logprobs_tensors=logprobs_tensors)

    @staticmethod
    def apply_logits_processors(logits: torch.Tensor, metadata: SamplingMetadata) -> torch.Tensor:
        """The steps that can change the argmax, so they apply to greedy rows too."""
        if metadata.logit_bias is not None:
            logits = apply_logit_bias(logits, metadata.logit_bias)
        if metadata.min_tokens_mask is not None:
            logits = apply_min_tokens(logits, metadata.min_tokens_mask)
        if not metadata.no_penalties:
            logits = apply_penalties(
                logits,
                metadata.prompt_token_ids,
                metadata.output_token_ids,
                metadata.presence_penalties,
                metadata.frequency_penalties,
                metadata.repetition_penalties,
            )
        return logits

    def sample(self, logits: torch.Tensor, metadata: SamplingMetadata) -> torch.Tensor:
        """[num_reqs] int64: argmax on greedy rows, a random draw on the others."""
        greedy = None if metadata.all_random else logits.argmax(dim=-1)
        if metadata.all_greedy:
            return greedy
        random = random_sample(self.compute_probs(logits, metadata), metadata.generators)
        is_greedy = metadata.temperature < GREEDY_EPS
        return random if greedy is None else torch.where(is_greedy, greedy, random)

    @staticmethod
    def compute_probs(logits: torch.Tensor, metadata: SamplingMetadata) -> torch.Tensor:
        """The random rows' distribution (in place on `logits`): temperature, min-p, top-k,
        top-p, softmax. The rejection sampler verifies drafts against this same distribution.
        """
        temperature = metadata.temperature
        assert temperature is not None, "some row samples at random"
        # Greedy rows are argmaxed instead; dividing them by 1 keeps them finite.
        is_greedy = temperature < GREEDY_EPS
        logits.div_(torch.where(is_greedy, 1.0, temperature).unsqueeze(1))
        if metadata.min_p is not None:
            logits = apply_min_p(logits, metadata.min_p)
        if metadata.top_k is not None:
            logits = apply_top_k(logits, metadata.top_k)
        if metadata.top_p is not None:
            logits = apply_top_p(logits, metadata.top_p)
        return logits.softmax(dim=-1)
