"""`compilation.mode=cudagraph`: decode steps captured as CUDA graphs and replayed.

At start-up the model forward of a decode-only batch is captured once per size in
`compilation.cudagraph_capture_sizes`, over static input buffers (token ids, positions, slot
mapping, query start locations, sequence lengths, block table). A decode step of n requests
copies its inputs into those buffers and replays the graph of the smallest captured size >= n;
the padding requests have no query tokens and no cache slot (slot -1), so the kernels skip them.
Batches with a prefill, or larger than the largest size, run eagerly.

Only the Triton attention backend can be captured: nothing it launches depends on host-side
lengths (config validation refuses cudagraph with the torch backend).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from vllm_hydra.attention.backends.abstract import AttentionMetadata

logger = logging.getLogger(__name__)

Replay = Callable[[], None]


class CUDAGraphRunner:
    """Captured decode graphs over static buffers, and the padded replay of a decode step."""

    def __init__(
        self,
        model: nn.Module,
        kv_caches: list[torch.Tensor],
        capture_sizes: list[int],
        max_model_len: int,
        block_size: int,
        device: torch.device,
    ) -> None:
        self.model = model
        self.kv_caches = kv_caches
        self.sizes = sorted(set(capture_sizes))
        self.max_model_len = max_model_len
        largest = self.sizes[-1]
        max_blocks = -(-max_model_len // block_size)
        self.input_ids = torch.zeros(largest, dtype=torch.int64, device=device)
        self.positions = torch.zeros(largest, dtype=torch.int64, device=device)
        self.slot_mapping = torch.full((largest,), -1, dtype=torch.int64, device=device)
        self.query_start_loc = torch.arange(largest + 1, dtype=torch.int32, device=device)
        self.seq_lens = torch.ones(largest, dtype=torch.int32, device=device)
        self.block_table = torch.zeros(largest, max_blocks, dtype=torch.int32, device=device)
        self.outputs: dict[int, torch.Tensor] = {}
        self.replays: dict[int, Replay] = {}
        self._pool: tuple[int, int] | None = None

    def capture(self) -> None:
        """Capture every size, largest first, so the smaller graphs reuse its memory pool."""
        for size in reversed(self.sizes):
            self.replays[size] = self._record(size)
        logger.info("CUDA graphs captured for decode batch sizes %s", self.sizes)

    def padded_size(self, meta: AttentionMetadata) -> int | None:
        """The captured size that runs this batch, or None (prefill in it, or too large)."""
        if meta.max_query_len != 1:
            return None
        return next((s for s in self.sizes if s >= meta.num_reqs), None)

    def run(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """The hidden states of a decode batch that `padded_size` accepted."""
        size = self.padded_size(meta)
        assert size is not None, "run() only takes batches padded_size() accepts"
        self._fill_buffers(input_ids, positions, meta, size)
        self.replays[size]()
        return self.outputs[size][: meta.num_reqs]

    def _fill_buffers(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        meta: AttentionMetadata,
        size: int,
    ) -> None:
        n = meta.num_reqs
        self.input_ids[:n].copy_(input_ids, non_blocking=True)
        self.positions[:n].copy_(positions, non_blocking=True)
        self.slot_mapping[:n].copy_(meta.slot_mapping, non_blocking=True)
        self.slot_mapping[n:size].fill_(-1)  # padding writes no cache slot...
        self.query_start_loc[: n + 1].copy_(meta.query_start_loc, non_blocking=True)
        self.query_start_loc[n + 1 : size + 1].fill_(n)  # ...and has no query tokens
        self.seq_lens[:n].copy_(meta.seq_lens, non_blocking=True)
        self.seq_lens[n:size].fill_(0)
        width = meta.block_table.shape[1]
        self.block_table[:n, :width].copy_(meta.block_table, non_blocking=True)

    def _metadata(self, size: int) -> AttentionMetadata:
        """Metadata over the static buffers. max_seq_len is the bound the kernels size their
        launch by (the split-KV segment count); the real lengths are read on the device."""
        return AttentionMetadata(
            num_actual_tokens=size,
            query_start_loc=self.query_start_loc[: size + 1],
            seq_lens=self.seq_lens[:size],
            block_table=self.block_table[:size],
            slot_mapping=self.slot_mapping[:size],
            max_query_len=1,
            max_seq_len=self.max_model_len,
            query_lens_cpu=[1] * size,
            seq_lens_cpu=[self.max_model_len] * size,
        )

    def _forward(self, size: int) -> torch.Tensor:
        return self.model(
            self.input_ids[:size], self.positions[:size], self.kv_caches, self._metadata(size)
        )

    def _record(self, size: int) -> Replay:
        """Warm up (compiles the Triton kernels), then capture one decode step of `size`."""
        self._forward(size)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            self.outputs[size] = self._forward(size)
        self._pool = graph.pool()
        return graph.replay
