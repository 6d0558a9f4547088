"""`InputBatch`: the persistent batch of the model runner (vLLM's v1 InputBatch).

One row per scheduled request in preallocated buffers: token ids, lengths, block table, and the
sampling parameters as per-row tensors. Rows are written when a request joins and updated in
place from each step's differences; a request that leaves frees its row, and `condense` moves
the last rows into the holes so rows 0..num_reqs-1 are the batch. The `SamplingMetadata` is
rebuilt only when the rows change; each step adds only what moves with every token (penalty
token ids, the min-tokens mask).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from vllm_hydra.sample.metadata import (
    SamplingMetadata,
    batch_max_num_logprobs,
    build_logit_bias,
    build_min_tokens_mask,
)
from vllm_hydra.worker.block_table import BlockTable
from vllm_hydra.worker.cpu_gpu_buffer import CpuGpuBuffer
from vllm_hydra.worker.request_state import CachedRequestState

# Per-row sampling parameters: buffer name -> (SamplingParams field, dtype).
SAMPLING_ROWS = {
    "temperature": ("temperature", torch.float32),
    "top_p": ("top_p", torch.float32),
    "top_k": ("top_k", torch.int64),
    "min_p": ("min_p", torch.float32),
    "frequency_penalties": ("frequency_penalty", torch.float32),
    "presence_penalties": ("presence_penalty", torch.float32),
    "repetition_penalties": ("repetition_penalty", torch.float32),
}


class InputBatch:
    def __init__(
        self,
        max_num_reqs: int,
        max_model_len: int,
        block_size: int,
        vocab_size: int,
        device: torch.device,
    ) -> None:
        self.max_num_reqs = max_num_reqs
        self.vocab_size = vocab_size
        self.device = device
        # Row -> request id; None marks a row freed since the last condense.
        self.req_ids: list[str | None] = []
        self.req_id_to_index: dict[str, int] = {}
        self.token_ids_cpu = np.zeros((max_num_reqs, max_model_len), dtype=np.int32)
        self.num_tokens = np.zeros(max_num_reqs, dtype=np.int32)  # prompt + outputs
        self.num_prompt_tokens = np.zeros(max_num_reqs, dtype=np.int32)
        self.num_computed_tokens_cpu = np.zeros(max_num_reqs, dtype=np.int32)
        self.block_table = BlockTable(
            max_num_reqs, -(-max_model_len // block_size), block_size, device
        )
        self.sampling = {
            name: CpuGpuBuffer(max_num_reqs, dtype=dtype, device=device)
            for name, (_, dtype) in SAMPLING_ROWS.items()
        }
        self.requests: list[CachedRequestState | None] = [None] * max_num_reqs
        # Row -> the request's own RNG (seeded requests).
        self.generators: dict[int, torch.Generator] = {}
        # Each row's adapter id (lora_int_id), 0 for none; the LoRA manager maps the ids to
        # device slots and the rows to this step's tokens.
        self.request_lora_mapping = np.zeros(max_num_reqs, dtype=np.int32)
        # Issue 16 (structured outputs): each row's allowed-token bitmask for this step,
        # [num_reqs, ceil(vocab / 32)] int32, applied to the logits right before sampling;
        # None when no row has a grammar.
        self.grammar_bitmask: torch.Tensor | None = None
        # Issue 19 (speculative decoding): each row's draft token ids to verify this step.
        self.spec_token_ids: list[list[int]] = [[] for _ in range(max_num_reqs)]
        self._sampling_metadata: SamplingMetadata | None = None

    @property
    def num_reqs(self) -> int:
        return len(self.req_id_to_index)

    # ---- rows ----

    def add_request(self, state: CachedRequestState) -> int:
        """Write the request into the first free row (or a new one at the end); its row."""
        row = self.req_ids.index(None) if None in self.req_ids else len(self.req_ids)
        if row == len(self.req_ids):
            self.req_ids.append(None)
        self.req_ids[row] = state.req_id
        self.req_id_to_index[state.req_id] = row
        self.requests[row] = state
        num_prompt = state.num_prompt_tokens
        self.num_prompt_tokens[row] = num_prompt
        self.num_tokens[row] = state.num_tokens
        self.token_ids_cpu[row, :num_prompt] = state.prompt_token_ids
        self.token_ids_cpu[row, num_prompt : state.num_tokens] = state.output_token_ids
        self.num_computed_tokens_cpu[row] = state.num_computed_tokens
        self.block_table.add_row(state.block_ids, row)
        self._write_sampling_row(state, row)
        self.request_lora_mapping[row] = state.lora_request.lora_int_id if state.lora_request else 0
        self._sampling_metadata = None
        return row

    def _write_sampling_row(self, state: CachedRequestState, row: int) -> None:
        params = state.sampling_params
        for name, (field, _) in SAMPLING_ROWS.items():
            self.sampling[name].np[row] = getattr(params, field)
        # top_k 0 or -1 is off; a k that covers the vocab is off too.
        if not 0 < params.top_k < self.vocab_size:
            self.sampling["top_k"].np[row] = self.vocab_size
        if params.is_greedy:  # greedy rows are argmaxed; 0.0 marks them
            self.sampling["temperature"].np[row] = 0.0
        if state.generator is not None:
            self.generators[row] = state.generator

    def remove_request(self, req_id: str) -> int | None:
        """Free the request's row (None if it has none); `condense` fills the hole."""
        row = self.req_id_to_index.pop(req_id, None)
        if row is None:
            return None
        self.req_ids[row] = None
        self.requests[row] = None
        self.generators.pop(row, None)
        self.request_lora_mapping[row] = 0
        self.spec_token_ids[row] = []
        self._sampling_metadata = None
        return row

    def condense(self) -> None:
        """Move the last rows into the holes, so rows 0..num_reqs-1 hold the batch."""
        while self.req_ids and self.req_ids[-1] is None:
            self.req_ids.pop()
        while None in self.req_ids:
            hole = self.req_ids.index(None)
            self._move_row(len(self.req_ids) - 1, hole)
            self.req_ids.pop()
            while self.req_ids and self.req_ids[-1] is None:
                self.req_ids.pop()

    def _move_row(self, src: int, tgt: int) -> None:
        req_id = self.req_ids[src]
        assert req_id is not None
        self.req_ids[tgt], self.req_ids[src] = req_id, None
        self.req_id_to_index[req_id] = tgt
        self.requests[tgt], self.requests[src] = self.requests[src], None
        n = self.num_tokens[src]
        self.token_ids_cpu[tgt, :n] = self.token_ids_cpu[src, :n]
        for array in (self.num_tokens, self.num_prompt_tokens, self.num_computed_tokens_cpu):
            array[tgt] = array[src]
        self.block_table.move_row(src, tgt)
        for buffer in self.sampling.values():
            buffer.np[tgt] = buffer.np[src]
        if src in self.generators:
            self.generators[tgt] = self.generators.pop(src)
        self.request_lora_mapping[tgt] = self.request_lora_mapping[src]
        self.spec_token_ids[tgt], self.spec_token_ids[src] = self.spec_token_ids[src], []
        self._sampling_metadata = None

    # ---- updates in place ----

    def set_token_ids(self, row: int, start: int, token_ids: list[int]) -> None:
        """Tokens [start, start + len) of the row, as the scheduler sends them (pp stages
        that do not sample learn their requests' outputs this way)."""
        end = start + len(token_ids)
        self.token_ids_cpu[row, start:end] = token_ids
        self.num_tokens[row] = max(self.num_tokens[row], end)

    def append_sampled(self, rows: np.ndarray, token_ids: np.ndarray) -> None:
        """One sampled token at the end of each given row (vectorised)."""
        self.token_ids_cpu[rows, self.num_tokens[rows]] = token_ids
        self.num_tokens[rows] += 1

    def append_token_ids(self, row: int, token_ids: list[int]) -> None:
        """Several tokens at the end of a row (the accepted drafts and one more)."""
        n = int(self.num_tokens[row])
        self.token_ids_cpu[row, n : n + len(token_ids)] = token_ids
        self.num_tokens[row] = n + len(token_ids)

    def set_spec_token_ids(self, row: int, token_ids: list[int]) -> None:
        """The row's drafts for this step, written after its tokens (the step's inputs read
        them there; num_tokens does not count them)."""
        self.spec_token_ids[row] = token_ids
        n = int(self.num_tokens[row])
        self.token_ids_cpu[row, n : n + len(token_ids)] = token_ids

    # ---- sampling ----

    def sampling_metadata(self) -> SamplingMetadata:
        """This step's metadata: the rows' parameters (rebuilt only when rows changed) plus
        what changes with every token."""
        if self._sampling_metadata is None:
            self._sampling_metadata = self._make_sampling_metadata()
        metadata = self._sampling_metadata
        params = self._params()
        if not metadata.no_penalties:
            metadata = replace(metadata, **self._penalty_token_ids(params))
        if any(p.min_tokens > 0 for p in params):
            num_outputs = (self.num_tokens - self.num_prompt_tokens)[: self.num_reqs].tolist()
            eos = [s.eos_token_id for s in self._states()]
            mask = build_min_tokens_mask(params, num_outputs, eos, self.vocab_size, self.device)
            metadata = replace(metadata, min_tokens_mask=mask)
        return metadata

    def _states(self) -> list[CachedRequestState]:
        states = self.requests[: self.num_reqs]
        assert len(self.req_ids) == self.num_reqs, "condense() runs before the step's metadata"
        return states  # type: ignore[return-value]

    def _params(self) -> list:
        return [s.sampling_params for s in self._states()]

    def _make_sampling_metadata(self) -> SamplingMetadata:
        n = self.num_reqs
        params = self._params()
        all_greedy = all(p.is_greedy for p in params)
        rows = {name: buffer.copy_to_gpu(n) for name, buffer in self.sampling.items()}
        no_penalties = not any(p.uses_penalties for p in params)
        return SamplingMetadata(
            temperature=None if all_greedy else rows["temperature"],
            all_greedy=all_greedy,
            all_random=n > 0 and not any(p.is_greedy for p in params),
            top_p=rows["top_p"] if any(p.top_p < 1.0 for p in params) else None,
            top_k=rows["top_k"]
            if (self.sampling["top_k"].np[:n] < self.vocab_size).any()
            else None,
            min_p=rows["min_p"] if any(p.min_p > 0.0 for p in params) else None,
            generators=dict(self.generators),
            max_num_logprobs=batch_max_num_logprobs(params, self.vocab_size),
            no_penalties=no_penalties,
            prompt_token_ids=None,
            output_token_ids=None,
            presence_penalties=None if no_penalties else rows["presence_penalties"],
            frequency_penalties=None if no_penalties else rows["frequency_penalties"],
            repetition_penalties=None if no_penalties else rows["repetition_penalties"],
            logit_bias=build_logit_bias(params, self.device),
            min_tokens_mask=None,
        )

    def _penalty_token_ids(self, params: list) -> dict[str, torch.Tensor | None]:
        """Prompt and output token ids per row, padded with vocab_size, gathered from the
        token buffer with numpy (the prompt only when a row uses the repetition penalty)."""
        n = self.num_reqs
        num_prompt, num_tokens = self.num_prompt_tokens[:n], self.num_tokens[:n]
        prompt = None
        if any(p.repetition_penalty != 1.0 for p in params):
            prompt = self.padded_token_ids(np.zeros(n, np.int32), num_prompt)
        return {
            "prompt_token_ids": prompt,
            "output_token_ids": self.padded_token_ids(num_prompt, num_tokens),
        }

    def padded_token_ids(
        self, starts: np.ndarray, ends: np.ndarray, rows: np.ndarray | None = None
    ) -> torch.Tensor:
        """[n, max(ends - starts)] int64: row r's tokens [starts[r], ends[r]), then vocab_size
        (`rows`: which batch row each entry reads; default 0..n-1)."""
        n = len(starts)
        rows = np.arange(n) if rows is None else rows
        width = int((ends - starts).max(initial=0))
        cols = np.arange(width)
        index = np.minimum(starts[:, None] + cols, self.token_ids_cpu.shape[1] - 1)
        tokens = np.take_along_axis(self.token_ids_cpu[rows], index, axis=1)
        padded = np.where(cols < (ends - starts)[:, None], tokens, self.vocab_size)
        return torch.from_numpy(padded.astype(np.int64)).to(self.device)
