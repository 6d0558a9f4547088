"""`DraftModelProposer`: a smaller model with the target's vocabulary proposes k tokens.

The draft runs in the target's worker, with its own KV cache laid out in the target's blocks
(one block table serves both; the scheduler allocates k lookahead slots per request for the
draft's own proposals). Each engine step, after the target has verified:

1. one forward over what the target computed this step, with the rejected drafts replaced by
   the token the target emitted, so the draft's KV holds exactly the accepted context, and
   its logits at each sampling row's last token give draft token 1;
2. k - 1 one-token forwards, each feeding back the previous draft token.

Drafts are the draft model's argmax: its distribution q is one-hot, so the rejection sampler
verifies them as it does n-gram drafts and the outputs follow the target exactly.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import nn

from vllm_hydra.attention.backends.abstract import AttentionMetadata
from vllm_hydra.attention.selector import get_attn_backend, get_attn_metadata_builder
from vllm_hydra.config.compilation import CompilationConfig
from vllm_hydra.config.memory_plan import kv_heads_per_rank
from vllm_hydra.config.speculative import SpeculativeConfig
from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.model_executor.model_loader import get_model
from vllm_hydra.worker.input_batch import InputBatch
from vllm_hydra.worker.kv_cache_alloc import allocate_kv_cache


def draft_vllm_config(config: VllmConfig) -> VllmConfig:
    """The target's config with the draft's model, dtype and length, run eagerly."""
    spec = config.speculative
    assert spec.model is not None and config.draft_model_arch is not None
    model = replace(
        config.model,
        name=f"{config.model.name}-draft",
        path=spec.model,
        dtype=spec.dtype,
        max_model_len=spec.max_model_len,
        quantization=None,
        hf_overrides={},
    )
    return replace(
        config,
        model=model,
        model_arch=config.draft_model_arch,
        model_dir=config.draft_model_dir,
        compilation=CompilationConfig(),
        speculative=SpeculativeConfig(),
    )


class DraftModelProposer:
    def __init__(self, vllm_config: VllmConfig, device: torch.device) -> None:
        self.config = draft_vllm_config(vllm_config)
        self.device = device
        self.k = vllm_config.speculative.num_speculative_tokens
        self.max_model_len = self.config.model.max_model_len or 0
        self.block_size = vllm_config.cache.block_size
        self.kv_cache_dtype = getattr(torch, vllm_config.cache.cache_dtype.value)
        self.attn_backend = get_attn_backend(self.config.attention.backend.value)
        self.attn_metadata_builder = get_attn_metadata_builder(self.config, device)
        self.model: nn.Module | None = None
        self.kv_caches: list[torch.Tensor] = []

    def load_model(self) -> None:
        self.model = get_model(self.config)

    # ---- KV cache: the target's blocks, the draft's layers ----

    def _kv_cache_shape(self, num_blocks: int) -> tuple[int, ...]:
        arch = self.config.arch
        heads = kv_heads_per_rank(self.config)
        return self.attn_backend.get_kv_cache_shape(
            num_blocks, self.block_size, heads, arch.head_dim
        )

    def kv_cache_bytes_per_block(self) -> int:
        return (
            int(np.prod(self._kv_cache_shape(1)))
            * self.kv_cache_dtype.itemsize
            * (self.config.arch.num_hidden_layers)
        )

    def initialize_kv_cache(self, num_blocks: int) -> None:
        shape = self._kv_cache_shape(num_blocks)
        self.kv_caches = [
            allocate_kv_cache(shape, self.kv_cache_dtype, self.device)
            for _ in range(self.config.arch.num_hidden_layers)
        ]

    # ---- propose ----

    @torch.inference_mode()
    def propose(
        self,
        batch: InputBatch,
        starts: np.ndarray,
        query_lens: np.ndarray,
        sampled: list[list[int]],
    ) -> list[list[int]]:
        """Drafts for each row that sampled; `starts` and `query_lens` are this step's
        (num_computed_tokens before it, and tokens the target computed, drafts included)."""
        n = batch.num_reqs
        sampling = np.array([bool(s) for s in sampled])
        # Sampling rows: from where the step started to their new last token (accepted
        # drafts and the emitted token); the others: the prefill chunk the target ran.
        ends = np.where(sampling, batch.num_tokens[:n], starts + query_lens)
        first = self._first_forward(batch, starts, ends)
        sampling_rows = np.flatnonzero(sampling).tolist()
        drafts = {r: [first[r]] for r in sampling_rows}
        # Rows whose drafts would pass the draft's max_model_len propose nothing.
        rows = [r for r in sampling_rows if ends[r] + self.k <= self.max_model_len]
        for j in range(1, self.k):
            if not rows:
                break
            ids = [[drafts[r][-1]] for r in rows]
            positions = [int(ends[r]) - 1 + j for r in rows]
            for r, token in zip(rows, self._forward(batch, rows, ids, positions), strict=True):
                drafts[r].append(token)
        result: list[list[int]] = [[] for _ in range(n)]
        for r in rows:
            result[r] = drafts[r]
        return result

    def _first_forward(self, batch: InputBatch, starts: np.ndarray, ends: np.ndarray) -> list[int]:
        """Every row's tokens [starts, ends): the draft's KV follows the target's."""
        rows = list(range(batch.num_reqs))
        ids = [batch.token_ids_cpu[r, starts[r] : ends[r]].tolist() for r in rows]
        return self._forward(batch, rows, ids, [int(starts[r]) for r in rows])

    def _forward(
        self, batch: InputBatch, rows: list[int], ids: list[list[int]], first_pos: list[int]
    ) -> list[int]:
        """Run the draft over `ids[i]` at positions first_pos[i].. of batch row rows[i]; the
        argmax after each row's last token. Slots past a row's blocks go to the null block."""
        assert self.model is not None
        query_lens = [len(x) for x in ids]
        seq_lens = [p + q for p, q in zip(first_pos, query_lens, strict=True)]
        blocks = []
        for r, s_len in zip(rows, seq_lens, strict=True):
            row_blocks = batch.block_table.row(r).tolist()
            needed = -(-s_len // self.block_size)
            blocks.append(row_blocks[:needed] + [0] * max(needed - len(row_blocks), 0))
        common = AttentionMetadata.build(query_lens, seq_lens, blocks, self.block_size, self.device)
        meta = self.attn_metadata_builder.build(common)
        input_ids = torch.tensor([t for x in ids for t in x], dtype=torch.int64, device=self.device)
        positions = torch.tensor(
            [
                p
                for start, q in zip(first_pos, query_lens, strict=True)
                for p in range(start, start + q)
            ],
            dtype=torch.int64,
            device=self.device,
        )
        hidden = self.model(input_ids, positions, self.kv_caches, meta, None)
        last = torch.tensor(np.cumsum(query_lens) - 1, device=self.device)
        return self.model.compute_logits(hidden[last]).argmax(dim=-1).tolist()
