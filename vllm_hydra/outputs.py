"""What a model runner step returns (vLLM's v1/outputs.py): sampled tokens and logprobs."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LogprobsTensors:
    """Top-N logprobs of N rows. Column 0 holds the sampled (or prompt) token itself."""

    logprob_token_ids: torch.Tensor  # [rows, num_logprobs + 1] int64
    logprobs: torch.Tensor  # [rows, num_logprobs + 1] float32
    selected_token_ranks: torch.Tensor  # [rows] int64, rank of column 0 in the vocab (1 = top)

    def tolists(self) -> LogprobsLists:
        return LogprobsLists(
            self.logprob_token_ids.tolist(),
            self.logprobs.tolist(),
            self.selected_token_ranks.tolist(),
        )


@dataclass
class LogprobsLists:
    """`LogprobsTensors` as Python lists, to send between processes."""

    logprob_token_ids: list[list[int]]
    logprobs: list[list[float]]
    selected_token_ranks: list[int]

    def slice(self, start: int, end: int) -> LogprobsLists:
        return LogprobsLists(
            self.logprob_token_ids[start:end],
            self.logprobs[start:end],
            self.selected_token_ranks[start:end],
        )


@dataclass
class SamplerOutput:
    sampled_token_ids: torch.Tensor  # [num_reqs] int64
    logprobs_tensors: LogprobsTensors | None  # of the sampled tokens, when any request asks


@dataclass
class ModelRunnerOutput:
    """One step's results, one row per scheduled request in `req_ids` order."""

    req_ids: list[str]
    req_id_to_index: dict[str, int]
    # Tokens sampled per request this step: [] for a request whose prefill chunk is not its last;
    # with speculative decoding, the accepted draft tokens and then one more.
    sampled_token_ids: list[list[int]]
    logprobs: LogprobsLists | None = None
    # Prompt logprobs computed this step per request (a chunk's worth), or None.
    prompt_logprobs_dict: dict[str, LogprobsTensors | None] = field(default_factory=dict)
    # Speculative decoding: each request's draft tokens for its next step (None: off).
    spec_token_ids: list[list[int]] | None = None
