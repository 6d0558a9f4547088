"""Speculative decoding in the scheduler, against a fake runner that verifies drafts exactly:
any mix of configs, arrivals and aborts (chunked prefill, prefix caching, preemption, max_tokens,
EOS and stop ids) yields the reference tokens of decoding without drafts, never schedules a
draft that could overshoot, reuses the KV slots of rejected drafts and caches only blocks of
accepted tokens (the fake runner checks every context it attends to)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace

from hypothesis import HealthCheck, given, settings
from sched_harness import (
    EOS,
    VOCAB_SIZE,
    Driver,
    FakeModelRunner,
    check_all_free,
    make_config,
    make_request,
    next_token,
    reference_generate,
)
from test_scheduler_properties import Scenario, check_reference_outputs, scenarios

from vllm_hydra.config import SpeculativeConfig, SpeculativeMethod, VllmConfig
from vllm_hydra.core.request import RequestStatus
from vllm_hydra.core.sched_output import SchedulerOutput
from vllm_hydra.core.scheduler import Scheduler
from vllm_hydra.outputs import ModelRunnerOutput

K = 3


def _draft(context: list[int]) -> list[int]:
    """The fake proposer: the true continuation, with a wrong token at some positions (a
    function of the context length), so drafts are partly accepted."""
    context, out = list(context), []
    for _ in range(K):
        token = next_token(context)
        if zlib.crc32(len(context).to_bytes(4, "little")) % 3 == 0:
            token = (token + 1) % VOCAB_SIZE
        out.append(token)
        context.append(token)
    return out


@dataclass
class SpecFakeModelRunner(FakeModelRunner):
    """Writes the drafts' KV with the step's tokens, then verifies them greedily: accepted
    while equal to the fake model's next token, then one more token."""

    def execute_model(self, so: SchedulerOutput) -> ModelRunnerOutput:
        self._update_states(so)
        drafts = so.scheduled_spec_decode_tokens
        for req_id, num_tokens in so.num_scheduled_tokens.items():
            state, draft = self.states[req_id], drafts.get(req_id, [])
            assert len(draft) < num_tokens
            if draft:  # the drafts are the last scheduled tokens, after the last known one
                assert state.num_computed_tokens + num_tokens == len(state.token_ids) + len(draft)
            state.token_ids.extend(draft)
            self._write(state, num_tokens)
        req_ids = list(so.num_scheduled_tokens)
        sampled = [self._verify(self.states[r], drafts.get(r, [])) for r in req_ids]
        spec = [
            _draft(self.states[r].token_ids) if out else []
            for r, out in zip(req_ids, sampled, strict=True)
        ]
        index = {r: i for i, r in enumerate(req_ids)}
        return ModelRunnerOutput(req_ids, index, sampled, spec_token_ids=spec)

    def _verify(self, state, draft: list[int]) -> list[int]:
        end = state.num_computed_tokens
        context = [self.slots.get(self._slot(state, p)) for p in range(end)]
        assert context == state.token_ids[:end], "KV cache holds the wrong tokens"
        if end < len(state.token_ids):  # a prefill chunk that is not the last
            assert not draft
            return []
        committed = state.token_ids[: len(state.token_ids) - len(draft)]
        out = []
        for token in draft:
            if token != next_token(committed):
                break
            committed.append(token)
            out.append(token)
        out.append(next_token(committed))
        committed.append(out[-1])
        state.token_ids = committed
        state.num_computed_tokens -= len(draft) - (len(out) - 1)
        return out


def _spec(config: VllmConfig, **fields: object) -> VllmConfig:
    spec = SpeculativeConfig(method=SpeculativeMethod.ngram, num_speculative_tokens=K, **fields)
    return replace(config, speculative=spec)


def _driver(config: VllmConfig, num_blocks: int) -> Driver:
    runner = SpecFakeModelRunner(num_blocks, config.cache.block_size)
    return Driver(Scheduler(_spec(config), num_blocks), runner)


def _check_no_overshoot(scheduler: Scheduler, so: SchedulerOutput) -> None:
    for req_id, draft in so.scheduled_spec_decode_tokens.items():
        request = scheduler.requests[req_id]
        assert 0 < len(draft) <= K
        room = scheduler.max_request_len - request.num_tokens
        if request.max_tokens is not None:
            room = min(room, request.max_tokens - request.num_output_tokens)
        assert len(draft) + 1 <= room, "a step could emit more tokens than the request may"


def _run(scenario: Scenario) -> tuple[Driver, set[str]]:
    driver = _driver(scenario.config, scenario.num_blocks)
    scheduler, aborted = driver.scheduler, set()
    last_event = max([a.step for a in scenario.arrivals] + [s for s, _ in scenario.aborts])
    for step in range(3000):
        for a in scenario.arrivals:
            if a.step == step:
                request = make_request(
                    a.request_id, a.prompt, arrival_time=step, priority=a.priority, **a.params
                )
                scheduler.add_request(request)
        for abort_step, request_id in scenario.aborts:
            if abort_step == step and request_id in scheduler.requests:
                scheduler.finish_requests(request_id, RequestStatus.FINISHED_ABORTED)
                aborted.add(request_id)
        if not scheduler.has_unfinished_requests():
            if step > last_event:
                return driver, aborted
            continue
        so = scheduler.schedule()
        _check_no_overshoot(scheduler, so)
        driver.outputs.append(so)
        for out in scheduler.update_from_output(so, driver.runner.execute_model(so)):
            driver.tokens.setdefault(out.request_id, []).extend(out.new_token_ids)
            if out.finished:
                driver.finished[out.request_id] = out
        assert so.total_num_scheduled_tokens > 0
    raise AssertionError("requests did not finish")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_speculation_gives_the_reference_tokens_and_frees_every_block(scenario: Scenario) -> None:
    driver, aborted = _run(scenario)
    check_reference_outputs(driver, scenario, aborted)


def test_drafts_are_verified_partly_accepted_and_counted() -> None:
    config = make_config(max_model_len=64, max_num_batched_tokens=32, block_size=4)
    driver = _driver(config, num_blocks=64)
    prompts = [[3 + (7 * i + j) % 50 for j in range(5 + i)] for i in range(4)]
    for i, prompt in enumerate(prompts):
        driver.scheduler.add_request(
            make_request(f"r{i}", prompt, ignore_eos=True, max_tokens=20, arrival_time=i)
        )
    driver.run()
    for i, prompt in enumerate(prompts):
        params = make_request("x", prompt, ignore_eos=True, max_tokens=20).sampling_params
        assert driver.tokens[f"r{i}"] == reference_generate(prompt, params, EOS, 64)[0]
    stats = driver.scheduler.make_stats().spec_decoding_stats
    assert stats is not None and stats.num_drafts > 0
    assert 0 < stats.num_accepted_tokens < stats.num_draft_tokens
    assert stats.num_accepted_tokens_per_pos[0] >= stats.num_accepted_tokens_per_pos[-1] > 0
    assert sum(stats.num_accepted_tokens_per_pos) == stats.num_accepted_tokens
    # Each decode step emits 1 + accepted tokens: fewer steps than tokens.
    steps_with_drafts = sum(1 for so in driver.outputs if so.scheduled_spec_decode_tokens)
    assert steps_with_drafts > 0
    assert len(driver.outputs) < sum(len(t) for t in driver.tokens.values())
    check_all_free(driver.scheduler)


def test_disable_by_batch_size_stops_drafts_at_large_batch() -> None:
    config = make_config(max_model_len=64, max_num_batched_tokens=64, block_size=4)
    scheduler = Scheduler(_spec(config, disable_by_batch_size=2), 64)
    driver = Driver(scheduler, SpecFakeModelRunner(64, 4))
    for i in range(3):
        scheduler.add_request(make_request(f"r{i}", [5, 6, 7 + i], ignore_eos=True, max_tokens=6))
    driver.run()
    assert not any(so.scheduled_spec_decode_tokens for so in driver.outputs)
    one = Driver(Scheduler(_spec(config, disable_by_batch_size=2), 64), SpecFakeModelRunner(64, 4))
    one.scheduler.add_request(make_request("r", [5, 6, 7], ignore_eos=True, max_tokens=12))
    one.run()
    assert any(so.scheduled_spec_decode_tokens for so in one.outputs)
