"""Tests of the built-in logits processors: logit bias, min-tokens masking, min-p."""

from __future__ import annotations

import torch
from transformers import MinPLogitsWarper

from vllm_hydra.sample.metadata import SparseLogits
from vllm_hydra.sample.ops.logits_processors import (
    apply_logit_bias,
    apply_min_p,
    apply_min_tokens,
)


def _sparse(rows: list[int], token_ids: list[int], values: list[float]) -> SparseLogits:
    return SparseLogits(torch.tensor(rows), torch.tensor(token_ids), torch.tensor(values))


def test_logit_bias_adds_to_the_right_rows() -> None:
    logits = torch.ones(3, 5)
    got = apply_logit_bias(logits, _sparse([0, 2, 2], [4, 0, 4], [-100.0, 2.0, 0.5]))
    expected = torch.ones(3, 5)
    expected[0, 4], expected[2, 0], expected[2, 4] = -99.0, 3.0, 1.5
    torch.testing.assert_close(got, expected)


def test_min_tokens_mask_sets_minus_inf() -> None:
    inf = float("-inf")
    got = apply_min_tokens(torch.zeros(2, 4), _sparse([1, 1], [0, 3], [inf, inf]))
    assert torch.isinf(got).tolist() == [[False] * 4, [True, False, False, True]]


def test_min_p_matches_transformers_per_row() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 30) * 2
    min_ps = [0.0, 0.05, 0.3, 1.0]
    got = apply_min_p(logits.clone(), torch.tensor(min_ps))
    for row, min_p in enumerate(min_ps):
        expected = MinPLogitsWarper(min_p)(None, logits[row : row + 1].clone())[0]
        assert torch.equal(got[row], expected), min_p
    kept = torch.isfinite(got).sum(-1).tolist()
    assert kept[0] == 30 and kept[-1] == 1 and kept == sorted(kept, reverse=True)
