"""Tests of `SamplingMetadata.build`: which tensors exist, their values and padding."""

from __future__ import annotations

import torch

from vllm_hydra.sampling_params import SamplingParams


def test_plain_batch_builds_no_optional_tensors(make_metadata) -> None:
    md = make_metadata([SamplingParams(), SamplingParams(temperature=0.7)], 32)
    assert md.all_random and not md.all_greedy and md.no_penalties
    assert md.temperature.tolist() == [1.0, torch.tensor(0.7).item()]
    absent = (md.top_p, md.top_k, md.min_p, md.max_num_logprobs, md.prompt_token_ids)
    absent += (md.output_token_ids, md.repetition_penalties, md.logit_bias, md.min_tokens_mask)
    assert all(field is None for field in absent)


def test_greedy_flags() -> None:
    from vllm_hydra.sample.metadata import SamplingMetadata

    greedy = SamplingParams(temperature=0.0)
    md = SamplingMetadata.build([greedy, greedy], [[], []], [[], []], {}, 8, "cpu")
    assert md.all_greedy and not md.all_random and md.temperature is None
    mixed = SamplingMetadata.build([greedy, SamplingParams()], [[], []], [[], []], {}, 8, "cpu")
    assert not mixed.all_greedy and not mixed.all_random
    assert mixed.temperature.tolist() == [0.0, 1.0]
    empty = SamplingMetadata.build([], [], [], {}, 8, "cpu")
    assert empty.all_greedy and not empty.all_random


def test_top_k_off_values_become_vocab_size(make_metadata) -> None:
    params = [SamplingParams(top_k=k) for k in (0, -1, 5, 32, 100)]
    md = make_metadata(params, 32)
    assert md.top_k.tolist() == [32, 32, 5, 32, 32]
    assert md.top_k.dtype == torch.int64
    assert make_metadata([SamplingParams(top_k=0), SamplingParams(top_k=40)], 32).top_k is None


def test_top_p_and_min_p_only_when_used(make_metadata) -> None:
    md = make_metadata([SamplingParams(top_p=0.5), SamplingParams(min_p=0.25)], 32)
    assert md.top_p.tolist() == [0.5, 1.0]
    assert md.min_p.tolist() == [0.0, 0.25]


def test_max_num_logprobs(make_metadata) -> None:
    assert make_metadata([SamplingParams(logprobs=0)], 32).max_num_logprobs == 0
    mixed = [SamplingParams(logprobs=2), SamplingParams(), SamplingParams(logprobs=5)]
    assert make_metadata(mixed, 32).max_num_logprobs == 5
    assert make_metadata([SamplingParams(logprobs=-1)], 32).max_num_logprobs == 32


def test_penalty_tensors_and_padding(make_metadata) -> None:
    params = [SamplingParams(frequency_penalty=0.5), SamplingParams()]
    md = make_metadata(params, 10, prompts=[[1, 2, 3], [4]], outputs=[[5], [6, 7]])
    assert not md.no_penalties
    assert md.prompt_token_ids is None  # only the repetition penalty reads the prompt
    assert md.output_token_ids.tolist() == [[5, 10], [6, 7]]
    assert md.frequency_penalties.tolist() == [0.5, 0.0]
    params[1] = SamplingParams(repetition_penalty=1.2)
    md = make_metadata(params, 10, prompts=[[1, 2, 3], [4]], outputs=[[], []])
    assert md.prompt_token_ids.tolist() == [[1, 2, 3], [4, 10, 10]]
    assert md.output_token_ids.shape == (2, 0)
    assert md.repetition_penalties.tolist() == [1.0, torch.tensor(1.2).item()]


def test_logit_bias_entries(make_metadata) -> None:
    params = [SamplingParams(), SamplingParams(logit_bias={3: -1.0, 7: 2.5})]
    bias = make_metadata(params, 10).logit_bias
    assert bias.rows.tolist() == [1, 1]
    assert bias.token_ids.tolist() == [3, 7]
    assert bias.values.tolist() == [-1.0, 2.5]


def test_min_tokens_mask_covers_stop_ids_and_eos_until_reached(make_metadata) -> None:
    params = [
        SamplingParams(min_tokens=2, stop_token_ids=[4]),
        SamplingParams(min_tokens=2, stop_token_ids=[4]),  # reached
        SamplingParams(min_tokens=2, stop_token_ids=[4], ignore_eos=True),
        SamplingParams(min_tokens=1),  # two EOS ids, one past the vocab
        SamplingParams(min_tokens=1),  # no EOS known
    ]
    outputs = [[9], [9, 9], [], [], []]
    eos = [2, 2, 2, [3, 2, 99], None]
    mask = make_metadata(params, 10, outputs=outputs, eos=eos).min_tokens_mask
    pairs = list(zip(mask.rows.tolist(), mask.token_ids.tolist(), strict=True))
    assert pairs == [(0, 2), (0, 4), (2, 4), (3, 2), (3, 3)]
    assert torch.isneginf(mask.values).all()


def test_tensors_live_on_the_requested_device(make_metadata) -> None:
    params = [SamplingParams(top_k=2, repetition_penalty=1.1, logit_bias={1: 1.0})]
    md = make_metadata(params, 10, prompts=[[1]], outputs=[[2]], device="cpu")
    tensors = (md.temperature, md.top_k, md.prompt_token_ids, md.logit_bias.values)
    assert all(t.device == torch.device("cpu") for t in tensors)
