"""The batch's `SamplingMetadata` spread over the rejection sampler's rows: request r's
parameters on each of its 1 + k rows, and on row j what moves with each token (penalties over
its outputs plus drafts 0..j-1, the min-tokens mask at num_outputs + j)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from vllm_hydra.sample.metadata import SamplingMetadata, SparseLogits, build_min_tokens_mask
from vllm_hydra.worker.input_batch import InputBatch


def expand_sampling_metadata(batch: InputBatch, num_draft_tokens: np.ndarray) -> SamplingMetadata:
    """One metadata row per logits row of the rejection sampler (the drafts are written in
    the batch's token rows, after each row's num_tokens)."""
    base = batch.sampling_metadata()
    counts = num_draft_tokens + 1
    owner = np.repeat(np.arange(len(counts)), counts)  # logits row -> batch row
    offset = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
    index = torch.from_numpy(owner).to(batch.device)

    def rows(tensor: torch.Tensor | None) -> torch.Tensor | None:
        return None if tensor is None else tensor[index]

    expanded = replace(
        base,
        temperature=rows(base.temperature),
        top_p=rows(base.top_p),
        top_k=rows(base.top_k),
        min_p=rows(base.min_p),
        generators={
            row: base.generators[int(r)]
            for row, r in enumerate(owner.tolist())
            if int(r) in base.generators
        },
        presence_penalties=rows(base.presence_penalties),
        frequency_penalties=rows(base.frequency_penalties),
        repetition_penalties=rows(base.repetition_penalties),
        prompt_token_ids=rows(base.prompt_token_ids),
        logit_bias=_expand_sparse(base.logit_bias, owner),
        min_tokens_mask=None,
    )
    if not base.no_penalties:
        num_prompt, num_tokens = batch.num_prompt_tokens[owner], batch.num_tokens[owner]
        expanded.output_token_ids = batch.padded_token_ids(num_prompt, num_tokens + offset, owner)
    if base.min_tokens_mask is not None:
        expanded.min_tokens_mask = _min_tokens_mask(batch, owner, offset)
    return expanded


def _expand_sparse(sparse: SparseLogits | None, owner: np.ndarray) -> SparseLogits | None:
    """Each (row, token, value) entry repeated on every logits row of its batch row."""
    if sparse is None:
        return None
    logits_rows = [np.flatnonzero(owner == r) for r in sparse.rows.tolist()]
    repeat = torch.tensor([len(x) for x in logits_rows], device=sparse.rows.device)
    return SparseLogits(
        rows=torch.from_numpy(np.concatenate(logits_rows)).to(sparse.rows.device),
        token_ids=sparse.token_ids.repeat_interleave(repeat),
        values=sparse.values.repeat_interleave(repeat),
    )


def _min_tokens_mask(batch: InputBatch, owner: np.ndarray, offset: np.ndarray) -> SparseLogits:
    states = [batch.requests[int(r)] for r in owner]
    params = [s.sampling_params for s in states]  # type: ignore[union-attr]
    num_outputs = (batch.num_tokens - batch.num_prompt_tokens)[owner] + offset
    eos = [s.eos_token_id for s in states]  # type: ignore[union-attr]
    mask = build_min_tokens_mask(params, num_outputs.tolist(), eos, batch.vocab_size, batch.device)
    assert mask is not None, "some row is below min_tokens"
    return mask
