"""Turning a step's logits into tokens (vLLM's v1/sample): metadata, sampler, logprobs."""

from vllm_hydra.sample.logprobs import compute_logprobs, gather_logprobs
from vllm_hydra.sample.metadata import SamplingMetadata, SparseLogits
from vllm_hydra.sample.sampler import Sampler

__all__ = ["Sampler", "SamplingMetadata", "SparseLogits", "compute_logprobs", "gather_logprobs"]
