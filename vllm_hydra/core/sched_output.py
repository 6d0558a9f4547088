"""`SchedulerOutput`: what one step asks the model runner to compute (vLLM's sched/output.py).

The runner keeps per-request state (token ids, block table, sampling state) across steps; this
message carries only what changed:

- `scheduled_new_reqs`: requests the runner has no state for. A request runs here the first
  time it is scheduled and again each time it resumes after preemption.
- `scheduled_cached_reqs`: requests that were scheduled in the previous step they ran in and
  continue from there; only their new blocks and progress are sent.
- `preempted_req_ids` and `finished_req_ids`: requests whose runner state is to be dropped.

Preemption rule. A request preempted in step N is listed in step N's `preempted_req_ids` and
does not appear in step N's scheduled requests; the runner drops its state. Its KV cache is
freed, so it is recomputed: when it is scheduled again it arrives in `scheduled_new_reqs` with
`output_token_ids` holding the tokens it has generated so far (the runner's token list is
prompt + outputs), `num_computed_tokens` = its prefix-cache hit (or 0), and fresh `block_ids`.
`CachedRequestData.resumed_from_preemption` is therefore always False here.

A request that finishes (stop, length or abort) in step N is listed in the
`finished_req_ids` of the next SchedulerOutput.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vllm_hydra.lora.request import LoRARequest
from vllm_hydra.sampling_params import SamplingParams


@dataclass
class NewRequestData:
    req_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    # The request's whole block table.
    block_ids: list[int]
    # Tokens already in the KV cache (prefix-cache hit); this step computes from here.
    num_computed_tokens: int
    # Tokens generated before a preemption; empty for a request's first schedule.
    output_token_ids: list[int] = field(default_factory=list)
    # The EOS id the sampler masks until min_tokens are out (None: the model has none).
    eos_token_id: int | None = None
    # The adapter the request runs with; None: the base model.
    lora_request: LoRARequest | None = None


@dataclass
class CachedRequestData:
    """Requests continuing from their previous step, one entry per request in each list."""

    req_ids: list[str] = field(default_factory=list)
    # Always False: a resumed request is sent as a NewRequestData instead.
    resumed_from_preemption: list[bool] = field(default_factory=list)
    # Empty lists unless pipeline parallel: the runner appends the tokens it sampled itself.
    # With pp > 1 the stages before the last do not sample, so each entry holds the tokens this
    # step computes (from num_computed_tokens on), as vLLM sends them.
    new_token_ids: list[list[int]] = field(default_factory=list)
    # Block ids appended to the request's block table this step; None when none were.
    new_block_ids: list[list[int] | None] = field(default_factory=list)
    # Tokens in the KV cache before this step.
    num_computed_tokens: list[int] = field(default_factory=list)

    @property
    def num_reqs(self) -> int:
        return len(self.req_ids)


@dataclass
class SchedulerOutput:
    scheduled_new_reqs: list[NewRequestData]
    scheduled_cached_reqs: CachedRequestData
    # Tokens to compute this step per request id, over new and cached requests.
    num_scheduled_tokens: dict[str, int]
    total_num_scheduled_tokens: int
    finished_req_ids: set[str]
    preempted_req_ids: set[str]
    # Structured requests that sample this step, and their rows of the token bitmask
    # ([len(structured_output_request_ids), vocab/32] int32; None when there are none).
    structured_output_request_ids: list[str] = field(default_factory=list)
    grammar_bitmask: torch.Tensor | None = None
    # Speculative decoding: the draft tokens each request verifies this step (only requests
    # with drafts). They are the last len(...) of its num_scheduled_tokens, after its last
    # known token.
    scheduled_spec_decode_tokens: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def make_empty(cls) -> SchedulerOutput:
        return cls([], CachedRequestData(), {}, 0, set(), set())
