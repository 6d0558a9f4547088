"""Repetition (HF), presence and frequency (OpenAI) penalties over a batch of logits."""

from __future__ import annotations

import torch


def get_token_bin_counts_and_mask(
    token_ids: torch.Tensor, vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row counts [n, vocab] of `token_ids` [n, len], padded with vocab_size, and a mask
    of the tokens that occur at least once."""
    # One extra column absorbs the padding, then is dropped.
    counts = torch.zeros(
        token_ids.shape[0], vocab_size + 1, dtype=torch.int64, device=token_ids.device
    )
    counts.scatter_add_(1, token_ids, torch.ones_like(token_ids))
    counts = counts[:, :vocab_size]
    return counts, counts > 0


def apply_penalties(
    logits: torch.Tensor,
    prompt_token_ids: torch.Tensor | None,
    output_token_ids: torch.Tensor,
    presence_penalties: torch.Tensor,
    frequency_penalties: torch.Tensor,
    repetition_penalties: torch.Tensor,
) -> torch.Tensor:
    """Penalise `logits` [n, vocab] in place and return them.

    Repetition: a token seen in the prompt or the output has a positive logit divided by the
    penalty and a non-positive one multiplied (transformers' RepetitionPenaltyLogitsProcessor).
    Frequency subtracts penalty * count and presence subtracts penalty once, both over output
    tokens only (OpenAI). Rows with neutral values (1, 0, 0) come out unchanged.
    `prompt_token_ids` is None when no row uses a repetition penalty (then none is applied).
    """
    vocab_size = logits.shape[1]
    output_counts, output_mask = get_token_bin_counts_and_mask(output_token_ids, vocab_size)
    if prompt_token_ids is not None:
        _, prompt_mask = get_token_bin_counts_and_mask(prompt_token_ids, vocab_size)
        seen = prompt_mask | output_mask
        penalty = torch.where(seen, repetition_penalties.unsqueeze(1), 1.0)
        logits.copy_(torch.where(logits > 0, logits / penalty, logits * penalty))
    logits -= frequency_penalties.unsqueeze(1) * output_counts
    logits -= presence_penalties.unsqueeze(1) * output_mask
    return logits
