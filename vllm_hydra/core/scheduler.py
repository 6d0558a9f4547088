"""`Scheduler`: vLLM v1's single token-budget loop, preemption by recompute, and stop checks.

There are no prefill and decode phases. Each step hands out `max_num_batched_tokens` tokens:
first to the running requests (in queue order), then to waiting ones, and each request gets as
many as it lacks (`num_tokens - num_computed_tokens`) within the budget. This covers chunked
prefill, prefix-cache hits and requests resumed after preemption with one rule.

Speculative decoding is the same rule: a running request's draft tokens count as tokens it
lacks (`num_tokens_with_spec`), so it is scheduled 1 + k tokens; once the step is verified,
`num_computed_tokens` moves back over the rejected drafts, whose KV slots the next step
overwrites. Only blocks of accepted tokens ever enter the prefix cache.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from vllm_hydra.config.scheduler import SchedulerPolicy
from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.core.kv_cache_manager import KVCacheManager, cdiv
from vllm_hydra.core.request import Request, RequestStatus
from vllm_hydra.core.request_queue import create_request_queue
from vllm_hydra.core.sched_output import CachedRequestData, NewRequestData, SchedulerOutput
from vllm_hydra.core.sched_utils import check_stop
from vllm_hydra.engine.messages import EngineCoreEventType, EngineCoreOutput, FinishReason
from vllm_hydra.metrics.stats import SchedulerStats
from vllm_hydra.outputs import LogprobsLists, LogprobsTensors, ModelRunnerOutput
from vllm_hydra.spec_decode.metrics import SpecDecodingStats
from vllm_hydra.structured_output import StructuredOutputManager

logger = logging.getLogger(__name__)

LogprobsTuple = tuple[list[list[int]], list[list[float]], list[int]]


@dataclass
class _StepPlan:
    """What one call of `schedule` has decided so far."""

    token_budget: int
    num_scheduled_tokens: dict[str, int] = field(default_factory=dict)
    new_reqs: list[Request] = field(default_factory=list)
    running_reqs: list[Request] = field(default_factory=list)
    new_block_ids: dict[str, list[int]] = field(default_factory=dict)
    preempted: list[Request] = field(default_factory=list)
    spec_decode_tokens: dict[str, list[int]] = field(default_factory=dict)

    def add(self, request: Request, num_tokens: int) -> None:
        self.num_scheduled_tokens[request.request_id] = num_tokens
        self.token_budget -= num_tokens
        # The drafts that fit: those of the scheduled tokens past the last known one.
        num_spec = request.num_computed_tokens + num_tokens - request.num_tokens
        if num_spec > 0:
            self.spec_decode_tokens[request.request_id] = request.spec_token_ids[:num_spec]


class Scheduler:
    """Decides each step which requests compute how many tokens, and digests the results.

    One engine step: `schedule()` -> the runner executes the SchedulerOutput ->
    `update_from_output()` appends the sampled tokens and returns the EngineCoreOutputs.
    Preemption is by recompute: the victim (fcfs: the last to arrive; priority: the largest
    priority value, then the last to arrive) loses its KV cache, goes back to the front of the
    waiting queue, and is sent to the runner as a new request when it resumes.
    """

    def __init__(
        self,
        vllm_config: VllmConfig,
        num_gpu_blocks: int,
        structured_output_manager: StructuredOutputManager | None = None,
    ) -> None:
        sched, cache = vllm_config.scheduler, vllm_config.cache
        if vllm_config.model.max_model_len is None or sched.max_num_batched_tokens is None:
            raise ValueError("Scheduler needs a resolved VllmConfig (see create_vllm_config)")
        self.max_model_len = vllm_config.model.max_model_len
        self.max_num_seqs = sched.max_num_seqs
        self.max_num_scheduled_tokens = sched.max_num_batched_tokens
        self.enable_chunked_prefill = sched.enable_chunked_prefill
        self.long_prefill_token_threshold = sched.long_prefill_token_threshold
        self.policy = sched.policy
        self.block_size = cache.block_size
        self.num_gpu_blocks = num_gpu_blocks
        # A request is length-capped at max_model_len, or earlier if it would outgrow the whole
        # KV cache (its last token needs no KV): then it could never run again, even alone.
        self.max_request_len = min(self.max_model_len, (num_gpu_blocks - 1) * cache.block_size + 1)
        self.kv_cache_manager = KVCacheManager(
            num_gpu_blocks, cache.block_size, cache.enable_prefix_caching, self.max_model_len
        )
        self.requests: dict[str, Request] = {}
        self.waiting = create_request_queue(sched.policy)
        self.running: list[Request] = []
        # Finished since the last schedule(); the next SchedulerOutput tells the runner.
        self.finished_req_ids: set[str] = set()
        self.num_preemptions = 0
        self.num_finished_requests = 0
        # Record QUEUED/SCHEDULED/PREEMPTED events for the frontend's latency metrics.
        self.log_stats = vllm_config.observability.collect_stats
        # Pipeline stages before the last never sample, so they get the tokens to compute.
        self.send_token_ids = vllm_config.parallel.pp > 1
        self.structured_output_manager = structured_output_manager or StructuredOutputManager(
            vllm_config
        )
        # A step runs at most this many adapters (the device's LoRA slots); 0: LoRA is off.
        self.max_loras = vllm_config.lora.max_loras if vllm_config.lora.enabled else 0
        spec = vllm_config.speculative
        self.num_spec_tokens = spec.num_speculative_tokens if spec.enabled else 0
        # A draft model writes the KV of its proposals ahead of the step's tokens.
        self.num_lookahead_tokens = spec.num_lookahead_tokens if spec.enabled else 0
        self.spec_disable_by_batch_size = spec.disable_by_batch_size
        self.spec_decoding_stats = (
            SpecDecodingStats.new(self.num_spec_tokens) if self.num_spec_tokens else None
        )
        # Requests the scheduler itself ended (their grammar failed to compile), to report.
        self._failed_outputs: list[EngineCoreOutput] = []

    # ---- requests in and out ----

    def add_request(self, request: Request) -> None:
        """Queue a new request. Raises ValueError for one that could never be scheduled."""
        self._check_request(request)
        request.status = RequestStatus.WAITING
        if request.use_structured_output:
            # Compiled in the background; schedule() skips the request until it is ready.
            request.status = RequestStatus.WAITING_FOR_FSM
            self.structured_output_manager.grammar_init(request)
        self.requests[request.request_id] = request
        self.waiting.add_request(request)
        self._record_event(request, EngineCoreEventType.QUEUED)

    def _record_event(self, request: Request, event_type: EngineCoreEventType) -> None:
        if self.log_stats:
            request.record_event(event_type)

    def _check_request(self, request: Request) -> None:
        rid, num_prompt = request.request_id, request.num_prompt_tokens
        if rid in self.requests:
            raise ValueError(f"Request id {rid!r} is already in the scheduler")
        if num_prompt == 0:
            raise ValueError(f"Request {rid!r} has an empty prompt")
        if num_prompt > self.max_model_len:
            raise ValueError(
                f"Request {rid!r}: prompt of {num_prompt} tokens exceeds "
                f"max_model_len={self.max_model_len}"
            )
        if cdiv(num_prompt, self.block_size) > self.num_gpu_blocks - 1:
            raise ValueError(
                f"Request {rid!r}: prompt of {num_prompt} tokens exceeds the KV cache "
                f"({self.num_gpu_blocks - 1} blocks of {self.block_size} tokens)"
            )

    def finish_requests(
        self, request_ids: str | Iterable[str], finished_status: RequestStatus
    ) -> None:
        """End requests wherever they are (waiting, preempted or running); unknown ids are
        ignored, since a request may finish on its own just before its abort arrives."""
        if not RequestStatus.is_finished(finished_status):
            raise ValueError(f"{finished_status.name} is not a finished status")
        if isinstance(request_ids, str):
            request_ids = (request_ids,)
        for request_id in request_ids:
            request = self.requests.get(request_id)
            if request is None:
                continue
            if request.status == RequestStatus.RUNNING:
                self.running.remove(request)
            else:
                self.waiting.remove_request(request)
            request.status = finished_status
            self._free_request(request)

    def _free_request(self, request: Request) -> None:
        self.kv_cache_manager.free(request)
        if request.structured_output_request is not None:
            request.structured_output_request.free()
        del self.requests[request.request_id]
        self.finished_req_ids.add(request.request_id)
        self.num_finished_requests += 1

    def get_num_unfinished_requests(self) -> int:
        return len(self.waiting) + len(self.running)

    def has_unfinished_requests(self) -> bool:
        return self.get_num_unfinished_requests() > 0

    def reset_prefix_cache(self) -> bool:
        return self.kv_cache_manager.reset_prefix_cache()

    def make_stats(self) -> SchedulerStats:
        prefix = self.kv_cache_manager.prefix_cache_stats
        block_pool = self.kv_cache_manager.block_pool
        return SchedulerStats(
            num_running=len(self.running),
            num_waiting=len(self.waiting),
            kv_cache_usage=self.kv_cache_manager.usage,
            num_free_blocks=block_pool.get_num_free_blocks(),
            num_total_blocks=block_pool.num_blocks - 1,  # the null block is never handed out
            prefix_cache_queries=prefix.queries,
            prefix_cache_hits=prefix.hits,
            num_preemptions=self.num_preemptions,
            num_finished_requests=self.num_finished_requests,
            waiting_lora_adapters=_count_adapters(self.waiting),
            running_lora_adapters=_count_adapters(self.running),
            spec_decoding_stats=(
                self.spec_decoding_stats.copy() if self.spec_decoding_stats else None
            ),
        )

    # ---- schedule ----

    def schedule(self) -> SchedulerOutput:
        plan = _StepPlan(token_budget=self.max_num_scheduled_tokens)
        self._schedule_running(plan)
        # Admitting requests right after preempting would only preempt them again.
        if not plan.preempted:
            self._schedule_waiting(plan)
        output = self._make_output(plan)
        # Advance now, so the next step can schedule a request's next chunk before this one's
        # results are in; update_from_output only appends the sampled tokens.
        for request_id, num_tokens in plan.num_scheduled_tokens.items():
            self.requests[request_id].num_computed_tokens += num_tokens
        return output

    def _cap_num_new_tokens(self, num_new: int, token_budget: int) -> int:
        """Cap a request's missing tokens by the long-prefill threshold and the budget."""
        if self.long_prefill_token_threshold > 0:
            num_new = min(num_new, self.long_prefill_token_threshold)
        return min(num_new, token_budget)

    def _schedule_running(self, plan: _StepPlan) -> None:
        # A snapshot, since preemption removes requests from self.running as we go.
        for request in list(self.running):
            if plan.token_budget <= 0:
                break
            if request.status != RequestStatus.RUNNING:  # preempted earlier in this step
                continue
            self._trim_spec_tokens(request)
            num_new = request.num_tokens_with_spec - request.num_computed_tokens
            num_new = self._cap_num_new_tokens(num_new, plan.token_budget)
            if num_new == 0:  # e.g. its last step's token has not come back
                continue
            new_block_ids = self._allocate_or_preempt(request, num_new, plan)
            if new_block_ids is None:  # it was the one to yield; others may still fit
                continue
            plan.add(request, num_new)
            plan.running_reqs.append(request)
            plan.new_block_ids[request.request_id] = new_block_ids

    def _trim_spec_tokens(self, request: Request) -> None:
        """Keep the drafts whose verification cannot overshoot: a step emits up to k + 1
        tokens, within max_tokens and the request's length limit. No drafts for structured
        requests (their grammar advances only over sampled tokens) or at large batch."""
        if not request.spec_token_ids:
            return
        room = self.max_request_len - request.num_tokens
        if request.max_tokens is not None:
            room = min(room, request.max_tokens - request.num_output_tokens)
        if request.use_structured_output or self._spec_disabled_by_batch_size():
            room = 0
        del request.spec_token_ids[max(room - 1, 0) :]

    def _spec_disabled_by_batch_size(self) -> bool:
        limit = self.spec_disable_by_batch_size
        return limit is not None and len(self.running) >= limit

    def _allocate_or_preempt(
        self, request: Request, num_new: int, plan: _StepPlan
    ) -> list[int] | None:
        """Allocate slots, preempting the lowest-priority running requests until they fit.
        Returns None if `request` itself had to be preempted."""
        # Lookahead slots stop where the request's KV must end (its last token needs none),
        # so a request alone always fits; the draft's writes past them go to the null block.
        room = self.max_request_len - 1 - request.num_computed_tokens - num_new
        lookahead = max(min(self.num_lookahead_tokens, room), 0)
        while True:
            new_block_ids = self.kv_cache_manager.allocate_slots(
                request, num_new, num_lookahead_tokens=lookahead
            )
            if new_block_ids is not None:
                return new_block_ids
            victim = self._select_victim()
            self._unschedule(victim, plan)
            self._preempt_request(victim)
            plan.preempted.append(victim)
            if victim is request:
                return None

    def _select_victim(self) -> Request:
        """The running request that yields first: the last to arrive (fcfs), or the one with
        the largest priority value, then the latest arrival (priority)."""

        def rank(item: tuple[int, Request]) -> tuple[float, ...]:
            index, request = item
            if self.policy is SchedulerPolicy.priority:
                return (request.priority, request.arrival_time, index)
            return (request.arrival_time, index)

        return max(enumerate(self.running), key=rank)[1]

    def _unschedule(self, request: Request, plan: _StepPlan) -> None:
        """Give back the budget of a request scheduled earlier in this step."""
        num_tokens = plan.num_scheduled_tokens.pop(request.request_id, None)
        if num_tokens is None:
            return
        plan.token_budget += num_tokens
        plan.running_reqs.remove(request)
        del plan.new_block_ids[request.request_id]
        plan.spec_decode_tokens.pop(request.request_id, None)

    def _preempt_request(self, request: Request) -> None:
        """Preemption is by recompute: free the KV cache and queue the request at the front."""
        self.kv_cache_manager.free(request)
        self.running.remove(request)
        request.status = RequestStatus.PREEMPTED
        request.num_computed_tokens = 0
        request.spec_token_ids = []
        self.waiting.prepend_request(request)
        self.num_preemptions += 1
        self._record_event(request, EngineCoreEventType.PREEMPTED)

    def _schedule_waiting(self, plan: _StepPlan) -> None:
        skipped: list[Request] = []
        while self.waiting and plan.token_budget > 0 and len(self.running) < self.max_num_seqs:
            request = self.waiting.peek_request()
            if request.status == RequestStatus.WAITING_FOR_FSM and not self._grammar_ready(request):
                if not request.is_finished():  # its grammar is still compiling
                    skipped.append(self.waiting.pop_request())
                continue
            if not self._lora_fits(request):  # waits until its adapter's turn
                skipped.append(self.waiting.pop_request())
                continue
            computed_blocks, num_hit_tokens = self.kv_cache_manager.get_computed_blocks(request)
            num_new = request.num_tokens - num_hit_tokens
            if self.enable_chunked_prefill:
                num_new = self._cap_num_new_tokens(num_new, plan.token_budget)
            elif num_new > plan.token_budget:
                break  # without chunking the whole prompt must fit this step
            new_block_ids = self.kv_cache_manager.allocate_slots(
                request, num_new, computed_blocks, num_hit_tokens
            )
            if new_block_ids is None:
                break
            self.waiting.pop_request()
            self._admit(request, num_hit_tokens)
            plan.add(request, num_new)
            plan.new_reqs.append(request)
        for request in reversed(skipped):  # back at the front, in their order
            self.waiting.prepend_request(request)

    def _lora_fits(self, request: Request) -> bool:
        """Whether the request's adapter is running already or a LoRA slot is left for it."""
        if not request.lora_int_id:
            return True
        running = {r.lora_int_id for r in self.running if r.lora_int_id}
        return request.lora_int_id in running or len(running) < self.max_loras

    def _grammar_ready(self, request: Request) -> bool:
        """Whether the request's matcher is ready; a grammar that failed to compile ends
        the request (the frontend validated it, so this is an engine-side fault)."""
        try:
            ready = self.structured_output_manager.is_grammar_ready(request)
        except Exception as e:
            logger.error("Request %s: grammar compilation failed: %s", request.request_id, e)
            self.finish_requests(request.request_id, RequestStatus.FINISHED_ABORTED)
            self._failed_outputs.append(
                EngineCoreOutput(request.request_id, [], finish_reason=FinishReason.ABORT)
            )
            return False
        if ready:
            request.status = RequestStatus.WAITING
        return ready

    def _admit(self, request: Request, num_hit_tokens: int) -> None:
        request.status = RequestStatus.RUNNING
        request.num_computed_tokens = num_hit_tokens
        if request.num_cached_tokens < 0:
            request.num_cached_tokens = num_hit_tokens
        self.running.append(request)
        self._record_event(request, EngineCoreEventType.SCHEDULED)

    def _make_output(self, plan: _StepPlan) -> SchedulerOutput:
        finished, self.finished_req_ids = self.finished_req_ids, set()
        structured = self._structured_requests_sampling(plan)
        return SchedulerOutput(
            scheduled_new_reqs=[self._new_request_data(r) for r in plan.new_reqs],
            scheduled_cached_reqs=self._cached_request_data(plan),
            num_scheduled_tokens=plan.num_scheduled_tokens,
            total_num_scheduled_tokens=sum(plan.num_scheduled_tokens.values()),
            finished_req_ids=finished,
            preempted_req_ids={r.request_id for r in plan.preempted},
            structured_output_request_ids=[r.request_id for r in structured],
            grammar_bitmask=(
                self.structured_output_manager.grammar_bitmask(structured) if structured else None
            ),
            scheduled_spec_decode_tokens=plan.spec_decode_tokens,
        )

    def _structured_requests_sampling(self, plan: _StepPlan) -> list[Request]:
        """The structured requests whose step ends in a sample (not a mid-prompt chunk): the
        only rows the bitmask needs. Called before num_computed_tokens advances."""
        return [
            request
            for request_id, num_tokens in plan.num_scheduled_tokens.items()
            if (request := self.requests[request_id]).use_structured_output
            and request.num_computed_tokens + num_tokens >= request.num_tokens
        ]

    def _new_request_data(self, request: Request) -> NewRequestData:
        return NewRequestData(
            req_id=request.request_id,
            prompt_token_ids=request.prompt_token_ids,
            sampling_params=request.sampling_params,
            block_ids=self.kv_cache_manager.get_block_ids(request.request_id),
            num_computed_tokens=request.num_computed_tokens,
            output_token_ids=list(request.output_token_ids),
            eos_token_id=request.eos_token_id,
            lora_request=request.lora_request,
        )

    def _cached_request_data(self, plan: _StepPlan) -> CachedRequestData:
        data = CachedRequestData()
        for request in plan.running_reqs:
            data.req_ids.append(request.request_id)
            data.resumed_from_preemption.append(False)
            data.new_token_ids.append(self._token_ids_to_compute(request, plan))
            data.new_block_ids.append(plan.new_block_ids[request.request_id] or None)
            data.num_computed_tokens.append(request.num_computed_tokens)
        return data

    def _token_ids_to_compute(self, request: Request, plan: _StepPlan) -> list[int]:
        if not self.send_token_ids:
            return []
        start = request.num_computed_tokens
        return request.all_token_ids[start : start + plan.num_scheduled_tokens[request.request_id]]

    # ---- results ----

    def update_from_output(
        self, scheduler_output: SchedulerOutput, model_runner_output: ModelRunnerOutput
    ) -> list[EngineCoreOutput]:
        """Append each request's sampled tokens, apply the stop checks, free finished requests."""
        outputs, self._failed_outputs = self._failed_outputs, []
        num_stopped = 0
        logprob_rows = _logprob_rows(model_runner_output)
        for request_id in scheduler_output.num_scheduled_tokens:
            request = self.requests.get(request_id)
            if request is None:  # aborted after it was scheduled
                continue
            index = model_runner_output.req_id_to_index[request_id]
            sampled = model_runner_output.sampled_token_ids[index]
            self._update_spec_decode(request, scheduler_output, sampled)
            output = self._update_request(
                request,
                sampled,
                _slice_logprobs(model_runner_output.logprobs, logprob_rows.get(request_id)),
                model_runner_output.prompt_logprobs_dict.get(request_id),
            )
            if output is not None:
                outputs.append(output)
                num_stopped += output.finished
            if model_runner_output.spec_token_ids is not None and not request.is_finished():
                request.spec_token_ids = list(model_runner_output.spec_token_ids[index])
        if num_stopped:
            self.running = [r for r in self.running if not r.is_finished()]
        return outputs

    def _update_spec_decode(
        self, request: Request, scheduler_output: SchedulerOutput, sampled: list[int]
    ) -> None:
        """Move num_computed_tokens back over the rejected drafts (their KV slots are reused
        by the next step) and count the acceptances."""
        request.spec_token_ids = []
        drafts = scheduler_output.scheduled_spec_decode_tokens.get(request.request_id)
        if not drafts:
            return
        num_accepted = max(len(sampled) - 1, 0)
        request.num_computed_tokens -= len(drafts) - num_accepted
        if self.spec_decoding_stats is not None:
            self.spec_decoding_stats.observe_draft(len(drafts), num_accepted)

    def _update_request(
        self,
        request: Request,
        sampled_token_ids: list[int],
        logprobs: LogprobsLists | None,
        prompt_logprobs: LogprobsTensors | None,
    ) -> EngineCoreOutput | None:
        if request.num_computed_tokens < request.num_tokens:
            sampled_token_ids = []  # a prefill chunk that is not the last samples nothing
        # A request recomputed after preemption has sent its prompt logprobs already.
        if request.num_output_tokens > 0:
            prompt_logprobs = None
        if request.use_structured_output and sampled_token_ids:
            # Before the stop checks, which free the matcher of a request that ends here.
            self.structured_output_manager.accept_tokens(request, sampled_token_ids)
        new_token_ids = self._append_until_stop(request, sampled_token_ids)
        if not new_token_ids and prompt_logprobs is None:
            return None
        if request.sampling_params.logprobs is None or logprobs is None or not new_token_ids:
            new_logprobs = None
        else:
            new_logprobs = _as_tuple(logprobs.slice(0, len(new_token_ids)))
        return EngineCoreOutput(
            request_id=request.request_id,
            new_token_ids=new_token_ids,
            new_logprobs=new_logprobs,
            new_prompt_logprobs=_as_tuple(prompt_logprobs.tolists()) if prompt_logprobs else None,
            finish_reason=request.get_finished_reason(),
            stop_reason=request.stop_reason,
            num_cached_tokens=max(request.num_cached_tokens, 0),
            events=request.take_events(),
        )

    def _append_until_stop(self, request: Request, sampled_token_ids: list[int]) -> list[int]:
        new_token_ids: list[int] = []
        for token_id in sampled_token_ids:
            request.append_output_token_ids(token_id)
            new_token_ids.append(token_id)
            if check_stop(request, self.max_request_len):
                self._free_request(request)
                break
        return new_token_ids


def _count_adapters(requests: Iterable[Request]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for request in requests:
        if request.lora_request is not None:
            name = request.lora_request.lora_name
            counts[name] = counts.get(name, 0) + 1
    return counts


def _logprob_rows(output: ModelRunnerOutput) -> dict[str, int]:
    """The first logprobs row of each request: rows follow req_ids, one per sampled token."""
    rows, row = {}, 0
    for request_id in output.req_ids:
        rows[request_id] = row
        row += len(output.sampled_token_ids[output.req_id_to_index[request_id]])
    return rows


def _slice_logprobs(logprobs: LogprobsLists | None, start: int | None) -> LogprobsLists | None:
    if logprobs is None or start is None:
        return None
    return logprobs.slice(start, len(logprobs.selected_token_ranks))


def _as_tuple(lists: LogprobsLists) -> LogprobsTuple:
    return (lists.logprob_token_ids, lists.logprobs, lists.selected_token_ranks)
