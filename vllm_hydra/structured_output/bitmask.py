"""`apply_grammar_bitmask`: the model runner masks the structured rows' logits before sampling."""

from __future__ import annotations

import torch
import xgrammar as xgr

from vllm_hydra.core.sched_output import SchedulerOutput


def apply_grammar_bitmask(
    logits: torch.Tensor, scheduler_output: SchedulerOutput, sample_req_ids: list[str]
) -> torch.Tensor:
    """Mask (in place) the tokens each structured request's grammar forbids; `logits` row i
    belongs to `sample_req_ids[i]`, bitmask row j to `structured_output_request_ids[j]`."""
    bitmask = scheduler_output.grammar_bitmask
    if bitmask is None:
        return logits
    logits_row = {req_id: i for i, req_id in enumerate(sample_req_ids)}
    pairs = [
        (logits_row[req_id], j)
        for j, req_id in enumerate(scheduler_output.structured_output_request_ids)
        if req_id in logits_row
    ]
    if not pairs:
        return logits
    rows, sources = zip(*pairs, strict=True)
    # Laid out as the logits are, so row i masks logits row i; only `rows` are touched.
    aligned = torch.full((logits.shape[0], bitmask.shape[1]), -1, dtype=torch.int32)
    aligned[list(rows)] = bitmask[list(sources)]
    xgr.apply_token_bitmask_inplace(logits, aligned.to(logits.device), indices=list(rows))
    return logits
