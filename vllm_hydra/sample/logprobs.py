"""Logprobs of chosen tokens plus the top-N of each row (vLLM's Sampler.gather_logprobs)."""

from __future__ import annotations

import torch

from vllm_hydra.outputs import LogprobsTensors


def compute_logprobs(logits: torch.Tensor) -> torch.Tensor:
    """Log-softmax over the vocab, in float32 whatever the logits' dtype."""
    return logits.log_softmax(dim=-1, dtype=torch.float32)


def gather_logprobs(
    logprobs: torch.Tensor, num_logprobs: int, token_ids: torch.Tensor
) -> LogprobsTensors:
    """Column 0: each row's `token_ids` entry; columns 1..num_logprobs: the row's top-N.

    `logprobs` is [n, vocab]; `token_ids` is [n]. The rank counts the tokens whose logprob is
    >= the chosen one's (1 = most likely; tied tokens share the larger rank, as in vLLM).
    Also serves prompt logprobs, where `token_ids` are the next prompt tokens.
    """
    token_ids = token_ids.to(torch.int64)
    token_logprobs = logprobs.gather(-1, token_ids.unsqueeze(-1))
    ranks = (logprobs >= token_logprobs).sum(dim=-1)
    top_logprobs, top_ids = torch.topk(logprobs, num_logprobs, dim=-1)
    return LogprobsTensors(
        logprob_token_ids=torch.cat([token_ids.unsqueeze(-1), top_ids], dim=1),
        logprobs=torch.cat([token_logprobs, top_logprobs], dim=1).to(torch.float32),
        selected_token_ranks=ranks,
    )
