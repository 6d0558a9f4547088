"""Test helpers for the core: configs, a fake model runner over a simulated paged KV cache, a
reference generator, and invariant checks on the block pool and the scheduler.

The fake runner plays the runner's side of the SchedulerOutput protocol. Its "KV cache" stores
the token id written at each slot; before a request "attends", every slot of its context must
hold the right token, so a wrong prefix-cache hit, a block reused while still in use, or a
block table out of step with the scheduler fails the test. Its next token is a hash of the
whole context, so outputs do not depend on batching, chunking or preemption.
"""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass, field

from vllm_hydra.config import (
    CacheConfig,
    ModelConfig,
    SchedulerConfig,
    SchedulerPolicy,
    VllmConfig,
)
from vllm_hydra.core.block_pool import BlockPool
from vllm_hydra.core.request import Request, RequestStatus
from vllm_hydra.core.sched_output import SchedulerOutput
from vllm_hydra.core.scheduler import Scheduler
from vllm_hydra.engine.messages import EngineCoreEventType, EngineCoreOutput, FinishReason
from vllm_hydra.outputs import ModelRunnerOutput
from vllm_hydra.sampling_params import SamplingParams

VOCAB_SIZE = 64
EOS = 2


def make_config(
    *,
    block_size: int = 4,
    max_model_len: int = 64,
    max_num_seqs: int = 8,
    max_num_batched_tokens: int = 32,
    enable_chunked_prefill: bool = True,
    long_prefill_token_threshold: int = 0,
    enable_prefix_caching: bool = True,
    policy: SchedulerPolicy = SchedulerPolicy.fcfs,
) -> VllmConfig:
    """A resolved VllmConfig with only the sections the scheduler reads."""
    return VllmConfig(
        model=ModelConfig(max_model_len=max_model_len),
        cache=CacheConfig(block_size=block_size, enable_prefix_caching=enable_prefix_caching),
        scheduler=SchedulerConfig(
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            enable_chunked_prefill=enable_chunked_prefill,
            long_prefill_token_threshold=long_prefill_token_threshold,
            policy=policy,
        ),
    )


def make_request(
    request_id: str,
    prompt: list[int],
    *,
    arrival_time: float = 0.0,
    priority: int = 0,
    eos_token_id: int | None = EOS,
    **params: object,
) -> Request:
    params.setdefault("max_tokens", 8)
    return Request(
        request_id,
        prompt,
        SamplingParams(**params),  # type: ignore[arg-type]
        eos_token_id,
        arrival_time=arrival_time,
        priority=priority,
    )


def next_token(context: list[int]) -> int:
    """The fake model: a token that depends on every token of the context."""
    return zlib.crc32(bytes(t % 256 for t in context)) % VOCAB_SIZE


def reference_generate(
    prompt: list[int], params: SamplingParams, eos_token_id: int | None, max_model_len: int
) -> tuple[list[int], FinishReason, int | None]:
    """What a request must produce, computed without a scheduler: (tokens, reason, stop_reason)."""
    tokens, out = list(prompt), []
    while True:
        token = next_token(tokens)
        tokens.append(token)
        out.append(token)
        if len(out) >= params.min_tokens:
            if not params.ignore_eos and token == eos_token_id:
                return out, FinishReason.STOP, None
            if token in params.stop_token_ids:
                return out, FinishReason.STOP, token
        if len(tokens) >= max_model_len or len(out) >= (params.max_tokens or 1 << 30):
            return out, FinishReason.LENGTH, None


@dataclass
class _RunnerRequestState:
    token_ids: list[int]
    block_ids: list[int]
    num_computed_tokens: int


@dataclass
class FakeModelRunner:
    num_blocks: int
    block_size: int
    states: dict[str, _RunnerRequestState] = field(default_factory=dict)
    slots: dict[int, int] = field(default_factory=dict)

    def execute_model(self, so: SchedulerOutput) -> ModelRunnerOutput:
        self._update_states(so)
        for req_id, num_tokens in so.num_scheduled_tokens.items():
            self._write(self.states[req_id], num_tokens)
        # Like a real layer: every new k/v of the batch is written before anyone attends.
        sampled = [self._attend_and_sample(self.states[r]) for r in so.num_scheduled_tokens]
        req_ids = list(so.num_scheduled_tokens)
        return ModelRunnerOutput(req_ids, {r: i for i, r in enumerate(req_ids)}, sampled)

    def _update_states(self, so: SchedulerOutput) -> None:
        assert sum(so.num_scheduled_tokens.values()) == so.total_num_scheduled_tokens
        for req_id in so.finished_req_ids | so.preempted_req_ids:
            self.states.pop(req_id, None)
        for new in so.scheduled_new_reqs:
            assert new.req_id not in self.states, "a known request was sent as new"
            tokens = [*new.prompt_token_ids, *new.output_token_ids]
            self.states[new.req_id] = _RunnerRequestState(
                tokens, list(new.block_ids), new.num_computed_tokens
            )
        cached = so.scheduled_cached_reqs
        for i, req_id in enumerate(cached.req_ids):
            state = self.states[req_id]
            assert not cached.resumed_from_preemption[i]
            assert cached.num_computed_tokens[i] == state.num_computed_tokens
            state.block_ids.extend(cached.new_block_ids[i] or [])
        scheduled = {n.req_id for n in so.scheduled_new_reqs} | set(cached.req_ids)
        assert scheduled == set(so.num_scheduled_tokens)

    def _slot(self, state: _RunnerRequestState, position: int) -> int:
        block_id = state.block_ids[position // self.block_size]
        assert 0 < block_id < self.num_blocks, "the null block was handed out"
        return block_id * self.block_size + position % self.block_size

    def _write(self, state: _RunnerRequestState, num_tokens: int) -> None:
        start = state.num_computed_tokens
        assert num_tokens > 0 and start + num_tokens <= len(state.token_ids)
        for position in range(start, start + num_tokens):
            self.slots[self._slot(state, position)] = state.token_ids[position]
        state.num_computed_tokens += num_tokens

    def _attend_and_sample(self, state: _RunnerRequestState) -> list[int]:
        end = state.num_computed_tokens
        context = [self.slots.get(self._slot(state, p)) for p in range(end)]
        assert context == state.token_ids[:end], "KV cache holds the wrong tokens"
        if end < len(state.token_ids):  # a prefill chunk that is not the last
            return []
        token = next_token(state.token_ids)
        state.token_ids.append(token)
        return [token]


@dataclass
class Driver:
    """Runs a scheduler against the fake runner and records what comes out."""

    scheduler: Scheduler
    runner: FakeModelRunner
    tokens: dict[str, list[int]] = field(default_factory=dict)
    finished: dict[str, EngineCoreOutput] = field(default_factory=dict)
    outputs: list[SchedulerOutput] = field(default_factory=list)
    # The engine events each request's outputs carried (QUEUED, SCHEDULED, PREEMPTED).
    events: dict[str, list[EngineCoreEventType]] = field(default_factory=dict)

    @classmethod
    def create(cls, config: VllmConfig, num_blocks: int) -> Driver:
        runner = FakeModelRunner(num_blocks, config.cache.block_size)
        return cls(Scheduler(config, num_blocks), runner)

    def step(self) -> SchedulerOutput:
        so = self.scheduler.schedule()
        self.outputs.append(so)
        check_step(self.scheduler, so)
        for out in self.scheduler.update_from_output(so, self.runner.execute_model(so)):
            assert out.request_id not in self.finished
            self.tokens.setdefault(out.request_id, []).extend(out.new_token_ids)
            self.events.setdefault(out.request_id, []).extend(e.type for e in out.events or ())
            if out.finished:
                self.finished[out.request_id] = out
        check_invariants(self.scheduler)
        return so

    def run(self, max_steps: int = 2000) -> None:
        for _ in range(max_steps):
            if not self.scheduler.has_unfinished_requests():
                return
            self.step()
        raise AssertionError("requests did not finish: the scheduler made no progress")


def check_step(scheduler: Scheduler, so: SchedulerOutput) -> None:
    """The limits every SchedulerOutput must respect."""
    assert so.total_num_scheduled_tokens <= scheduler.max_num_scheduled_tokens
    assert len(scheduler.running) <= scheduler.max_num_seqs
    threshold = scheduler.long_prefill_token_threshold
    for num_tokens in so.num_scheduled_tokens.values():
        assert num_tokens > 0
        if threshold > 0 and scheduler.enable_chunked_prefill:
            assert num_tokens <= threshold
    for new in so.scheduled_new_reqs:
        num_tokens = len(new.prompt_token_ids) + len(new.output_token_ids)
        # A prefix-cache hit is whole blocks and leaves at least the last token to compute.
        assert new.num_computed_tokens % scheduler.block_size == 0
        assert new.num_computed_tokens <= num_tokens - 1
        if not scheduler.enable_chunked_prefill:
            assert so.num_scheduled_tokens[new.req_id] == num_tokens - new.num_computed_tokens
    assert not so.preempted_req_ids & set(so.num_scheduled_tokens)


def check_block_pool(pool: BlockPool, tables: list[list[int]]) -> None:
    """ref_cnt equals the number of block tables holding a block; free means ref_cnt 0."""
    holders = Counter(block_id for table in tables for block_id in table)
    free_ids = [b.block_id for b in pool.free_block_queue.get_all_free_blocks()]
    assert len(free_ids) == len(set(free_ids)) == pool.get_num_free_blocks()
    assert 0 not in free_ids and 0 not in holders
    for block in pool.blocks[1:]:
        assert block.ref_cnt == holders[block.block_id]
        assert (block.ref_cnt == 0) == (block.block_id in set(free_ids))
    for block_hash, blocks in pool.cached_block_hash_to_block.items():
        assert blocks and all(b.block_hash == block_hash for b in blocks.values())
    num_hashed = sum(b.block_hash is not None for b in pool.blocks)
    assert num_hashed == sum(len(b) for b in pool.cached_block_hash_to_block.values())


def check_invariants(scheduler: Scheduler) -> None:
    manager = scheduler.kv_cache_manager
    tables = [manager.get_block_ids(r) for r in manager.req_to_blocks]
    check_block_pool(manager.block_pool, tables)
    running = {r.request_id for r in scheduler.running}
    waiting = {r.request_id for r in scheduler.waiting}
    assert len(running) == len(scheduler.running) and not running & waiting
    assert running | waiting == set(scheduler.requests)
    assert set(manager.req_to_blocks) <= running, "a request not running holds blocks"
    for request in scheduler.running:
        assert request.status == RequestStatus.RUNNING
        num_blocks = len(manager.get_block_ids(request.request_id))
        assert num_blocks * scheduler.block_size >= request.num_computed_tokens
    for request in scheduler.waiting:
        assert request.status in (RequestStatus.WAITING, RequestStatus.PREEMPTED)
        assert request.num_computed_tokens == 0


def check_all_free(scheduler: Scheduler) -> None:
    pool = scheduler.kv_cache_manager.block_pool
    assert not scheduler.kv_cache_manager.req_to_blocks
    assert pool.get_num_free_blocks() == pool.num_blocks - 1
    assert all(b.ref_cnt == 0 for b in pool.blocks)
    assert scheduler.kv_cache_manager.usage == 0.0
