"""Property tests: any mix of configs, arrivals and aborts yields the reference tokens, respects
the step limits, makes progress every step, and leaves every block free with ref_cnt 0."""

from __future__ import annotations

from dataclasses import dataclass, replace

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sched_harness import (
    EOS,
    VOCAB_SIZE,
    Driver,
    check_all_free,
    make_config,
    make_request,
    reference_generate,
)

from vllm_hydra.config import SchedulerPolicy, VllmConfig
from vllm_hydra.core.kv_cache_manager import cdiv
from vllm_hydra.core.request import RequestStatus


@dataclass
class Arrival:
    step: int
    request_id: str
    prompt: list[int]
    params: dict
    priority: int


@dataclass
class Scenario:
    config: VllmConfig
    num_blocks: int
    arrivals: list[Arrival]
    aborts: list[tuple[int, str]]  # (step, request id)


@st.composite
def configs(draw: st.DrawFn) -> tuple[VllmConfig, int]:
    block_size = draw(st.sampled_from([1, 2, 4, 8]))
    max_model_len = draw(st.integers(8, 40))
    chunked = draw(st.booleans())
    # Without chunking the budget must hold a whole prompt (a config rule checks this).
    budget = draw(st.integers(4 if chunked else max_model_len, 48))
    config = make_config(
        block_size=block_size,
        max_model_len=max_model_len,
        max_num_seqs=draw(st.integers(1, 5)),
        max_num_batched_tokens=budget,
        enable_chunked_prefill=chunked,
        long_prefill_token_threshold=draw(st.sampled_from([0, 0, 1, 3, 8])),
        enable_prefix_caching=draw(st.booleans()),
        policy=draw(st.sampled_from(list(SchedulerPolicy))),
    )
    # Around just enough for one request of max_model_len tokens plus the null block, often
    # exactly that (it forces preemption), sometimes one block less (requests that outgrow the
    # whole cache are length-capped).
    min_blocks = cdiv(max_model_len, block_size) + 1
    num_blocks = st.integers(max(min_blocks - 1, 2), 3 * min_blocks)
    return config, draw(st.one_of(st.just(min_blocks), num_blocks))


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    config, num_blocks = draw(configs())
    # Prompts fit max_model_len and the cache (add_request refuses others).
    cache_tokens = (num_blocks - 1) * config.cache.block_size
    max_prompt_len = min(config.model.max_model_len or 0, cache_tokens)
    # A few shared prefixes make prefix-cache hits likely.
    tokens = st.integers(3, VOCAB_SIZE - 1)
    prefixes = draw(st.lists(st.lists(tokens, max_size=max_prompt_len), min_size=1, max_size=3))
    arrivals = []
    for i in range(draw(st.integers(1, 6))):
        prefix = draw(st.sampled_from(prefixes))
        prompt = (prefix + draw(st.lists(tokens, max_size=8)))[:max_prompt_len] or [3]
        params = {
            "max_tokens": draw(st.one_of(st.none(), st.integers(1, 12))),
            "min_tokens": draw(st.integers(0, 3)),
            "ignore_eos": draw(st.booleans()),
            "stop_token_ids": draw(st.lists(tokens, max_size=2)),
        }
        if params["max_tokens"] is not None:
            params["min_tokens"] = min(params["min_tokens"], params["max_tokens"])
        step, priority = draw(st.integers(0, 6)), draw(st.integers(0, 2))
        arrivals.append(Arrival(step, f"r{i}", prompt, params, priority))
    aborts = draw(st.lists(st.tuples(st.integers(0, 30), st.sampled_from(arrivals)), max_size=2))
    return Scenario(config, num_blocks, arrivals, [(s, a.request_id) for s, a in aborts])


def _run(scenario: Scenario) -> tuple[Driver, set[str]]:
    driver = Driver.create(scenario.config, scenario.num_blocks)
    scheduler, aborted = driver.scheduler, set()
    last_event = max([a.step for a in scenario.arrivals] + [s for s, _ in scenario.aborts])
    for step in range(3000):
        for a in scenario.arrivals:
            if a.step == step:
                scheduler.add_request(
                    make_request(
                        a.request_id, a.prompt, arrival_time=step, priority=a.priority, **a.params
                    )
                )
        for abort_step, request_id in scenario.aborts:
            if abort_step == step and request_id in scheduler.requests:
                scheduler.finish_requests(request_id, RequestStatus.FINISHED_ABORTED)
                aborted.add(request_id)
        if not scheduler.has_unfinished_requests():
            if step > last_event:
                return driver, aborted
            continue
        so = driver.step()
        assert so.total_num_scheduled_tokens > 0, "a step with work to do scheduled nothing"
    raise AssertionError("requests did not finish")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_any_schedule_gives_the_reference_tokens_and_frees_every_block(scenario: Scenario) -> None:
    driver, aborted = _run(scenario)
    check_reference_outputs(driver, scenario, aborted)
    # Every finished or aborted request was reported to the runner, which now holds nothing.
    driver.step()
    assert not driver.runner.states


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs(), st.data())
def test_tight_cache_preempts_and_still_completes(config_blocks, data: st.DataObject) -> None:
    """Two requests that fit the cache side by side only while short: one is preempted, and
    both (and a third) still complete with the reference tokens."""
    config, _ = config_blocks
    block_size, max_model_len = config.cache.block_size, config.model.max_model_len or 0
    num_blocks = cdiv(max_model_len, block_size) + 1
    assume(max_model_len >= 4 * block_size)
    config = replace(config, scheduler=replace(config.scheduler, max_num_seqs=3))
    prompt_len = data.draw(st.integers(1, max_model_len // 2 - block_size))
    driver = Driver.create(config, num_blocks)
    prompts = [[3 + (i * 7 + j) % (VOCAB_SIZE - 3) for j in range(prompt_len)] for i in range(3)]
    for i, prompt in enumerate(prompts):
        request = make_request(f"r{i}", prompt, arrival_time=i, ignore_eos=True, max_tokens=None)
        driver.scheduler.add_request(request)
    driver.run(max_steps=3000)
    assert driver.scheduler.num_preemptions > 0
    for i, prompt in enumerate(prompts):
        params = make_request("x", prompt, ignore_eos=True, max_tokens=None).sampling_params
        assert driver.tokens[f"r{i}"] == reference_generate(prompt, params, EOS, max_model_len)[0]
        assert len(driver.tokens[f"r{i}"]) == max_model_len - prompt_len
    check_all_free(driver.scheduler)


def check_reference_outputs(driver: Driver, scenario: Scenario, aborted: set[str]) -> None:
    """Each request's tokens and finish reason are the reference's (an aborted one's tokens a
    prefix of them, and never reported finished), and every KV block is free again."""
    max_request_len = driver.scheduler.max_request_len
    for a in scenario.arrivals:
        request = make_request(a.request_id, a.prompt, **a.params)
        expected, reason, stop_reason = reference_generate(
            a.prompt, request.sampling_params, EOS, max_request_len
        )
        got = driver.tokens.get(a.request_id, [])
        if a.request_id in aborted:
            assert expected[: len(got)] == got
            assert a.request_id not in driver.finished
            continue
        assert got == expected
        finished = driver.finished[a.request_id]
        assert (finished.finish_reason, finished.stop_reason) == (reason, stop_reason)
    check_all_free(driver.scheduler)
