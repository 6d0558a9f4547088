"""`scheduler` section: the token budget and request policy (vLLM's SchedulerConfig)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class SchedulerPolicy(Enum):
    fcfs = "fcfs"
    priority = "priority"  # lower value first, ties broken by arrival


# Token budget per step when the user sets none (vLLM's server default on smaller GPUs).
DEFAULT_MAX_NUM_BATCHED_TOKENS = 2048


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 128
    # Tokens scheduled per step, over all requests. Unset: 2048 with chunked prefill, else at
    # least max_model_len; never more than max_num_seqs * max_model_len.
    # Takes sizes: 8k (8,000), 8K (8,192).
    max_num_batched_tokens: Any = None
    enable_chunked_prefill: bool = True
    policy: SchedulerPolicy = SchedulerPolicy.fcfs
    # Prefills longer than this are chunked to it each step (0: no limit beyond the budget).
    long_prefill_token_threshold: Any = 0
