"""The stats that feed the stat loggers (vLLM's v1/metrics/stats.py).

- `SchedulerStats`: the engine's state after a step (gauges and running totals), sent in
  `EngineCoreOutputs.scheduler_stats`.
- `RequestStateStats`: one request's timestamps, kept in the frontend's per-request state.
- `IterationStats`: what one batch of engine outputs did (tokens, TTFTs, ITLs, finished requests).
- `FinishedRequestStats`: one finished request's latencies and sizes.

Two clocks: the frontend's wall clock (`time.time()`) for arrival, so TTFT and e2e latency
include the time before the engine saw the request; the engine's `time.monotonic()` for the
engine events and step timestamps (queue, prefill, decode, inter-token latency). Both processes
run on one host, where `time.monotonic()` is one system-wide clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vllm_hydra.spec_decode.metrics import SpecDecodingStats

if TYPE_CHECKING:
    from vllm_hydra.engine.messages import EngineCoreEvent, EngineCoreOutput, FinishReason


@dataclass
class SchedulerStats:
    """A snapshot of one engine's scheduler. Counters are totals since start (the loggers
    take differences)."""

    num_running: int = 0
    num_waiting: int = 0
    kv_cache_usage: float = 0.0  # 0-1: used blocks / usable blocks
    num_free_blocks: int = 0
    num_total_blocks: int = 0  # usable blocks (the null block excluded)
    prefix_cache_queries: int = 0  # prompt tokens looked up in the prefix cache
    prefix_cache_hits: int = 0  # of those, tokens found
    num_preemptions: int = 0
    num_finished_requests: int = 0
    engine_index: int = 0
    # LoRA adapter name -> its requests waiting / running (lora=enabled only).
    waiting_lora_adapters: dict[str, int] = field(default_factory=dict)
    running_lora_adapters: dict[str, int] = field(default_factory=dict)
    # Speculative decoding totals; None when it is off.
    spec_decoding_stats: SpecDecodingStats | None = None


@dataclass
class RequestStateStats:
    """One request's timestamps: `arrival_time` on the frontend's wall clock, the rest on the
    engine's monotonic clock (0.0: not yet)."""

    arrival_time: float
    num_generation_tokens: int = 0
    queued_ts: float = 0.0
    scheduled_ts: float = 0.0  # the first time it was scheduled
    first_token_ts: float = 0.0
    last_token_ts: float = 0.0
    first_token_latency: float = 0.0  # TTFT, seconds from arrival


@dataclass
class FinishedRequestStats:
    finish_reason: FinishReason
    e2e_latency: float = 0.0
    num_prompt_tokens: int = 0
    num_generation_tokens: int = 0
    max_tokens_param: int | None = None
    n_param: int | None = None  # the user request's n, on its first sequence only
    queued_time: float = 0.0  # QUEUED -> first SCHEDULED
    prefill_time: float = 0.0  # first SCHEDULED -> first token
    inference_time: float = 0.0  # first SCHEDULED -> last token
    decode_time: float = 0.0  # first token -> last token
    first_token_latency: float = 0.0


@dataclass
class IterationStats:
    """What one batch of engine outputs (one engine step) did."""

    iteration_timestamp: float = field(default_factory=time.time)
    num_generation_tokens: int = 0
    num_prompt_tokens: int = 0
    num_preempted_reqs: int = 0
    finished_requests: list[FinishedRequestStats] = field(default_factory=list)
    time_to_first_tokens_iter: list[float] = field(default_factory=list)
    inter_token_latencies_iter: list[float] = field(default_factory=list)

    def update_from_output(
        self,
        output: EngineCoreOutput,
        engine_core_timestamp: float,
        prompt_len: int,
        req_stats: RequestStateStats,
    ) -> None:
        """Fold in one request's output of this step: its tokens, then TTFT or ITL."""
        num_new = len(output.new_token_ids)
        self.num_generation_tokens += num_new
        if output.events:
            self._update_from_events(output.events, req_stats)
        if num_new == 0:
            return
        if req_stats.num_generation_tokens == 0:  # the first token(s): prefill done
            self.num_prompt_tokens += prompt_len
            req_stats.first_token_latency = self.iteration_timestamp - req_stats.arrival_time
            self.time_to_first_tokens_iter.append(req_stats.first_token_latency)
            req_stats.first_token_ts = engine_core_timestamp
        else:
            self.inter_token_latencies_iter.append(engine_core_timestamp - req_stats.last_token_ts)
        req_stats.num_generation_tokens += num_new
        req_stats.last_token_ts = engine_core_timestamp

    def _update_from_events(
        self, events: list[EngineCoreEvent], req_stats: RequestStateStats
    ) -> None:
        from vllm_hydra.engine.messages import EngineCoreEventType  # messages imports us

        for event in events:
            if event.type == EngineCoreEventType.QUEUED:
                req_stats.queued_ts = event.timestamp
            elif event.type == EngineCoreEventType.SCHEDULED and req_stats.scheduled_ts == 0.0:
                req_stats.scheduled_ts = event.timestamp  # only the first (not a resume)
            elif event.type == EngineCoreEventType.PREEMPTED:
                self.num_preempted_reqs += 1

    def update_from_finished_request(
        self,
        finish_reason: FinishReason,
        num_prompt_tokens: int,
        max_tokens_param: int | None,
        req_stats: RequestStateStats,
        n_param: int | None = None,
    ) -> FinishedRequestStats:
        """Record a finished request's latencies (each phase 0.0 if it never reached it)."""
        started = req_stats.scheduled_ts > 0.0
        produced = req_stats.first_token_ts > 0.0
        finished = FinishedRequestStats(
            finish_reason=finish_reason,
            e2e_latency=self.iteration_timestamp - req_stats.arrival_time,
            num_prompt_tokens=num_prompt_tokens,
            num_generation_tokens=req_stats.num_generation_tokens,
            max_tokens_param=max_tokens_param,
            n_param=n_param,
            queued_time=req_stats.scheduled_ts - req_stats.queued_ts if started else 0.0,
            prefill_time=req_stats.first_token_ts - req_stats.scheduled_ts if produced else 0.0,
            inference_time=req_stats.last_token_ts - req_stats.scheduled_ts if produced else 0.0,
            decode_time=req_stats.last_token_ts - req_stats.first_token_ts if produced else 0.0,
            first_token_latency=req_stats.first_token_latency,
        )
        self.finished_requests.append(finished)
        return finished
