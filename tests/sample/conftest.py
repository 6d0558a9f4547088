"""Fixtures for the sampler tests: build `SamplingMetadata` with defaults for what a test omits."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch

from vllm_hydra.sample.metadata import EosTokenIds, SamplingMetadata
from vllm_hydra.sampling_params import SamplingParams

MakeMetadata = Callable[..., SamplingMetadata]


@pytest.fixture
def make_metadata() -> MakeMetadata:
    """`make_metadata(params, vocab_size, prompts=None, outputs=None, seeds=None, eos=None,
    device="cpu")`; seeds maps a row to the seed of a fresh generator on `device`."""

    def make(
        params: Sequence[SamplingParams],
        vocab_size: int,
        prompts: Sequence[Sequence[int]] | None = None,
        outputs: Sequence[Sequence[int]] | None = None,
        seeds: dict[int, int] | None = None,
        eos: Sequence[EosTokenIds] | None = None,
        device: str = "cpu",
    ) -> SamplingMetadata:
        generators = {
            row: torch.Generator(device=device).manual_seed(seed)
            for row, seed in (seeds or {}).items()
        }
        return SamplingMetadata.build(
            list(params),
            prompts if prompts is not None else [[] for _ in params],
            outputs if outputs is not None else [[] for _ in params],
            generators,
            vocab_size,
            device,
            eos_token_ids=eos,
        )

    return make
