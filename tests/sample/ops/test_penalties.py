"""Tests of the penalty ops against transformers and the OpenAI formulas."""

from __future__ import annotations

import torch
from transformers import RepetitionPenaltyLogitsProcessor

from vllm_hydra.sample.ops.penalties import apply_penalties, get_token_bin_counts_and_mask

VOCAB = 12
PAD = VOCAB


def _pad(rows: list[list[int]]) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [PAD] * (width - len(r)) for r in rows])


def _zeros(n: int) -> torch.Tensor:
    return torch.zeros(n)


def test_bin_counts_ignore_padding() -> None:
    counts, mask = get_token_bin_counts_and_mask(_pad([[1, 1, 3], [11]]), VOCAB)
    assert counts.shape == (2, VOCAB)
    assert counts[0, 1] == 2 and counts[0, 3] == 1 and counts[1, 11] == 1
    assert counts.sum() == 4
    assert torch.equal(mask, counts > 0)


def test_repetition_penalty_matches_transformers() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, VOCAB) * 2
    logits[0, 2] = 0.0  # zero stays zero either way
    prompts = [[1, 2, 5], [4, 4], [0, 7]]
    outputs = [[5, 9], [], [3, 3, 11]]
    penalties = torch.tensor([1.8, 0.6, 1.0])  # < 1 rewards repeats; 1 is off
    got = apply_penalties(
        logits.clone(), _pad(prompts), _pad(outputs), _zeros(3), _zeros(3), penalties
    )
    for row in range(3):
        seen = torch.tensor([prompts[row] + outputs[row]])
        hf = RepetitionPenaltyLogitsProcessor(penalties[row].item())
        expected = hf(seen, logits[row : row + 1].clone())[0]
        torch.testing.assert_close(got[row], expected)
    assert not torch.equal(got[0], logits[0]) and torch.equal(got[2], logits[2])


def test_frequency_and_presence_penalties_count_output_tokens_only() -> None:
    logits = torch.zeros(2, VOCAB)
    prompts, outputs = _pad([[1, 1, 2], [1]]), _pad([[2, 2, 2, 3], [5]])
    presence, frequency = torch.tensor([0.5, -1.0]), torch.tensor([0.25, 0.0])
    got = apply_penalties(logits, prompts, outputs, presence, frequency, torch.ones(2))
    expected = torch.zeros(2, VOCAB)
    expected[0, 2] = -0.5 - 3 * 0.25  # presence once, frequency per occurrence
    expected[0, 3] = -0.5 - 1 * 0.25
    expected[1, 5] = 1.0  # a negative presence penalty encourages the token
    torch.testing.assert_close(got, expected)  # prompt-only token 1 untouched


def test_all_penalties_compose_like_vllm() -> None:
    """Repetition first (on prompt + output), then frequency and presence (on output)."""
    logits = torch.tensor([[2.0, -2.0, 1.0, 3.0]])
    got = apply_penalties(
        logits,
        _pad([[0]]),
        torch.tensor([[1, 1]]),
        torch.tensor([0.5]),
        torch.tensor([0.1]),
        torch.tensor([2.0]),
    )
    torch.testing.assert_close(got, torch.tensor([[1.0, -4.0 - 0.2 - 0.5, 1.0, 3.0]]))
