"""`RejectionSampler`: verify each request's draft tokens against the target (vLLM's v1 one).

Logits come in 1 + k rows per request: row j (j < k) is the target's distribution for draft
token j, given the drafts before it; row k is the bonus row, the distribution after them all.
Each row goes through the same processing as normal sampling (logit bias, min-tokens,
penalties over the outputs plus the drafts before it, then temperature, min-p, top-k, top-p).

- Greedy rows: a draft is accepted while it equals the target's argmax; then the argmax of
  the first rejected row (or of the bonus row when all are accepted) is emitted.
- Random rows: draft j is accepted with probability min(1, p(d) / q(d)), where q is the
  proposer's distribution (one-hot on the draft for the n-gram proposer); the first rejected
  row samples from normalise(max(0, p - q)); when all are accepted the bonus row samples p.
  The emitted tokens are distributed exactly as if sampled from the target one at a time.

Seeded requests draw their uniforms and samples from their own generator, in row order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vllm_hydra.outputs import LogprobsTensors
from vllm_hydra.sample.logprobs import compute_logprobs, gather_logprobs
from vllm_hydra.sample.metadata import SamplingMetadata
from vllm_hydra.sample.ops.topk_topp import random_sample
from vllm_hydra.sample.sampler import Sampler
from vllm_hydra.sampling_params import GREEDY_EPS


@dataclass
class SpecDecodeMetadata:
    """Where each request's drafts and rows are: request r owns logits rows
    [row_starts[r], row_starts[r] + num_draft_tokens[r] + 1)."""

    num_draft_tokens: np.ndarray  # [num_reqs] int64
    draft_token_ids: torch.Tensor  # [num_drafts] int64, request after request
    draft_token_ids_cpu: list[list[int]]

    @classmethod
    def make(cls, draft_token_ids: list[list[int]], device: torch.device) -> SpecDecodeMetadata:
        flat = [t for drafts in draft_token_ids for t in drafts]
        return cls(
            num_draft_tokens=np.array([len(d) for d in draft_token_ids], dtype=np.int64),
            draft_token_ids=torch.tensor(flat, dtype=torch.int64, device=device),
            draft_token_ids_cpu=draft_token_ids,
        )

    @property
    def num_rows(self) -> np.ndarray:
        return self.num_draft_tokens + 1

    @property
    def row_starts(self) -> np.ndarray:
        return np.cumsum(self.num_rows) - self.num_rows

    @property
    def draft_rows(self) -> np.ndarray:
        """The logits row of each draft token (every row but each request's bonus row)."""
        starts = np.repeat(self.row_starts, self.num_draft_tokens)
        cu = np.cumsum(self.num_draft_tokens) - self.num_draft_tokens
        offsets = np.arange(int(self.num_draft_tokens.sum())) - np.repeat(cu, self.num_draft_tokens)
        return starts + offsets


@dataclass
class RejectionSamplerOutput:
    # Per request: its accepted drafts, then one token (1 to k + 1 tokens).
    output_token_ids: list[list[int]]
    # One row per emitted token, request after request (when any request asks).
    logprobs_tensors: LogprobsTensors | None


class RejectionSampler(nn.Module):
    def forward(
        self,
        logits: torch.Tensor,
        metadata: SamplingMetadata,
        spec: SpecDecodeMetadata,
        draft_probs: torch.Tensor | None = None,
    ) -> RejectionSamplerOutput:
        """`logits` [rows, vocab] and `metadata` one row per logits row; `draft_probs`
        [num_drafts, vocab] is the proposer's distribution (None: one-hot on the drafts)."""
        raw_logprobs = None if metadata.max_num_logprobs is None else compute_logprobs(logits)
        logits = Sampler.apply_logits_processors(logits.to(torch.float32, copy=True), metadata)
        draft_rows = torch.from_numpy(spec.draft_rows).to(logits.device)
        drafts = spec.draft_token_ids
        argmax = logits.argmax(dim=-1)
        if metadata.all_greedy:
            accepted, row_tokens = drafts == argmax[draft_rows], argmax
        else:
            accepted, row_tokens = self._random(logits, metadata, argmax, spec, draft_probs)
        output = _emitted_tokens(spec, accepted.cpu().numpy(), row_tokens.cpu().numpy())
        logprobs = None
        if raw_logprobs is not None:
            logprobs = _emitted_logprobs(raw_logprobs, metadata, spec, output)
        return RejectionSamplerOutput(output, logprobs)

    @staticmethod
    def _random(
        logits: torch.Tensor,
        metadata: SamplingMetadata,
        argmax: torch.Tensor,
        spec: SpecDecodeMetadata,
        draft_probs: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(accepted per draft, the token each row would emit were it the last)."""
        assert metadata.temperature is not None
        is_greedy = metadata.temperature < GREEDY_EPS
        probs = Sampler.compute_probs(logits, metadata)
        draft_rows = torch.from_numpy(spec.draft_rows).to(probs.device)
        drafts = spec.draft_token_ids
        uniform = _uniform(probs.shape[0], metadata.generators, probs.device)[draft_rows]
        p = probs[draft_rows, drafts]
        arange = torch.arange(len(drafts), device=probs.device)
        q = torch.ones_like(p) if draft_probs is None else draft_probs[arange, drafts]
        # min(1, p/q) >= u, without dividing by a zero q.
        accept_random = (q > 0) & (uniform * q < p)
        accepted = torch.where(is_greedy[draft_rows], drafts == argmax[draft_rows], accept_random)
        # The first rejected row samples normalise(max(0, p - q)); the bonus row samples p.
        residual = probs.clone()
        if draft_probs is None:
            residual[draft_rows, drafts] = 0.0
        else:
            residual[draft_rows] = (probs[draft_rows] - draft_probs).clamp_(min=0.0)
        sampled = random_sample(residual, metadata.generators)
        return accepted, torch.where(is_greedy, argmax, sampled)


def _uniform(
    num_rows: int, generators: dict[int, torch.Generator], device: torch.device
) -> torch.Tensor:
    """[num_rows] in [0, 1): seeded rows from their request's generator, in row order."""
    uniform = torch.rand(num_rows, device=device)
    for row, generator in sorted(generators.items()):
        uniform[row] = torch.rand(1, generator=generator, device=device)[0]
    return uniform


def _emitted_tokens(
    spec: SpecDecodeMetadata, accepted: np.ndarray, row_tokens: np.ndarray
) -> list[list[int]]:
    """Per request: the leading accepted drafts, then the token of the row after them."""
    output = []
    starts, draft_starts = spec.row_starts, np.cumsum(spec.num_draft_tokens) - spec.num_draft_tokens
    for r, drafts in enumerate(spec.draft_token_ids_cpu):
        flags = accepted[draft_starts[r] : draft_starts[r] + len(drafts)]
        num_accepted = int(np.argmin(flags)) if not flags.all() else len(drafts)
        output.append([*drafts[:num_accepted], int(row_tokens[starts[r] + num_accepted])])
    return output


def _emitted_logprobs(
    raw_logprobs: torch.Tensor,
    metadata: SamplingMetadata,
    spec: SpecDecodeMetadata,
    output: list[list[int]],
) -> LogprobsTensors:
    """Each emitted token's logprob (and the top-N) from the row that emitted it."""
    starts = spec.row_starts
    rows = [int(starts[r]) + i for r, tokens in enumerate(output) for i in range(len(tokens))]
    tokens = [t for out in output for t in out]
    device = raw_logprobs.device
    assert metadata.max_num_logprobs is not None
    return gather_logprobs(
        raw_logprobs[torch.tensor(rows, device=device)],
        metadata.max_num_logprobs,
        torch.tensor(tokens, device=device),
    )
