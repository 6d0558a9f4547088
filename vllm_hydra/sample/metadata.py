"""`SamplingMetadata`: one step's sampling parameters as batched tensors (vLLM's v1/sample).

Row i belongs to request i. A tensor is built only when some row uses its feature, so a batch of
plain requests pays for nothing it does not ask for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from vllm_hydra.sampling_params import SamplingParams

# Per row: one EOS id, several (models whose generation config lists more than one), or none.
EosTokenIds = int | Sequence[int] | None


class SparseLogits(NamedTuple):
    """A value for a few (row, token id) positions of the [num_reqs, vocab] logits."""

    rows: torch.Tensor  # [m] int64
    token_ids: torch.Tensor  # [m] int64
    values: torch.Tensor  # [m] float32


@dataclass
class SamplingMetadata:
    # [num_reqs] float32, 0.0 on greedy rows; None when every row is greedy.
    temperature: torch.Tensor | None
    all_greedy: bool
    all_random: bool
    top_p: torch.Tensor | None  # [num_reqs] float32; None when no row sets top_p < 1
    top_k: torch.Tensor | None  # [num_reqs] int64, vocab_size where off; None when no row uses it
    min_p: torch.Tensor | None  # [num_reqs] float32; None when no row sets min_p > 0
    # Row index -> the request's own generator (seeded requests); other rows use the global RNG.
    generators: dict[int, torch.Generator]
    # Top-N columns the batch needs (the largest request's, -1 resolved to vocab_size), or None.
    max_num_logprobs: int | None
    no_penalties: bool
    # [num_reqs, max_len] int64, padded with vocab_size; None unless a penalty needs them.
    prompt_token_ids: torch.Tensor | None
    output_token_ids: torch.Tensor | None
    presence_penalties: torch.Tensor | None  # [num_reqs] float32
    frequency_penalties: torch.Tensor | None
    repetition_penalties: torch.Tensor | None
    logit_bias: SparseLogits | None  # added to the logits
    # Stop ids and EOS of rows that have not reached min_tokens; set to -inf.
    min_tokens_mask: SparseLogits | None

    @classmethod
    def build(
        cls,
        params: Sequence[SamplingParams],
        prompt_token_ids: Sequence[Sequence[int]],
        output_token_ids: Sequence[Sequence[int]],
        generators: dict[int, torch.Generator],
        vocab_size: int,
        device: torch.device | str,
        eos_token_ids: Sequence[EosTokenIds] | None = None,
    ) -> SamplingMetadata:
        """Batch `params` (row i = request i). `output_token_ids` are the tokens each request
        has generated so far; `eos_token_ids` (one entry per row) are masked with the stop ids
        until min_tokens is reached, except for rows with ignore_eos."""
        device = torch.device(device)
        all_greedy = all(p.is_greedy for p in params)
        penalties = _penalty_fields(params, prompt_token_ids, output_token_ids, vocab_size, device)
        return cls(
            temperature=None if all_greedy else _floats([p.temperature for p in params], device),
            all_greedy=all_greedy,
            all_random=not any(p.is_greedy for p in params) and len(params) > 0,
            top_p=_floats_if([p.top_p for p in params], lambda v: v < 1.0, device),
            top_k=_top_k(params, vocab_size, device),
            min_p=_floats_if([p.min_p for p in params], lambda v: v > 0.0, device),
            generators=generators,
            max_num_logprobs=batch_max_num_logprobs(params, vocab_size),
            **penalties,
            logit_bias=build_logit_bias(params, device),
            min_tokens_mask=build_min_tokens_mask(
                params, [len(o) for o in output_token_ids], eos_token_ids, vocab_size, device
            ),
        )


def _floats(values: list[float], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device)


def _floats_if(
    values: list[float], used: Callable[[float], bool], device: torch.device
) -> torch.Tensor | None:
    return _floats(values, device) if any(used(v) for v in values) else None


def _top_k(
    params: Sequence[SamplingParams], vocab_size: int, device: torch.device
) -> torch.Tensor | None:
    # top_k 0 or -1 is off; a k that covers the vocab is off too.
    ks = [p.top_k if 0 < p.top_k < vocab_size else vocab_size for p in params]
    if all(k == vocab_size for k in ks):
        return None
    return torch.tensor(ks, dtype=torch.int64, device=device)


def batch_max_num_logprobs(params: Sequence[SamplingParams], vocab_size: int) -> int | None:
    asked = [p.logprobs for p in params if p.logprobs is not None]
    asked = [vocab_size if n == -1 else n for n in asked]
    return min(max(asked), vocab_size) if asked else None


def _pad_token_ids(
    token_ids: Sequence[Sequence[int]], pad: int, device: torch.device
) -> torch.Tensor:
    width = max((len(t) for t in token_ids), default=0)
    rows = [[*t, *([pad] * (width - len(t)))] for t in token_ids]
    return torch.tensor(rows, dtype=torch.int64, device=device).reshape(len(rows), width)


def _penalty_fields(
    params: Sequence[SamplingParams],
    prompt_token_ids: Sequence[Sequence[int]],
    output_token_ids: Sequence[Sequence[int]],
    vocab_size: int,
    device: torch.device,
) -> dict[str, Any]:
    """The penalty tensors, or Nones when no row uses a penalty."""
    no_penalties = not any(p.uses_penalties for p in params)
    if no_penalties:
        names = ("prompt_token_ids", "output_token_ids", "presence_penalties")
        names += ("frequency_penalties", "repetition_penalties")
        return {"no_penalties": True, **dict.fromkeys(names)}
    # The prompt only feeds the repetition penalty; skip copying it when no row uses one.
    uses_repetition = any(p.repetition_penalty != 1.0 for p in params)
    return {
        "no_penalties": False,
        "prompt_token_ids": (
            _pad_token_ids(prompt_token_ids, vocab_size, device) if uses_repetition else None
        ),
        "output_token_ids": _pad_token_ids(output_token_ids, vocab_size, device),
        "presence_penalties": _floats([p.presence_penalty for p in params], device),
        "frequency_penalties": _floats([p.frequency_penalty for p in params], device),
        "repetition_penalties": _floats([p.repetition_penalty for p in params], device),
    }


def _sparse(entries: list[tuple[int, int, float]], device: torch.device) -> SparseLogits | None:
    if not entries:
        return None
    rows, token_ids, values = zip(*entries, strict=True)
    return SparseLogits(
        rows=torch.tensor(rows, dtype=torch.int64, device=device),
        token_ids=torch.tensor(token_ids, dtype=torch.int64, device=device),
        values=_floats(list(values), device),
    )


def build_logit_bias(params: Sequence[SamplingParams], device: torch.device) -> SparseLogits | None:
    entries = [
        (row, int(token_id), float(bias))
        for row, p in enumerate(params)
        for token_id, bias in (p.logit_bias or {}).items()
    ]
    return _sparse(entries, device)


def _eos_list(eos: EosTokenIds) -> list[int]:
    if eos is None:
        return []
    return [eos] if isinstance(eos, int) else list(eos)


def build_min_tokens_mask(
    params: Sequence[SamplingParams],
    num_output_tokens: Sequence[int],
    eos_token_ids: Sequence[EosTokenIds] | None,
    vocab_size: int,
    device: torch.device,
) -> SparseLogits | None:
    eos_rows = eos_token_ids if eos_token_ids is not None else [None] * len(params)
    entries = []
    for row, (p, num_output, eos) in enumerate(
        zip(params, num_output_tokens, eos_rows, strict=True)
    ):
        if num_output >= p.min_tokens:
            continue
        banned = set(p.stop_token_ids) | (set() if p.ignore_eos else set(_eos_list(eos)))
        # An EOS id past the logits' vocab can never be sampled, so there is nothing to mask.
        entries += [(row, t, float("-inf")) for t in sorted(banned) if 0 <= t < vocab_size]
    return _sparse(entries, device)
