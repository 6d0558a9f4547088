"""Scheduler: token budget, chunked prefill, prefix hits, preemption, policies, aborts, stops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sched_harness import (
    EOS,
    Driver,
    check_all_free,
    check_invariants,
    make_config,
    make_request,
    reference_generate,
)

from vllm_hydra.config import SchedulerConfig, SchedulerPolicy, VllmConfig, compose_config
from vllm_hydra.core.request import RequestStatus
from vllm_hydra.core.sched_output import SchedulerOutput
from vllm_hydra.core.scheduler import Scheduler
from vllm_hydra.engine.messages import EngineCoreEventType, FinishReason
from vllm_hydra.outputs import LogprobsLists, LogprobsTensors, ModelRunnerOutput
from vllm_hydra.sampling_params import SamplingParams

TOKEN = 7  # a token that stops nothing


def _prompt(n: int, start: int = 10) -> list[int]:
    return [start + i % 50 for i in range(n)]


def _add(driver: Driver, request_id: str, prompt_len: int, **kwargs: object) -> None:
    kwargs.setdefault("ignore_eos", True)
    start = kwargs.pop("start", 10)
    request = make_request(request_id, _prompt(prompt_len, start), **kwargs)  # type: ignore[arg-type]
    driver.scheduler.add_request(request)


def _steps(driver: Driver, n: int) -> list[dict[str, int]]:
    return [dict(driver.step().num_scheduled_tokens) for _ in range(n)]


def _runner_output(
    scheduler: Scheduler, so: SchedulerOutput, tokens: dict[str, int] | None = None, **kwargs
) -> ModelRunnerOutput:
    """A model runner's answer: one token per request whose scheduled tokens end its prefill."""
    req_ids = list(so.num_scheduled_tokens)
    sampled = []
    for req_id in req_ids:
        request = scheduler.requests.get(req_id)
        done = request is None or request.num_computed_tokens >= request.num_tokens
        sampled.append([(tokens or {}).get(req_id, TOKEN)] if done else [])
    return ModelRunnerOutput(req_ids, {r: i for i, r in enumerate(req_ids)}, sampled, **kwargs)


def test_scheduler_from_a_composed_config(tmp_path: Path) -> None:
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 64,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 64,
        "torch_dtype": "float32",
        "eos_token_id": EOS,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    cfg = compose_config(
        [
            f"model.path={tmp_path}",
            "model.dtype=float32",
            "device=cpu",
            "load=dummy",
            "cache.block_size=16",
            "cache.num_blocks_override=8",
            "scheduler.max_num_batched_tokens=32",
            "scheduler.max_num_seqs=4",
        ]
    )
    driver = Driver.create(cfg, num_blocks=8)
    _add(driver, "a", 40, max_tokens=5)
    assert _steps(driver, 3) == [{"a": 32}, {"a": 8}, {"a": 1}]
    driver.run()
    assert len(driver.tokens["a"]) == 5
    check_all_free(driver.scheduler)


def test_needs_a_resolved_config() -> None:
    config = VllmConfig(scheduler=SchedulerConfig(max_num_batched_tokens=None))
    with pytest.raises(ValueError, match="resolved"):
        Scheduler(config, num_gpu_blocks=8)


def test_chunked_prefill_splits_a_long_prompt_by_the_budget() -> None:
    driver = Driver.create(make_config(max_model_len=128, max_num_batched_tokens=32), 64)
    _add(driver, "a", 100, max_tokens=3)
    assert _steps(driver, 6) == [{"a": 32}, {"a": 32}, {"a": 32}, {"a": 4}, {"a": 1}, {"a": 1}]
    first, *cached = driver.outputs[:4]
    assert [n.req_id for n in first.scheduled_new_reqs] == ["a"]
    assert first.scheduled_new_reqs[0].num_computed_tokens == 0
    assert len(first.scheduled_new_reqs[0].block_ids) == 8  # 32 tokens
    assert [so.scheduled_cached_reqs.num_computed_tokens for so in cached] == [[32], [64], [96]]
    assert [so.scheduled_cached_reqs.new_block_ids for so in cached] == [
        [[9, 10, 11, 12, 13, 14, 15, 16]],
        [[17, 18, 19, 20, 21, 22, 23, 24]],
        [[25]],
    ]
    assert len(driver.tokens["a"]) == 3
    assert driver.finished["a"].finish_reason is FinishReason.LENGTH
    assert driver.outputs[-1].scheduled_cached_reqs.new_block_ids == [None]


def test_running_requests_are_served_before_waiting_ones() -> None:
    driver = Driver.create(make_config(max_num_batched_tokens=32), 64)
    _add(driver, "a", 20, arrival_time=0)
    _add(driver, "b", 20, start=30, arrival_time=1)
    steps = _steps(driver, 3)
    assert steps[0] == {"a": 20, "b": 12}
    assert list(steps[1].items()) == [("a", 1), ("b", 8)]
    assert steps[2] == {"a": 1, "b": 1}


def test_long_prefill_token_threshold_caps_each_chunk() -> None:
    config = make_config(max_num_batched_tokens=64, long_prefill_token_threshold=16)
    driver = Driver.create(config, 64)
    _add(driver, "a", 40)
    _add(driver, "b", 40, start=30)
    steps = _steps(driver, 4)
    assert steps == [{"a": 16, "b": 16}, {"a": 16, "b": 16}, {"a": 8, "b": 8}, {"a": 1, "b": 1}]


def test_max_num_seqs_limits_running_requests() -> None:
    driver = Driver.create(make_config(max_num_seqs=2, max_num_batched_tokens=64), 64)
    for i in range(4):
        _add(driver, f"r{i}", 5, start=10 + i, arrival_time=i, max_tokens=2)
    assert _steps(driver, 1) == [{"r0": 5, "r1": 5}]
    stats = driver.scheduler.make_stats()
    assert (stats.num_running, stats.num_waiting) == (2, 2)
    assert _steps(driver, 2) == [{"r0": 1, "r1": 1}, {"r2": 5, "r3": 5}]
    assert driver.outputs[2].finished_req_ids == {"r0", "r1"}


@pytest.mark.parametrize("chunked", [True, False])
def test_prompt_that_does_not_fit_the_remaining_budget(chunked: bool) -> None:
    config = make_config(
        max_model_len=48, max_num_batched_tokens=48, enable_chunked_prefill=chunked
    )
    driver = Driver.create(config, 64)
    _add(driver, "a", 30, arrival_time=0)
    _add(driver, "b", 30, start=40, arrival_time=1)
    steps = _steps(driver, 2)
    if chunked:
        assert steps == [{"a": 30, "b": 18}, {"a": 1, "b": 12}]
    else:  # b waits for a step whose budget holds its whole prompt
        assert steps == [{"a": 30}, {"a": 1, "b": 30}]


def test_prefix_cache_hit_from_a_finished_request() -> None:
    driver = Driver.create(make_config(), 64)
    _add(driver, "a", 20, max_tokens=2)
    driver.run()
    request = make_request("b", [*_prompt(20), 60, 61, 62], ignore_eos=True, max_tokens=2)
    driver.scheduler.add_request(request)
    so = driver.step()
    (new,) = so.scheduled_new_reqs
    assert new.num_computed_tokens == 20 and so.num_scheduled_tokens == {"b": 3}
    driver.run()
    assert driver.finished["b"].num_cached_tokens == 20
    assert driver.finished["a"].num_cached_tokens == 0
    stats = driver.scheduler.make_stats()
    assert (stats.prefix_cache_queries, stats.prefix_cache_hits) == (20 + 23, 20)


def test_prefix_cache_hit_within_one_step() -> None:
    """b reuses a's blocks in the step that computes them (the runner writes before reading)."""
    driver = Driver.create(make_config(), 64)
    _add(driver, "a", 20)
    _add(driver, "b", 20)
    so = driver.step()
    assert so.num_scheduled_tokens == {"a": 20, "b": 4}  # hit capped at 19 -> 16 tokens
    a_blocks, b_blocks = (n.block_ids for n in so.scheduled_new_reqs)
    assert a_blocks[:4] == b_blocks[:4] and a_blocks[4] != b_blocks[4]
    driver.run()
    assert driver.tokens["a"] == driver.tokens["b"]
    check_all_free(driver.scheduler)


def test_prefix_caching_off_recomputes_everything() -> None:
    driver = Driver.create(make_config(enable_prefix_caching=False), 64)
    _add(driver, "a", 20)
    _add(driver, "b", 20)
    assert driver.step().num_scheduled_tokens == {"a": 20, "b": 12}


def _preemption_driver(policy: SchedulerPolicy, caching: bool = True) -> Driver:
    config = make_config(policy=policy, enable_prefix_caching=caching)
    return Driver.create(config, num_blocks=7)  # 6 blocks of 4 tokens


@pytest.mark.parametrize("caching", [True, False])
def test_preemption_under_a_tiny_kv_cache_and_resume(caching: bool) -> None:
    driver = _preemption_driver(SchedulerPolicy.fcfs, caching)
    _add(driver, "a", 10, arrival_time=0, max_tokens=4)
    _add(driver, "b", 10, start=30, arrival_time=1, max_tokens=6)
    # 3 blocks each; both need a 4th block to compute position 12.
    steps = _steps(driver, 4)
    assert steps[:3] == [{"a": 10, "b": 10}, {"a": 1, "b": 1}, {"a": 1, "b": 1}]
    preempting = driver.outputs[3]
    assert preempting.preempted_req_ids == {"b"} and steps[3] == {"a": 1}
    b = driver.scheduler.requests["b"]
    assert b.status == RequestStatus.PREEMPTED and b.num_computed_tokens == 0
    assert driver.scheduler.waiting.peek_request() is b
    outputs_before = list(b.output_token_ids)
    assert len(outputs_before) == 3
    driver.run()
    resumed = [so for so in driver.outputs if any(n.req_id == "b" for n in so.scheduled_new_reqs)]
    (new_b,) = resumed[1].scheduled_new_reqs
    assert new_b.output_token_ids == outputs_before
    # b's first two blocks survived in the prefix cache (its tail block was reused first).
    assert new_b.num_computed_tokens == (8 if caching else 0)
    assert driver.finished["b"].num_cached_tokens == 0  # set by its first admission only
    assert driver.scheduler.make_stats().num_preemptions == 1
    # The events the frontend's latency metrics are computed from, in order.
    queued, scheduled, preempted = list(EngineCoreEventType)
    assert driver.events["a"] == [queued, scheduled]
    assert driver.events["b"] == [queued, scheduled, preempted, scheduled]
    assert driver.finished["b"].finish_reason is FinishReason.LENGTH
    assert len(driver.tokens["b"]) == 6
    check_all_free(driver.scheduler)


def test_preemption_resumes_with_the_same_tokens_as_an_unconstrained_run() -> None:
    def run(num_blocks: int) -> tuple[Driver, dict[str, list[int]]]:
        driver = Driver.create(make_config(max_num_batched_tokens=16), num_blocks)
        for i in range(6):
            _add(driver, f"r{i}", 6 + 3 * i, start=10 + i, arrival_time=i, max_tokens=12)
        driver.run()
        return driver, driver.tokens

    tight, tight_tokens = run(num_blocks=12)
    roomy, roomy_tokens = run(num_blocks=200)
    assert tight.scheduler.num_preemptions > 0 and roomy.scheduler.num_preemptions == 0
    assert tight_tokens == roomy_tokens
    check_all_free(tight.scheduler)


def test_fcfs_admits_in_arrival_order() -> None:
    config = make_config(max_num_seqs=1, policy=SchedulerPolicy.fcfs)
    driver = Driver.create(config, 64)
    for name, arrival, priority in [("low", 0, 2), ("high", 1, 0), ("mid", 2, 1)]:
        _add(driver, name, 4, arrival_time=arrival, priority=priority, max_tokens=1)
    driver.run()
    admitted = [n.req_id for so in driver.outputs for n in so.scheduled_new_reqs]
    assert admitted == ["low", "high", "mid"]


def test_priority_admits_lowest_value_first() -> None:
    config = make_config(max_num_seqs=1, policy=SchedulerPolicy.priority)
    driver = Driver.create(config, 64)
    for name, arrival, priority in [("low", 0, 2), ("high", 1, 0), ("mid", 2, 1), ("mid2", 3, 1)]:
        _add(driver, name, 4, arrival_time=arrival, priority=priority, max_tokens=1)
    driver.run()
    admitted = [n.req_id for so in driver.outputs for n in so.scheduled_new_reqs]
    assert admitted == ["high", "mid", "mid2", "low"]


@pytest.mark.parametrize("policy", [SchedulerPolicy.fcfs, SchedulerPolicy.priority])
def test_preemption_victim_follows_the_policy(policy: SchedulerPolicy) -> None:
    driver = Driver.create(make_config(policy=policy), num_blocks=5)  # 4 blocks of 4 tokens
    _add(driver, "b", 6, arrival_time=0, priority=1, max_tokens=10)  # early, less urgent
    driver.step()
    _add(driver, "a", 3, start=30, arrival_time=1, priority=0, max_tokens=4)
    steps = _steps(driver, 3)
    assert steps[:2] == [{"b": 1, "a": 3}, {"b": 1, "a": 1}]
    # Step 4: b takes the last block for position 8, then a needs one for position 4.
    so = driver.outputs[-1]
    if policy is SchedulerPolicy.priority:
        # b yields although it was scheduled first this step: its budget is given back.
        assert so.preempted_req_ids == {"b"} and steps[2] == {"a": 1}
        assert so.scheduled_cached_reqs.req_ids == ["a"] and so.total_num_scheduled_tokens == 1
    else:
        assert so.preempted_req_ids == {"a"} and steps[2] == {"b": 1}
    driver.run()
    assert driver.scheduler.num_preemptions == 1
    assert len(driver.tokens["a"]) == 4 and len(driver.tokens["b"]) == 10
    check_all_free(driver.scheduler)


def test_preempting_a_request_scheduled_earlier_in_the_step_returns_its_budget() -> None:
    config = make_config(policy=SchedulerPolicy.priority, max_num_batched_tokens=3)
    driver = Driver.create(config, num_blocks=5)  # 4 blocks of 4 tokens
    _add(driver, "b", 1, arrival_time=0, priority=1, max_tokens=8)
    driver.step()
    _add(driver, "a", 1, start=30, arrival_time=1, priority=0, max_tokens=8)
    _add(driver, "c", 6, start=50, arrival_time=2, priority=0, max_tokens=8)
    steps = _steps(driver, 5)
    assert steps[:4] == [{"b": 1, "a": 1, "c": 1}] * 4
    # b took its step's token, then a needed b's blocks: b's token goes to c's prefill.
    assert driver.outputs[-1].preempted_req_ids == {"b"}
    assert steps[4] == {"a": 1, "c": 2}
    driver.run()
    assert {r: len(t) for r, t in driver.tokens.items()} == {"a": 8, "b": 8, "c": 8}
    check_all_free(driver.scheduler)


def test_abort_waiting_running_and_preempted_requests_frees_blocks() -> None:
    driver = Driver.create(make_config(max_num_seqs=2), 64)
    for i in range(3):
        _add(driver, f"r{i}", 9, start=10 + i, arrival_time=i)
    driver.step()
    scheduler = driver.scheduler
    assert len(scheduler.kv_cache_manager.get_block_ids("r0")) == 3
    scheduler.finish_requests(["r0", "r2", "unknown"], RequestStatus.FINISHED_ABORTED)
    assert scheduler.kv_cache_manager.get_block_ids("r0") == []
    assert [r.request_id for r in scheduler.running] == ["r1"] and not scheduler.waiting
    check_invariants(scheduler)
    so = driver.step()
    assert so.finished_req_ids == {"r0", "r2"} and set(so.num_scheduled_tokens) == {"r1"}
    scheduler.finish_requests("r1", RequestStatus.FINISHED_ABORTED)
    assert not scheduler.has_unfinished_requests()
    check_all_free(scheduler)
    assert "r1" not in driver.finished  # an aborted request produces no output


def test_abort_between_schedule_and_update_drops_the_result() -> None:
    driver = Driver.create(make_config(), 64)
    _add(driver, "a", 5)
    _add(driver, "b", 5, start=30)
    scheduler = driver.scheduler
    so = scheduler.schedule()
    output = driver.runner.execute_model(so)
    scheduler.finish_requests("a", RequestStatus.FINISHED_ABORTED)
    outs = scheduler.update_from_output(so, output)
    assert [o.request_id for o in outs] == ["b"]
    assert scheduler.schedule().finished_req_ids == {"a"}


def test_abort_of_a_preempted_request() -> None:
    driver = _preemption_driver(SchedulerPolicy.fcfs)
    _add(driver, "a", 10, arrival_time=0)
    _add(driver, "b", 10, start=30, arrival_time=1)
    _steps(driver, 4)
    assert driver.scheduler.requests["b"].status == RequestStatus.PREEMPTED
    driver.scheduler.finish_requests("b", RequestStatus.FINISHED_ABORTED)
    assert not driver.scheduler.waiting
    driver.run()
    check_all_free(driver.scheduler)


def test_finish_requests_needs_a_finished_status() -> None:
    scheduler = Scheduler(make_config(), 8)
    with pytest.raises(ValueError):
        scheduler.finish_requests("a", RequestStatus.RUNNING)


@pytest.mark.parametrize(
    ("params", "tokens", "reason", "stop_reason"),
    [
        ({}, [5, EOS], FinishReason.STOP, None),
        ({"ignore_eos": True, "max_tokens": 3}, [5, EOS, 6], FinishReason.LENGTH, None),
        ({"stop_token_ids": [9]}, [5, 9], FinishReason.STOP, 9),
        ({"min_tokens": 3, "stop_token_ids": [9]}, [EOS, 9, 9], FinishReason.STOP, 9),
        ({"max_tokens": 2}, [5, 6], FinishReason.LENGTH, None),
        ({"max_tokens": None}, [5] * 6, FinishReason.LENGTH, None),  # 10 + 6 = max_model_len
    ],
)
def test_stop_conditions_end_requests_and_free_their_blocks(
    params: dict, tokens: list[int], reason: FinishReason, stop_reason: int | None
) -> None:
    scheduler = Scheduler(make_config(max_model_len=16), 16)
    scheduler.add_request(make_request("a", _prompt(10), **params))
    outs = []
    for token in tokens:
        so = scheduler.schedule()
        outs += scheduler.update_from_output(so, _runner_output(scheduler, so, {"a": token}))
    assert [o.new_token_ids for o in outs] == [[t] for t in tokens]
    assert [o.finish_reason for o in outs] == [None] * (len(tokens) - 1) + [reason]
    assert outs[-1].stop_reason == stop_reason
    assert not scheduler.has_unfinished_requests() and not scheduler.running
    check_all_free(scheduler)
    assert scheduler.schedule().finished_req_ids == {"a"}
    assert scheduler.schedule().finished_req_ids == set()


def _early_eos_starts(n: int) -> list[int]:
    """Prompt starts whose greedy continuation hits EOS within 3 tokens."""
    starts = []
    for start in range(1000):
        out, reason, _ = reference_generate(_prompt(6, start), SamplingParams(), EOS, 24)
        if reason is FinishReason.STOP and len(out) <= 3:
            starts.append(start)
        if len(starts) == n:
            return starts
    raise AssertionError("no early EOS found")


def test_min_tokens_lets_a_request_run_past_eos_up_to_max_model_len() -> None:
    driver = Driver.create(make_config(max_model_len=24), 64)
    starts = _early_eos_starts(4)
    for start in starts:
        _add(driver, f"r{start}", 6, start=start, ignore_eos=False, min_tokens=5, max_tokens=None)
    driver.run()
    params = SamplingParams(min_tokens=5, max_tokens=None)
    for start in starts:
        tokens = driver.tokens[f"r{start}"]
        assert EOS in tokens[:3] and len(tokens) >= 5  # EOS came early but did not stop it
        expected, reason, _ = reference_generate(_prompt(6, start), params, EOS, 24)
        assert tokens == expected
        assert driver.finished[f"r{start}"].finish_reason is reason
        if reason is FinishReason.LENGTH:
            assert len(tokens) == 24 - 6


def test_logprobs_rows_follow_the_requests_that_sampled() -> None:
    config = make_config(max_num_batched_tokens=16, long_prefill_token_threshold=8)
    scheduler = Scheduler(config, 64)
    scheduler.add_request(make_request("c", _prompt(20, 30), logprobs=1))  # 8 of 20 tokens
    scheduler.add_request(make_request("a", _prompt(4), logprobs=1))
    scheduler.add_request(make_request("b", _prompt(4, 20)))
    so = scheduler.schedule()
    assert so.num_scheduled_tokens == {"c": 8, "a": 4, "b": 4}
    rows = LogprobsLists([[7, 1], [7, 2]], [[-0.1, -2.0], [-0.2, -3.0]], [1, 1])
    outs = scheduler.update_from_output(so, _runner_output(scheduler, so, logprobs=rows))
    by_id = {o.request_id: o for o in outs}
    assert set(by_id) == {"a", "b"}  # c is mid-prefill: no token, no row
    assert by_id["a"].new_logprobs == ([[7, 1]], [[-0.1, -2.0]], [1])
    assert by_id["b"].new_logprobs is None  # b did not ask


def test_a_token_sampled_mid_prefill_is_dropped() -> None:
    scheduler = Scheduler(make_config(max_num_batched_tokens=8), 64)
    scheduler.add_request(make_request("a", _prompt(12)))
    so = scheduler.schedule()
    output = ModelRunnerOutput(["a"], {"a": 0}, [[TOKEN]])  # a runner that samples anyway
    assert scheduler.update_from_output(so, output) == []
    assert scheduler.requests["a"].output_token_ids == []


def test_prompt_logprobs_are_forwarded_per_chunk() -> None:
    scheduler = Scheduler(make_config(max_num_batched_tokens=8), 64)
    scheduler.add_request(make_request("a", _prompt(12), prompt_logprobs=0, max_tokens=1))
    chunks = []
    for num_rows in (8, 3):
        so = scheduler.schedule()
        lp = LogprobsTensors(
            torch.zeros(num_rows, 1, dtype=torch.int64),
            torch.zeros(num_rows, 1),
            torch.ones(num_rows, dtype=torch.int64),
        )
        outs = scheduler.update_from_output(
            so, _runner_output(scheduler, so, prompt_logprobs_dict={"a": lp})
        )
        (out,) = outs
        chunks.append((len(out.new_prompt_logprobs[2]), out.new_token_ids))
    assert chunks == [(8, []), (3, [TOKEN])]


def test_prompt_logprobs_are_not_sent_again_after_preemption() -> None:
    scheduler = Scheduler(make_config(), num_gpu_blocks=7)  # 6 blocks of 4 tokens
    scheduler.add_request(make_request("a", _prompt(10), ignore_eos=True, max_tokens=4))
    params = {"ignore_eos": True, "max_tokens": 6, "prompt_logprobs": 0}
    scheduler.add_request(make_request("b", _prompt(10, 30), arrival_time=1, **params))
    ids = torch.zeros(1, 1, dtype=torch.int64)
    one_row = LogprobsTensors(ids, torch.zeros(1, 1), torch.ones(1, dtype=torch.int64))
    sent = []
    while scheduler.has_unfinished_requests():
        so = scheduler.schedule()
        # The runner computes prompt logprobs whenever it runs b's prompt, resumed or not.
        prompt_lp = {"b": one_row} if any(n.req_id == "b" for n in so.scheduled_new_reqs) else {}
        outs = scheduler.update_from_output(
            so, _runner_output(scheduler, so, prompt_logprobs_dict=prompt_lp)
        )
        sent += [o.request_id for o in outs if o.new_prompt_logprobs is not None]
    assert scheduler.num_preemptions == 1
    assert sent == ["b"]


def test_a_request_that_outgrows_the_whole_kv_cache_is_length_capped() -> None:
    driver = Driver.create(make_config(max_model_len=64), num_blocks=5)  # 16 tokens of KV
    _add(driver, "a", 10, max_tokens=None)
    driver.run()
    # 17 tokens: the last one never needs KV, so 16 slots hold the whole request.
    assert len(driver.tokens["a"]) == 7
    assert driver.finished["a"].finish_reason is FinishReason.LENGTH
    assert driver.scheduler.num_preemptions == 0


def test_add_request_rejects_what_could_never_run() -> None:
    scheduler = Scheduler(make_config(max_model_len=64, block_size=4), num_gpu_blocks=5)
    scheduler.add_request(make_request("a", [1]))
    with pytest.raises(ValueError, match="already"):
        scheduler.add_request(make_request("a", [1]))
    with pytest.raises(ValueError, match="empty"):
        scheduler.add_request(make_request("b", []))
    with pytest.raises(ValueError, match="max_model_len"):
        scheduler.add_request(make_request("c", [1] * 65))
    with pytest.raises(ValueError, match="KV cache"):
        scheduler.add_request(make_request("d", [1] * 17))  # 5 blocks of the 4 usable
    assert scheduler.get_num_unfinished_requests() == 1


def test_stats_and_reset_prefix_cache() -> None:
    driver = Driver.create(make_config(), 17)
    _add(driver, "a", 10, max_tokens=3)
    driver.step()
    stats = driver.scheduler.make_stats()
    assert (stats.num_running, stats.num_waiting) == (1, 0)
    assert stats.kv_cache_usage == pytest.approx(3 / 16)
    assert not driver.scheduler.reset_prefix_cache()
    driver.run()
    assert driver.scheduler.reset_prefix_cache()
    _add(driver, "b", 10)
    assert driver.step().scheduled_new_reqs[0].num_computed_tokens == 0
