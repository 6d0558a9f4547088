"""The rejection sampler: greedy acceptance is exact; random acceptance leaves the emitted
tokens distributed as the target's (through its temperature and top-k), for drafts unlike the
target, both one-hot (n-gram) and drawn from a draft distribution; seeds reproduce."""

from __future__ import annotations

import torch

from vllm_hydra.sample.metadata import SamplingMetadata
from vllm_hydra.sample.rejection_sampler import RejectionSampler, SpecDecodeMetadata
from vllm_hydra.sampling_params import SamplingParams

VOCAB = 6
N = 40_000  # requests per statistical test (one call: rows = N x (k + 1))


def _tv_bound(num_samples: int) -> float:
    """About 3x the total-variation distance expected of num_samples exact draws."""
    return 1.2 * (VOCAB / num_samples) ** 0.5


def _metadata(params: list[SamplingParams], generators=None) -> SamplingMetadata:
    rows = len(params)
    return SamplingMetadata.build(params, [[1]] * rows, [[]] * rows, generators or {}, VOCAB, "cpu")


def _tv(samples: torch.Tensor, probs: torch.Tensor) -> float:
    counts = torch.bincount(samples, minlength=VOCAB).double()
    return 0.5 * (counts / counts.sum() - probs.double()).abs().sum().item()


def test_greedy_accepts_while_equal_to_the_argmax_then_emits_the_target_token() -> None:
    # Argmax per row: request 0 -> rows 3, 1, 4; request 1 -> row 5; request 2 -> 2, 0, 1.
    argmax = [3, 1, 4, 5, 2, 0, 1]
    logits = torch.nn.functional.one_hot(torch.tensor(argmax), VOCAB).float() * 5
    drafts = [[3, 2], [], [2, 0]]
    spec = SpecDecodeMetadata.make(drafts, torch.device("cpu"))
    params = [SamplingParams(temperature=0.0)] * len(argmax)
    out = RejectionSampler()(logits, _metadata(params), spec)
    # 3 accepted, 2 rejected for 1; nothing to verify, the argmax; all accepted, then the bonus.
    assert out.output_token_ids == [[3, 1], [5], [2, 0, 1]]


def _target() -> torch.Tensor:
    """Three rows of target logits (draft 0, draft 1, bonus), not near one-hot."""
    return torch.tensor(
        [
            [2.0, 0.5, 1.0, -1.0, 0.0, 1.5],
            [0.0, 1.0, 2.0, 0.5, -0.5, 0.0],
            [1.0, 1.0, 0.0, 0.0, 2.0, -1.0],
        ]
    )


def _sample_many(
    params: SamplingParams, drafts: list[list[int]], draft_probs: torch.Tensor | None = None
) -> list[list[int]]:
    logits = _target().repeat(len(drafts), 1)
    spec = SpecDecodeMetadata.make(drafts, torch.device("cpu"))
    metadata = _metadata([params] * logits.shape[0])
    return RejectionSampler()(logits, metadata, spec, draft_probs).output_token_ids


def _check_matches_target(out: list[list[int]], target: torch.Tensor, drafts) -> None:
    first = torch.tensor([o[0] for o in out])
    assert _tv(first, target[0]) < _tv_bound(N)
    # The second token is the target's next token given the first was the draft.
    second = torch.tensor([o[1] for o, d in zip(out, drafts, strict=True) if o[0] == d[0]])
    assert len(second) > N // 20 and _tv(second, target[1]) < _tv_bound(len(second))
    third = torch.tensor([o[2] for o, d in zip(out, drafts, strict=True) if o[:2] == d])
    assert len(third) > N // 100 and _tv(third, target[2]) < _tv_bound(len(third))


def test_one_hot_drafts_unlike_the_target_leave_the_target_distribution() -> None:
    torch.manual_seed(0)
    # Drafts that are not the target's favourites: mostly rejected and resampled.
    drafts = [[5, 1]] * N
    out = _sample_many(SamplingParams(temperature=1.0), drafts)
    target = _target().softmax(-1)
    assert target[0, 5] < target[0, 0] and target[1, 1] < target[1, 2]
    _check_matches_target(out, target, drafts)
    # And the drafts were accepted at the target's rate, p(d).
    accepted = sum(o[0] == 5 and len(o) > 1 for o in out) / N
    assert abs(accepted - target[0, 5].item()) < 0.01


def test_drafts_from_a_draft_distribution_leave_the_target_distribution() -> None:
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    # A draft distribution unlike the target: mass on tokens the target finds unlikely.
    q = torch.tensor([[0.02, 0.05, 0.03, 0.6, 0.2, 0.1], [0.3, 0.02, 0.03, 0.05, 0.5, 0.1]])
    drafts_t = torch.stack([torch.multinomial(q[j], N, True, generator=gen) for j in range(2)], 1)
    drafts = drafts_t.tolist()
    draft_probs = q.repeat(N, 1)  # [N * 2, vocab], the rows of each request's drafts
    out = _sample_many(SamplingParams(temperature=1.0), drafts, draft_probs)
    _check_matches_target(out, _target().softmax(-1), drafts)


def test_temperature_and_top_k_shape_the_target_distribution() -> None:
    torch.manual_seed(2)
    drafts = [[5, 1]] * N
    out = _sample_many(SamplingParams(temperature=0.5, top_k=3), drafts)
    scaled = _target() / 0.5
    kth = scaled.topk(3, dim=-1).values[:, -1:]
    target = scaled.masked_fill(scaled < kth, float("-inf")).softmax(-1)
    _check_matches_target(out, target, drafts)
    assert all(target[0, o[0]] > 0 for o in out)  # nothing outside the top 3


def test_seeded_requests_reproduce_their_tokens() -> None:
    def run(seed: int) -> list[list[int]]:
        drafts = [[3, 4]] * 8
        logits = _target().repeat(len(drafts), 1)
        rows = logits.shape[0]
        # Each request's three rows share its generator.
        gens = [torch.Generator().manual_seed(seed + r) for r in range(len(drafts))]
        generators = {row: gens[row // 3] for row in range(rows)}
        metadata = _metadata([SamplingParams(temperature=1.0)] * rows, generators)
        spec = SpecDecodeMetadata.make(drafts, torch.device("cpu"))
        return RejectionSampler()(logits, metadata, spec).output_token_ids

    torch.manual_seed(3)
    first = run(100)
    torch.manual_seed(4)  # the global RNG does not matter to seeded requests
    assert run(100) == first
    assert any(run(seed) != first for seed in (200, 300, 400))
