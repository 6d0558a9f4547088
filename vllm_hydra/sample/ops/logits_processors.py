"""vLLM's built-in logits processors: logit bias, min-tokens masking, min-p."""

from __future__ import annotations

import torch

from vllm_hydra.sample.metadata import SparseLogits


def apply_logit_bias(logits: torch.Tensor, bias: SparseLogits) -> torch.Tensor:
    """Add each request's logit_bias to its row, in place."""
    return logits.index_put_((bias.rows, bias.token_ids), bias.values, accumulate=True)


def apply_min_tokens(logits: torch.Tensor, mask: SparseLogits) -> torch.Tensor:
    """Set the stop and EOS ids of rows below min_tokens to -inf, in place."""
    return logits.index_put_((mask.rows, mask.token_ids), mask.values)


def apply_min_p(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Drop tokens whose probability is below min_p times the row's top probability.

    In place on `logits` [n, vocab]; min_p 0 is off. Applied after temperature, as in vLLM.
    """
    probs = logits.softmax(dim=-1)
    threshold = probs.amax(dim=-1, keepdim=True) * min_p.unsqueeze(1)
    return logits.masked_fill_(probs < threshold, float("-inf"))
