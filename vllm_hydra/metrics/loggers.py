"""Stat loggers (vLLM's v1/metrics/loggers.py): `LoggingStatLogger` writes one line per engine
every `observability.stats_interval_s` while there is work; `StatLoggerManager` feeds it and the
`PrometheusStatLogger` from each batch of engine outputs."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping

from vllm_hydra.metrics.prometheus import PrometheusStatLogger
from vllm_hydra.metrics.stats import IterationStats, SchedulerStats

logger = logging.getLogger(__name__)


class LoggingStatLogger:
    """Throughput over the interval since the last line, and the engine's state now."""

    def __init__(self, engine_index: int = 0) -> None:
        self.engine_index = engine_index
        self.last_scheduler_stats = SchedulerStats(engine_index=engine_index)
        self.logged_scheduler_stats = self.last_scheduler_stats  # as of the last line
        self.last_log_time = time.monotonic()
        self.num_prompt_tokens = 0
        self.num_generation_tokens = 0
        self.last_line_idle = True  # nothing to report before the first request

    def record(
        self, scheduler_stats: SchedulerStats | None, iteration_stats: IterationStats | None
    ) -> None:
        if scheduler_stats is not None:
            self.last_scheduler_stats = scheduler_stats
        if iteration_stats is not None:
            self.num_prompt_tokens += iteration_stats.num_prompt_tokens
            self.num_generation_tokens += iteration_stats.num_generation_tokens

    def log(self) -> str | None:
        """Log a line if there was work since the last one, or one last line once idle.
        Returns the line (None when nothing was logged)."""
        now = time.monotonic()
        stats, since = self.last_scheduler_stats, self.logged_scheduler_stats
        elapsed = max(now - self.last_log_time, 1e-9)
        num_preemptions = stats.num_preemptions - since.num_preemptions
        idle = not (
            self.num_prompt_tokens
            or self.num_generation_tokens
            or stats.num_running
            or stats.num_waiting
            or num_preemptions
        )
        line = None
        if not (idle and self.last_line_idle):
            line = self._line(stats, elapsed, num_preemptions)
            logger.info(line)
        self.last_line_idle = idle
        self.last_log_time, self.logged_scheduler_stats = now, stats
        self.num_prompt_tokens = self.num_generation_tokens = 0
        return line

    def _line(self, stats: SchedulerStats, elapsed: float, num_preemptions: int) -> str:
        queries = stats.prefix_cache_queries
        hit_rate = stats.prefix_cache_hits / queries if queries else 0.0
        return (
            f"Engine {self.engine_index:03d}: "
            f"Avg prompt throughput: {self.num_prompt_tokens / elapsed:.1f} tokens/s, "
            f"Avg generation throughput: {self.num_generation_tokens / elapsed:.1f} tokens/s "
            f"(over {elapsed:.3f} s), "
            f"Running: {stats.num_running} reqs, Waiting: {stats.num_waiting} reqs, "
            f"KV cache usage: {stats.kv_cache_usage * 100:.1f}%, "
            f"Prefix cache hit rate: {hit_rate * 100:.1f}%, "
            f"Preemptions: {num_preemptions}"
        ) + _spec_decode_text(stats, self.logged_scheduler_stats)


def _spec_decode_text(stats: SchedulerStats, since: SchedulerStats) -> str:
    """Speculative decoding over the interval: mean acceptance length (tokens per
    verification step), acceptance rate, and the rate at each draft position."""
    if stats.spec_decoding_stats is None:
        return ""
    delta = stats.spec_decoding_stats.minus(since.spec_decoding_stats)
    per_pos = ", ".join(
        f"{n / delta.num_drafts:.2f}" if delta.num_drafts else "0.00"
        for n in delta.num_accepted_tokens_per_pos
    )
    return (
        f", Spec decode: mean acceptance length {delta.mean_acceptance_length:.2f}, "
        f"acceptance rate {delta.acceptance_rate * 100:.1f}% "
        f"({delta.num_accepted_tokens}/{delta.num_draft_tokens} draft tokens), "
        f"per position [{per_pos}]"
    )


class StatLoggerManager:
    """Routes each engine's stats to its logging logger and to the Prometheus logger."""

    def __init__(
        self,
        model_name: str,
        max_model_len: int,
        engine_indexes: Iterable[int] = (0,),
        log_stats: bool = True,
        metrics: bool = True,
        max_lora: int = 0,
    ) -> None:
        engine_indexes = list(engine_indexes)
        self.logging_loggers = (
            {i: LoggingStatLogger(i) for i in engine_indexes} if log_stats else {}
        )
        self.prometheus = (
            PrometheusStatLogger(model_name, max_model_len, engine_indexes, max_lora)
            if metrics
            else None
        )

    def record(
        self,
        scheduler_stats: SchedulerStats | None,
        iteration_stats: IterationStats | None,
        engine_index: int = 0,
    ) -> None:
        logging_logger = self.logging_loggers.get(engine_index)
        if logging_logger is None and self.logging_loggers:  # an engine we were not told of
            logging_logger = self.logging_loggers[engine_index] = LoggingStatLogger(engine_index)
        if logging_logger is not None:
            logging_logger.record(scheduler_stats, iteration_stats)
        if self.prometheus is not None:
            self.prometheus.record(scheduler_stats, iteration_stats, engine_index)

    def log_engine_initialized(self, cache_info: Mapping[str, object]) -> None:
        """Once the engine is up: the cache config and its KV block count, as metrics."""
        if self.prometheus is not None:
            self.prometheus.log_engine_initialized(cache_info)

    def log(self) -> list[str]:
        """One line per engine with something to report; the lines logged."""
        lines = [stat_logger.log() for stat_logger in self.logging_loggers.values()]
        return [line for line in lines if line is not None]
