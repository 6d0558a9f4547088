"""The stat pieces without an engine: IterationStats turns engine events and step timestamps
into latencies, the logging logger's idle rule, and Prometheus counters from scheduler totals
(two loggers in one process never clash)."""

from __future__ import annotations

import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from vllm_hydra.engine.messages import (
    EngineCoreEvent,
    EngineCoreEventType,
    EngineCoreOutput,
    FinishReason,
)
from vllm_hydra.metrics.loggers import LoggingStatLogger
from vllm_hydra.metrics.prometheus import PrometheusStatLogger, build_1_2_5_buckets
from vllm_hydra.metrics.stats import IterationStats, RequestStateStats, SchedulerStats

ARRIVAL = 1000.0  # wall clock


def _output(num_tokens: int, *events: tuple[EngineCoreEventType, float]) -> EngineCoreOutput:
    return EngineCoreOutput(
        "r", list(range(num_tokens)), events=[EngineCoreEvent(t, ts) for t, ts in events] or None
    )


def _step(req: RequestStateStats, output: EngineCoreOutput, engine_ts: float) -> IterationStats:
    stats = IterationStats(iteration_timestamp=ARRIVAL + engine_ts)
    stats.update_from_output(output, engine_ts, prompt_len=7, req_stats=req)
    return stats


def test_iteration_stats_give_ttft_itl_and_the_request_phases() -> None:
    req = RequestStateStats(arrival_time=ARRIVAL)
    queued, scheduled, preempted = list(EngineCoreEventType)
    first = _step(req, _output(1, (queued, 1.0), (scheduled, 2.0)), 3.0)
    assert first.num_prompt_tokens == 7 and first.num_generation_tokens == 1
    assert first.time_to_first_tokens_iter == [3.0] and first.inter_token_latencies_iter == []
    second = _step(req, _output(1, (preempted, 3.5), (scheduled, 4.0)), 4.5)
    assert second.num_prompt_tokens == 0 and second.num_preempted_reqs == 1
    assert second.inter_token_latencies_iter == [1.5]
    last = _step(req, _output(1), 5.0)
    finished = last.update_from_finished_request(FinishReason.LENGTH, 7, 3, req)
    assert last.inter_token_latencies_iter == [0.5]
    assert finished.queued_time == 1.0  # QUEUED -> first SCHEDULED (not the resume)
    assert finished.prefill_time == 1.0 and finished.decode_time == 2.0
    assert finished.inference_time == 3.0 and finished.e2e_latency == 5.0
    assert finished.num_generation_tokens == 3 and finished.first_token_latency == 3.0


def test_logging_stat_logger_logs_while_busy_and_once_more_when_idle(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stat_logger = LoggingStatLogger()
    assert stat_logger.log() is None  # idle from the start: nothing to say
    busy = IterationStats(num_prompt_tokens=30, num_generation_tokens=5)
    stat_logger.record(SchedulerStats(num_running=2, kv_cache_usage=0.25), busy)
    with caplog.at_level(logging.INFO, logger="vllm_hydra.metrics.loggers"):
        line = stat_logger.log()
    assert line is not None and line in caplog.text
    assert "Running: 2 reqs, Waiting: 0 reqs, KV cache usage: 25.0%" in line
    stat_logger.record(SchedulerStats(prefix_cache_queries=40, prefix_cache_hits=10), None)
    last = stat_logger.log()
    assert last is not None and "Running: 0 reqs" in last and "throughput: 0.0" in last
    assert "Prefix cache hit rate: 25.0%" in last
    assert stat_logger.log() is None


def _samples(stat_logger: PrometheusStatLogger) -> dict[tuple[str, str], float]:
    text = stat_logger.generate_latest().decode()
    return {
        (s.name, s.labels["engine"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if "engine" in s.labels
    }


def test_prometheus_counters_follow_the_schedulers_totals_per_engine() -> None:
    first = PrometheusStatLogger("m", 2048, engine_indexes=(0, 1))
    second = PrometheusStatLogger("m", 2048)  # its own registry: no duplicate names
    first.record(SchedulerStats(num_preemptions=2, prefix_cache_queries=32), None, 1)
    first.record(SchedulerStats(num_preemptions=3, prefix_cache_queries=48), None, 1)
    first.record(SchedulerStats(num_running=4), None, 0)
    samples = _samples(first)
    assert samples[("vllm:num_preemptions_total", "1")] == 3
    assert samples[("vllm:prefix_cache_queries_total", "1")] == 48
    assert samples[("vllm:num_preemptions_total", "0")] == 0
    assert samples[("vllm:num_requests_running", "0")] == 4
    assert _samples(second)[("vllm:num_requests_running", "0")] == 0


def test_token_buckets_are_vllms_1_2_5_series() -> None:
    assert build_1_2_5_buckets(100) == [1, 2, 5, 10, 20, 50, 100]
