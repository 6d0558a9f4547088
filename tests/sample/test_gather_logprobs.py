"""Tests of `gather_logprobs` and `compute_logprobs` (sampled and prompt logprobs)."""

from __future__ import annotations

import torch

from vllm_hydra.sample.logprobs import compute_logprobs, gather_logprobs


def test_column_zero_is_the_given_token_then_the_top_n() -> None:
    logprobs = torch.log_softmax(torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 4.0, 3.0, 2.0]]), -1)
    out = gather_logprobs(logprobs, 2, torch.tensor([2, 0]))
    assert out.logprob_token_ids.tolist() == [[2, 1, 3], [0, 0, 1]]
    torch.testing.assert_close(out.logprobs[0], logprobs[0, [2, 1, 3]])
    torch.testing.assert_close(out.logprobs[1], logprobs[1, [0, 0, 1]])
    assert out.selected_token_ranks.tolist() == [3, 1]
    assert out.logprob_token_ids.dtype == out.selected_token_ranks.dtype == torch.int64
    assert out.logprobs.dtype == torch.float32


def test_zero_logprobs_keeps_only_the_token() -> None:
    logprobs = torch.log_softmax(torch.randn(5, 7), -1)
    out = gather_logprobs(logprobs, 0, torch.tensor([0, 1, 2, 3, 4]))
    assert out.logprobs.shape == out.logprob_token_ids.shape == (5, 1)


def test_tied_tokens_share_the_larger_rank() -> None:
    logprobs = torch.log_softmax(torch.tensor([[1.0, 2.0, 2.0, 0.0]]), -1)
    ranks = gather_logprobs(logprobs, 1, torch.tensor([1])).selected_token_ranks
    assert ranks.tolist() == [2]


def test_compute_logprobs_is_float32_log_softmax() -> None:
    logits = torch.randn(3, 20, dtype=torch.bfloat16)
    logprobs = compute_logprobs(logits)
    assert logprobs.dtype == torch.float32
    torch.testing.assert_close(logprobs, torch.log_softmax(logits.float(), -1))


def test_prompt_logprobs_rank_each_next_token() -> None:
    """Prompt logprobs: row t scores the prompt token at t + 1; ranks match a full sort."""
    torch.manual_seed(0)
    logprobs = compute_logprobs(torch.randn(6, 50))
    next_tokens = torch.tensor([3, 9, 27, 1, 49, 0])
    out = gather_logprobs(logprobs, 4, next_tokens)
    order = logprobs.argsort(dim=-1, descending=True)
    expected = (order == next_tokens.unsqueeze(1)).int().argmax(-1) + 1
    assert torch.equal(out.selected_token_ranks, expected)
    assert expected.max() > 5  # some ranks fall outside the top-4 columns
    assert torch.equal(out.logprob_token_ids[:, 1:], order[:, :4])
