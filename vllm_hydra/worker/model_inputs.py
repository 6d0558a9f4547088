"""Flattening one scheduled step of the input batch into model inputs, vectorised with numpy:
token ids, positions, slot mapping and query/sequence lengths for every row, prefills and
decodes alike, written into persistent buffers (which CUDA graphs capture as their inputs)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vllm_hydra.attention.backends.abstract import AttentionMetadata
from vllm_hydra.worker.cpu_gpu_buffer import CpuGpuBuffer
from vllm_hydra.worker.input_batch import InputBatch


class InputBuffers:
    """The step's flat inputs, preallocated for the largest step (tokens and requests)."""

    def __init__(self, max_num_tokens: int, max_num_reqs: int, device: torch.device) -> None:
        self.input_ids = CpuGpuBuffer(max_num_tokens, dtype=torch.int64, device=device)
        self.positions = CpuGpuBuffer(max_num_tokens, dtype=torch.int64, device=device)
        self.slot_mapping = CpuGpuBuffer(max_num_tokens, dtype=torch.int64, device=device)
        self.query_start_loc = CpuGpuBuffer(max_num_reqs + 1, dtype=torch.int32, device=device)
        self.seq_lens = CpuGpuBuffer(max_num_reqs, dtype=torch.int32, device=device)
        self.arange = np.arange(max(max_num_tokens, max_num_reqs) + 1, dtype=np.int64)


@dataclass
class ModelInputs:
    num_reqs: int
    input_ids: torch.Tensor  # [num_tokens]
    positions: torch.Tensor  # [num_tokens]
    attn_metadata: AttentionMetadata
    starts: np.ndarray  # [num_reqs] each row's num_computed_tokens before this step
    query_lens: np.ndarray  # [num_reqs] tokens computed this step per row
    # [num_reqs] the flat row of each request's last token, whose logits are computed.
    logits_indices: torch.Tensor
    # [num_reqs] whether the row's last token is its last known one, so it samples the next
    # (False for a prefill chunk that is not the last).
    sample_mask: np.ndarray


def prepare_inputs(
    batch: InputBatch,
    num_scheduled: np.ndarray,
    buffers: InputBuffers,
    num_draft_tokens: np.ndarray | None = None,
) -> ModelInputs:
    """Row r computes tokens [num_computed_r, num_computed_r + num_scheduled[r]); the last
    `num_draft_tokens[r]` of them are drafts, written after the row's known tokens."""
    n = batch.num_reqs
    cu = np.cumsum(num_scheduled)
    total = int(cu[-1])
    # For each flat token: its row and its offset within the row's new tokens.
    req_indices = np.repeat(buffers.arange[:n], num_scheduled)
    offsets = buffers.arange[:total] - np.repeat(cu - num_scheduled, num_scheduled)
    starts = batch.num_computed_tokens_cpu[:n].copy()
    positions = buffers.positions.np[:total]
    np.add(starts[req_indices], offsets, out=positions)
    width = batch.token_ids_cpu.shape[1]
    buffers.input_ids.np[:total] = batch.token_ids_cpu.ravel()[req_indices * width + positions]
    batch.block_table.compute_slot_mapping(req_indices, positions, buffers.slot_mapping.np[:total])
    buffers.query_start_loc.np[0] = 0
    buffers.query_start_loc.np[1 : n + 1] = cu
    seq_lens = buffers.seq_lens.np[:n]
    np.add(starts, num_scheduled, out=seq_lens)
    attn_metadata = AttentionMetadata(
        num_actual_tokens=total,
        query_start_loc=buffers.query_start_loc.copy_to_gpu(n + 1),
        seq_lens=buffers.seq_lens.copy_to_gpu(n),
        block_table=batch.block_table.commit(n),
        slot_mapping=buffers.slot_mapping.copy_to_gpu(total),
        max_query_len=int(num_scheduled.max()),
        max_seq_len=int(seq_lens.max()),
        query_lens_cpu=num_scheduled.tolist(),
        seq_lens_cpu=seq_lens.tolist(),
    )
    return ModelInputs(
        num_reqs=n,
        input_ids=buffers.input_ids.copy_to_gpu(total),
        positions=buffers.positions.copy_to_gpu(total),
        attn_metadata=attn_metadata,
        starts=starts,
        query_lens=num_scheduled,
        logits_indices=torch.from_numpy(cu - 1).to(batch.device),
        sample_mask=seq_lens == _num_tokens_with_drafts(batch, num_draft_tokens),
    )


def _num_tokens_with_drafts(batch: InputBatch, num_draft_tokens: np.ndarray | None) -> np.ndarray:
    n = batch.num_reqs
    known = batch.num_tokens[:n]
    return known if num_draft_tokens is None else known + num_draft_tokens
