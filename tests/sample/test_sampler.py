"""End-to-end tests of `Sampler`: greedy, temperature and truncation, penalties, min_tokens,
seeded reproducibility and raw logprobs."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from vllm_hydra.sample.sampler import Sampler
from vllm_hydra.sampling_params import SamplingParams

VOCAB = 16


def _frequencies(tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    return torch.bincount(tokens, minlength=vocab_size).double() / tokens.numel()


def test_greedy_rows_take_the_argmax(make_metadata) -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 32)
    greedy, hot = SamplingParams(temperature=0.0), SamplingParams(temperature=5.0)
    out = Sampler()(logits, make_metadata([greedy, hot] * 3, 32))
    assert out.sampled_token_ids.dtype == torch.int64
    assert torch.equal(out.sampled_token_ids[0::2], logits[0::2].argmax(-1))
    all_greedy = Sampler()(logits, make_metadata([greedy] * 6, 32))
    assert torch.equal(all_greedy.sampled_token_ids, logits.argmax(-1))
    assert all_greedy.logprobs_tensors is None


def test_all_greedy_batch_draws_no_random_numbers(make_metadata) -> None:
    logits = torch.randn(3, 32)
    state = torch.get_rng_state()
    Sampler()(logits, make_metadata([SamplingParams(temperature=0.0)] * 3, 32))
    assert torch.equal(state, torch.get_rng_state())
    # A batch with one random row does draw from the global RNG.
    mixed = [SamplingParams(temperature=0.0), SamplingParams(), SamplingParams(temperature=0.0)]
    Sampler()(logits, make_metadata(mixed, 32))
    assert not torch.equal(state, torch.get_rng_state())


def test_penalties_and_logit_bias_apply_to_greedy_rows(make_metadata) -> None:
    logits = torch.arange(10, dtype=torch.float32).repeat(3, 1)  # argmax 9, then 8
    params = [
        SamplingParams(temperature=0.0, repetition_penalty=2.0),
        SamplingParams(temperature=0.0, frequency_penalty=1.0),
        SamplingParams(temperature=0.0, logit_bias={3: 7.5}),
    ]
    metadata = make_metadata(params, 10, prompts=[[9], [1], [1]], outputs=[[], [9, 9], []])
    # 9/2 = 4.5 < 8; 9 - 2 * 1 = 7 < 8; 3 + 7.5 = 10.5 > 9.
    assert Sampler()(logits, metadata).sampled_token_ids.tolist() == [8, 8, 3]


def test_greedy_penalty_matches_transformers(make_metadata) -> None:
    torch.manual_seed(1)
    logits = torch.randn(1, 50) * 3
    top = int(logits.argmax())
    prompt, output = [4, top, 15, 16], [23, 42, 4]
    seen = torch.tensor([prompt + output])
    expected = RepetitionPenaltyLogitsProcessor(1.7)(seen, logits.clone()).argmax(-1)
    assert expected.item() != logits.argmax(-1).item()  # the penalty matters here
    params = [SamplingParams(temperature=0.0, repetition_penalty=1.7)]
    metadata = make_metadata(params, 50, prompts=[prompt], outputs=[output])
    assert torch.equal(Sampler()(logits, metadata).sampled_token_ids, expected)


def test_min_tokens_masks_eos_and_stop_ids(make_metadata) -> None:
    logits = torch.zeros(4, 10)
    logits[:, 2], logits[:, 5], logits[:, 7] = 10.0, 9.0, 8.0  # EOS 2, stop id 5, then 7
    params = [
        SamplingParams(temperature=0.0, min_tokens=3, stop_token_ids=[5]),
        SamplingParams(temperature=0.0, min_tokens=3, stop_token_ids=[5]),
        SamplingParams(temperature=0.0, min_tokens=3, stop_token_ids=[5], ignore_eos=True),
        SamplingParams(temperature=0.0, min_tokens=1),
    ]
    outputs = [[1], [1, 1, 1], [], []]
    metadata = make_metadata(params, 10, outputs=outputs, eos=[2, 2, 2, [7, 2]])
    # Below min_tokens: EOS and stop ids masked; reached: EOS allowed; ignore_eos: EOS is not
    # a stop token; a row with two EOS ids has both masked.
    assert Sampler()(logits, metadata).sampled_token_ids.tolist() == [7, 2, 2, 5]


def _warped_like_hf(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """One row through transformers' warpers in the sampler's order."""
    scores = TemperatureLogitsWarper(p.temperature)(None, logits.clone())
    if p.min_p > 0:
        scores = MinPLogitsWarper(p.min_p)(None, scores)
    if p.top_k > 0:
        scores = TopKLogitsWarper(p.top_k)(None, scores)
    return TopPLogitsWarper(p.top_p)(None, scores) if p.top_p < 1 else scores


TRUNCATIONS = [
    SamplingParams(temperature=0.5),
    SamplingParams(temperature=2.0),
    SamplingParams(temperature=1.0, top_k=3),
    SamplingParams(temperature=0.8, top_p=0.7),
    SamplingParams(temperature=1.5, min_p=0.2),
    SamplingParams(temperature=1.2, top_k=6, top_p=0.8, min_p=0.05),
]


def test_temperature_and_truncation_give_the_expected_distribution(make_metadata) -> None:
    """Rows with different settings share one batch; each config's empirical distribution
    must match softmax of transformers' warped logits (so its support too)."""
    torch.manual_seed(2)
    row = torch.randn(VOCAB) * 2
    draws = 8000
    params = TRUNCATIONS * draws  # row i uses TRUNCATIONS[i % len(TRUNCATIONS)]
    out = Sampler()(row.repeat(len(params), 1), make_metadata(params, VOCAB))
    tokens = out.sampled_token_ids.view(draws, len(TRUNCATIONS))
    plain = row.softmax(-1).double()
    for i, p in enumerate(TRUNCATIONS):
        expected = _warped_like_hf(row.unsqueeze(0), p)[0].softmax(-1).double()
        observed = _frequencies(tokens[:, i], VOCAB)
        assert (observed[expected == 0] == 0).all(), f"{p}: token outside the support"
        assert (observed - expected).abs().max() < 0.025, p
        assert (expected - plain).abs().sum() > 0.1, f"{p} should change the distribution"


def _run_steps(
    batch: list[SamplingParams], seeds: dict[int, int], row: int, steps: int, make_metadata
) -> list[int]:
    """Sample `steps` times; the tracked `row` sees the same logits whatever the batch."""
    sampler, tokens = Sampler(), []
    target_logits = torch.randn(steps, 64, generator=torch.Generator().manual_seed(7))
    metadata = make_metadata(batch, 64, seeds=seeds)
    for step in range(steps):
        logits = torch.randn(len(batch), 64) * 3  # other rows: anything
        logits[row] = target_logits[step]
        tokens.append(sampler(logits, metadata).sampled_token_ids[row].item())
    return tokens


def test_seeded_request_is_reproducible_across_batch_compositions(make_metadata) -> None:
    seeded = SamplingParams(temperature=0.9, top_p=0.95, seed=1234)
    torch.manual_seed(3)
    alone = _run_steps([seeded], {0: 1234}, row=0, steps=8, make_metadata=make_metadata)
    others = [
        SamplingParams(),
        SamplingParams(temperature=0.7, seed=99),
        SamplingParams(temperature=0.0),
        seeded,
        SamplingParams(top_k=3, min_p=0.1),
    ]
    torch.manual_seed(4)  # a different global RNG stream for the unseeded rows
    in_batch = _run_steps(others, {1: 99, 3: 1234}, row=3, steps=8, make_metadata=make_metadata)
    assert alone == in_batch
    other_seed = _run_steps([seeded], {0: 4321}, row=0, steps=8, make_metadata=make_metadata)
    assert other_seed != alone


def test_logprobs_are_raw_log_softmax_with_ranks(make_metadata) -> None:
    torch.manual_seed(5)
    logits = torch.randn(4, 32)
    params = [
        SamplingParams(temperature=0.3, repetition_penalty=1.5, logprobs=3),
        SamplingParams(temperature=0.0, logit_bias={0: 50.0}),
        SamplingParams(top_k=2, presence_penalty=1.0, logprobs=1),
        SamplingParams(temperature=0.0, logprobs=0),
    ]
    metadata = make_metadata(params, 32, prompts=[[1, 2]] * 4, outputs=[[3]] * 4)
    out = Sampler()(logits, metadata)
    lp, sampled = out.logprobs_tensors, out.sampled_token_ids
    raw = torch.log_softmax(logits, dim=-1)
    rows = torch.arange(4)
    assert sampled[1] == 0  # the bias changed the token, not the logprobs below
    assert lp.logprobs.shape == lp.logprob_token_ids.shape == (4, 4)  # max_num_logprobs 3 + 1
    assert torch.equal(lp.logprob_token_ids[:, 0], sampled)
    torch.testing.assert_close(lp.logprobs[:, 0], raw[rows, sampled])
    top = raw.topk(3, dim=-1)
    assert torch.equal(lp.logprob_token_ids[:, 1:], top.indices)
    torch.testing.assert_close(lp.logprobs[:, 1:], top.values)
    order = raw.argsort(dim=-1, descending=True)
    expected_ranks = (order == sampled.unsqueeze(1)).int().argmax(-1) + 1
    assert torch.equal(lp.selected_token_ranks, expected_ranks)


def test_whole_vocab_logprobs(make_metadata) -> None:
    logits = torch.randn(2, 8)
    params = [SamplingParams(logprobs=-1), SamplingParams(logprobs=2)]
    lp = Sampler()(logits, make_metadata(params, 8)).logprobs_tensors
    assert lp.logprobs.shape == (2, 9)
    torch.testing.assert_close(lp.logprobs[:, 1:].exp().sum(-1), torch.ones(2))


def test_caller_logits_are_left_untouched(make_metadata) -> None:
    logits = torch.randn(2, 16)
    before = logits.clone()
    params = [
        SamplingParams(temperature=0.5, top_k=2, top_p=0.5, min_p=0.1, repetition_penalty=2.0),
        SamplingParams(temperature=0.0, logit_bias={1: 3.0}, min_tokens=2, stop_token_ids=[4]),
    ]
    Sampler()(logits, make_metadata(params, 16, prompts=[[1], [2]], outputs=[[3], []]))
    assert torch.equal(logits, before)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_sampling_matches_expectations(make_metadata) -> None:
    logits = torch.randn(3, 64, device="cuda")
    params = [
        SamplingParams(temperature=0.0, repetition_penalty=1.3, logprobs=2),
        SamplingParams(temperature=0.8, top_k=5, top_p=0.9, min_p=0.05, seed=11),
        SamplingParams(logit_bias={1: 2.0}, min_tokens=4, stop_token_ids=[3]),
    ]
    prompts, outputs = [[1, 2], [3], [4]], [[5], [], [6]]

    def sample() -> torch.Tensor:
        md = make_metadata(params, 64, prompts, outputs, seeds={1: 11}, eos=[2] * 3, device="cuda")
        return Sampler()(logits, md)

    first, second = sample(), sample()
    assert first.sampled_token_ids.device.type == "cuda"
    assert first.sampled_token_ids[1] == second.sampled_token_ids[1]  # seeded row
    assert first.sampled_token_ids[2].item() != 3
    raw = torch.log_softmax(logits, -1)
    picked = raw.gather(1, first.sampled_token_ids.unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(first.logprobs_tensors.logprobs[:, 0], picked)
