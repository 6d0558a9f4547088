"""Tests of top-k, top-p and exponential-race sampling against transformers and by hand."""

from __future__ import annotations

import torch
from transformers import TopKLogitsWarper, TopPLogitsWarper

from vllm_hydra.sample.ops.topk_topp import apply_top_k, apply_top_p, random_sample

VOCAB = 20


def test_top_k_matches_transformers_per_row() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, VOCAB)
    ks = [1, 3, 7, VOCAB, 19]  # VOCAB is off
    got = apply_top_k(logits.clone(), torch.tensor(ks))
    for row, k in enumerate(ks):
        expected = TopKLogitsWarper(k)(None, logits[row : row + 1].clone())[0]
        assert torch.equal(got[row], expected), k
    assert torch.isfinite(got[3]).all()
    assert torch.isfinite(got).sum(-1).tolist() == ks


def test_top_k_keeps_ties_with_the_kth() -> None:
    logits = torch.tensor([[3.0, 1.0, 2.0, 2.0, 0.0]])
    got = apply_top_k(logits.clone(), torch.tensor([2]))
    assert torch.isfinite(got[0]).tolist() == [True, False, True, True, False]


def test_top_p_matches_transformers_per_row() -> None:
    torch.manual_seed(1)
    logits = torch.randn(5, VOCAB) * 2
    ps = [0.01, 0.3, 0.75, 0.95, 1.0]
    got = apply_top_p(logits.clone(), torch.tensor(ps))
    for row, p in enumerate(ps):
        expected = TopPLogitsWarper(p)(None, logits[row : row + 1].clone())[0]
        assert torch.equal(got[row], expected), p
    kept = torch.isfinite(got).sum(-1).tolist()
    assert kept[0] == 1 and kept[-1] == VOCAB and kept == sorted(kept)


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    got = apply_top_p(logits.repeat(3, 1), torch.tensor([0.5, 0.6, 0.9]))
    assert torch.isfinite(got).tolist() == [
        [True, False, False, False],
        [True, True, False, False],
        [True, True, True, False],
    ]


def test_random_sample_follows_the_probabilities() -> None:
    torch.manual_seed(2)
    probs = torch.tensor([0.5, 0.0, 0.3, 0.2, 0.0])
    draws = random_sample(probs.repeat(20000, 1), {})
    freq = torch.bincount(draws, minlength=5).float() / draws.numel()
    assert freq[1] == 0 and freq[4] == 0
    torch.testing.assert_close(freq, probs, atol=0.015, rtol=0)


def test_rows_with_generators_ignore_the_global_rng() -> None:
    probs = torch.full((3, VOCAB), 1.0 / VOCAB)

    def draw(global_seed: int) -> torch.Tensor:
        torch.manual_seed(global_seed)
        gens = {0: torch.Generator().manual_seed(5), 2: torch.Generator().manual_seed(6)}
        return random_sample(probs.clone(), gens)

    runs = [draw(global_seed) for global_seed in range(8)]
    assert all(run[0] == runs[0][0] and run[2] == runs[0][2] for run in runs)
    # The unseeded row does follow the global RNG.
    assert len({run[1].item() for run in runs}) > 1


def test_all_rows_seeded_leave_the_global_rng_alone() -> None:
    probs = torch.full((2, VOCAB), 1.0 / VOCAB)
    gens = {0: torch.Generator().manual_seed(1), 1: torch.Generator().manual_seed(2)}
    state = torch.get_rng_state()
    random_sample(probs, gens)
    assert torch.equal(state, torch.get_rng_state())
