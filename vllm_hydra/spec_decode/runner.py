"""`SpecDecodeRunner`: the model runner's side of speculative decoding.

Each step it writes the scheduled drafts into the batch rows (the step's inputs read them
after each row's known tokens), computes the logits at each request's last 1 + k positions,
has the rejection sampler keep the accepted drafts and one more token, and after the step
asks the proposer for the next drafts of every request that sampled.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vllm_hydra.config.speculative import SpeculativeMethod
from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.core.sched_output import SchedulerOutput
from vllm_hydra.outputs import LogprobsTensors
from vllm_hydra.sample.rejection_sampler import RejectionSampler, SpecDecodeMetadata
from vllm_hydra.spec_decode.draft_model import DraftModelProposer
from vllm_hydra.spec_decode.metadata import expand_sampling_metadata
from vllm_hydra.spec_decode.ngram_proposer import NgramProposer
from vllm_hydra.structured_output.bitmask import apply_grammar_bitmask
from vllm_hydra.worker.input_batch import InputBatch
from vllm_hydra.worker.model_inputs import ModelInputs


class SpecDecodeRunner:
    def __init__(
        self,
        vllm_config: VllmConfig,
        batch: InputBatch,
        rejection_sampler: RejectionSampler,
        device: torch.device,
    ) -> None:
        spec = vllm_config.speculative
        self.batch = batch
        self.rejection_sampler = rejection_sampler
        self.ngram = NgramProposer(vllm_config) if spec.method is SpeculativeMethod.ngram else None
        self.draft_model = (
            DraftModelProposer(vllm_config, device) if spec.method.uses_draft_model else None
        )
        self.disable_by_batch_size = spec.disable_by_batch_size

    # ---- the draft model's weights and KV cache (beside the target's) ----

    def load_model(self) -> None:
        if self.draft_model is not None:
            self.draft_model.load_model()

    def kv_cache_bytes_per_block(self) -> int:
        return self.draft_model.kv_cache_bytes_per_block() if self.draft_model else 0

    def initialize_kv_cache(self, num_blocks: int) -> None:
        if self.draft_model is not None:
            self.draft_model.initialize_kv_cache(num_blocks)

    def update_states(self, so: SchedulerOutput) -> None:
        """Each batch row's drafts for this step (none for rows the scheduler gave none)."""
        drafts = so.scheduled_spec_decode_tokens
        for row, req_id in enumerate(self.batch.req_ids):
            if drafts or self.batch.spec_token_ids[row]:
                self.batch.set_spec_token_ids(row, drafts.get(req_id, []) if req_id else [])

    def num_draft_tokens(self) -> np.ndarray:
        n = self.batch.num_reqs
        return np.array([len(self.batch.spec_token_ids[r]) for r in range(n)], dtype=np.int32)

    # ---- verify ----

    def sample(
        self,
        model: nn.Module,
        hidden: torch.Tensor,
        inputs: ModelInputs,
        scheduler_output: SchedulerOutput,
        req_ids: list[str],
    ) -> tuple[list[list[int]], LogprobsTensors | None]:
        """The rejection sampler over each row's last 1 + k positions; appends the emitted
        tokens to the rows (a prefill chunk that is not the last emits nothing)."""
        batch, n = self.batch, self.batch.num_reqs
        spec = SpecDecodeMetadata.make([batch.spec_token_ids[r] for r in range(n)], batch.device)
        owner = np.repeat(np.arange(n), spec.num_rows)  # logits row -> batch row
        logits = model.compute_logits(hidden[self._logits_indices(inputs, spec, owner)])
        # Structured requests carry no drafts, so each has one row, as in normal sampling.
        logits = apply_grammar_bitmask(logits, scheduler_output, [req_ids[r] for r in owner])
        metadata = expand_sampling_metadata(batch, spec.num_draft_tokens)
        mask = inputs.sample_mask
        # A row that does not sample leaves its own RNG untouched (see ModelRunner).
        metadata.generators = {row: g for row, g in metadata.generators.items() if mask[owner[row]]}
        output = self.rejection_sampler(logits, metadata, spec)
        sampled = [tokens if mask[r] else [] for r, tokens in enumerate(output.output_token_ids)]
        for row, tokens in enumerate(sampled):
            if tokens:
                batch.append_token_ids(row, tokens)
                batch.requests[row].output_token_ids.extend(tokens)  # type: ignore[union-attr]
        return sampled, _sampling_rows_only(output.logprobs_tensors, output.output_token_ids, mask)

    @staticmethod
    def _logits_indices(
        inputs: ModelInputs, spec: SpecDecodeMetadata, owner: np.ndarray
    ) -> torch.Tensor:
        """The flat positions of each row's last 1 + k tokens."""
        ends = np.cumsum(inputs.query_lens)
        first = np.repeat(ends - spec.num_rows, spec.num_rows)
        offsets = np.arange(len(owner)) - np.repeat(spec.row_starts, spec.num_rows)
        return torch.from_numpy(first + offsets).to(inputs.logits_indices.device)

    # ---- propose ----

    def propose(self, sampled: list[list[int]], inputs: ModelInputs) -> list[list[int]]:
        """The next drafts of each row that sampled this step (in row order)."""
        batch, n = self.batch, self.batch.num_reqs
        drafts: list[list[int]] = [[] for _ in range(n)]
        limit = self.disable_by_batch_size
        if limit is not None and n >= limit:
            return drafts
        if self.draft_model is not None:
            return self.draft_model.propose(batch, inputs.starts, inputs.query_lens, sampled)
        if self.ngram is None:
            return drafts
        rows = np.array([r for r in range(n) if sampled[r]], dtype=np.int64)
        if not len(rows):
            return drafts
        num_tokens = batch.num_tokens[rows]
        context = batch.token_ids_cpu[rows, : int(num_tokens.max())]
        for row, proposal in zip(
            rows.tolist(), self.ngram.propose(context, num_tokens), strict=True
        ):
            drafts[row] = proposal
        return drafts


def _sampling_rows_only(
    logprobs: LogprobsTensors | None, output: list[list[int]], mask: np.ndarray
) -> LogprobsTensors | None:
    """The logprob rows of the emitted tokens of rows that sample (one row per token)."""
    if logprobs is None or mask.all():
        return logprobs
    keep, row = [], 0
    for r, tokens in enumerate(output):
        if mask[r]:
            keep.extend(range(row, row + len(tokens)))
        row += len(tokens)
    index = torch.tensor(keep, dtype=torch.int64, device=logprobs.logprobs.device)
    return LogprobsTensors(
        logprobs.logprob_token_ids[index],
        logprobs.logprobs[index],
        logprobs.selected_token_ranks[index],
    )
