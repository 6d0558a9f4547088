"""`compilation.mode=cudagraph`: decode steps captured as CUDA graphs and replayed.

At start-up the model forward of a decode-only batch is captured once per size in
`compilation.cudagraph_capture_sizes`, over the model runner's persistent input buffers (token
ids, positions, slot mapping, query start locations, sequence lengths, and the input batch's
block table): every step writes its inputs there anyway, so a decode step of n requests only
pads rows n.. and replays the graph of the smallest captured size >= n. The padding requests
have no query tokens and no cache slot (slot -1), so the kernels skip them.
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
from vllm_hydra.worker.block_table import BlockTable
from vllm_hydra.worker.model_inputs import InputBuffers

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
        buffers: InputBuffers,
        block_table: BlockTable,
    ) -> None:
        self.model = model
        self.kv_caches = kv_caches
        self.sizes = sorted(set(capture_sizes))
        self.max_model_len = max_model_len
        # The device side of the runner's buffers: the graphs read them in place.
        self.input_ids = buffers.input_ids.gpu
        self.positions = buffers.positions.gpu
        self.slot_mapping = buffers.slot_mapping.gpu
        self.query_start_loc = buffers.query_start_loc.gpu
        self.seq_lens = buffers.seq_lens.gpu
        self.block_table = block_table.table.gpu
        self.outputs: dict[int, torch.Tensor] = {}
        self.replays: dict[int, Replay] = {}
        self._pool: tuple[int, int] | None = None

    def capture(self) -> None:
        """Capture every size, largest first, so the smaller graphs reuse its memory pool."""
        # A batch of one-token requests that write no cache slot, for the warm-up runs.
        largest = self.sizes[-1]
        self.query_start_loc[: largest + 1].copy_(torch.arange(largest + 1))
        self.seq_lens[:largest].fill_(1)
        self.slot_mapping[:largest].fill_(-1)
        for size in reversed(self.sizes):
            self.replays[size] = self._record(size)
        logger.info("CUDA graphs captured for decode batch sizes %s", self.sizes)

    def padded_size(self, meta: AttentionMetadata) -> int | None:
        """The captured size that runs this batch, or None (prefill in it, or too large)."""
        if meta.max_query_len != 1:
            return None
        return next((s for s in self.sizes if s >= meta.num_reqs), None)

    def run(self, meta: AttentionMetadata) -> torch.Tensor:
        """The hidden states of a decode batch that `padded_size` accepted, whose inputs the
        runner has written into the buffers' first rows."""
        size = self.padded_size(meta)
        assert size is not None, "run() only takes batches padded_size() accepts"
        self._pad_buffers(meta.num_reqs, size)
        self.replays[size]()
        return self.outputs[size][: meta.num_reqs]

    def _pad_buffers(self, n: int, size: int) -> None:
        self.slot_mapping[n:size].fill_(-1)  # padding writes no cache slot...
        self.query_start_loc[n + 1 : size + 1].fill_(n)  # ...and has no query tokens
        self.seq_lens[n:size].fill_(0)

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
