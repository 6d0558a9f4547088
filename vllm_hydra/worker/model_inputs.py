"""Flattening one scheduled step into model inputs: token ids, positions, slot mapping, block
tables and query/sequence lengths for every request, prefills and decodes alike."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vllm_hydra.attention.backends.abstract import AttentionMetadata
from vllm_hydra.worker.request_state import CachedRequestState


@dataclass
class ModelInputs:
    req_ids: list[str]  # scheduled requests, in batch order
    starts: list[int]  # each request's num_computed_tokens before this step
    query_lens: list[int]  # tokens computed this step per request
    input_ids: torch.Tensor  # [num_tokens]
    positions: torch.Tensor  # [num_tokens]
    attn_metadata: AttentionMetadata
    # Requests whose last token is computed this step sample their next token.
    sample_req_ids: list[str]
    logits_indices: torch.Tensor  # [num_sampling] row of each sampling request's last token


def prepare_inputs(
    states: list[CachedRequestState],
    query_lens: list[int],
    block_size: int,
    device: torch.device,
) -> ModelInputs:
    """Build the flat batch: request i computes tokens [start_i, start_i + query_len_i)."""
    starts = [s.num_computed_tokens for s in states]
    token_ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    for state, start, n in zip(states, starts, query_lens, strict=True):
        token_ids += state.token_ids(start, start + n)
        positions += range(start, start + n)
        slots += _slots(state.block_ids, start, n, block_size)
    seq_lens = [start + n for start, n in zip(starts, query_lens, strict=True)]
    sampling = [i for i, s in enumerate(states) if seq_lens[i] == s.num_tokens]
    cu_query = _cumsum(query_lens)
    attn_metadata = AttentionMetadata(
        num_actual_tokens=len(token_ids),
        query_start_loc=torch.tensor(cu_query, dtype=torch.int32, device=device),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=device),
        block_table=_block_table(states, device),
        slot_mapping=torch.tensor(slots, dtype=torch.int64, device=device),
        max_query_len=max(query_lens),
        max_seq_len=max(seq_lens),
        query_lens_cpu=list(query_lens),
        seq_lens_cpu=seq_lens,
    )
    return ModelInputs(
        req_ids=[s.req_id for s in states],
        starts=starts,
        query_lens=list(query_lens),
        input_ids=torch.tensor(token_ids, dtype=torch.int64, device=device),
        positions=torch.tensor(positions, dtype=torch.int64, device=device),
        attn_metadata=attn_metadata,
        sample_req_ids=[states[i].req_id for i in sampling],
        logits_indices=torch.tensor(
            [cu_query[i + 1] - 1 for i in sampling], dtype=torch.int64, device=device
        ),
    )


def _slots(block_ids: list[int], start: int, n: int, block_size: int) -> list[int]:
    return [
        block_ids[p // block_size] * block_size + p % block_size for p in range(start, start + n)
    ]


def _cumsum(values: list[int]) -> list[int]:
    out = [0]
    for v in values:
        out.append(out[-1] + v)
    return out


def _block_table(states: list[CachedRequestState], device: torch.device) -> torch.Tensor:
    width = max(len(s.block_ids) for s in states)
    rows = [s.block_ids + [0] * (width - len(s.block_ids)) for s in states]
    return torch.tensor(rows, dtype=torch.int32, device=device)
