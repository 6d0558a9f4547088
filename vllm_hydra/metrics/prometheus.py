"""`PrometheusStatLogger`: vLLM's `vllm:` metrics (v1/metrics/loggers.py), for GET /metrics.

Every metric has the labels `model_name` (the served model name, so vLLM's dashboards work) and
`engine` (the data-parallel rank). The metrics live in a registry of their own per server (or
`LLM`), so several engines in one process never register a name twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from vllm_hydra.metrics.stats import FinishedRequestStats, IterationStats, SchedulerStats
from vllm_hydra.spec_decode.metrics import SpecDecodingStats

# vLLM's bucket choices.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
               7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
REQUEST_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
                           50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip
ITERATION_TOKENS_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
N_PARAM_BUCKETS = (1, 2, 5, 10, 20)
LABELS = ("model_name", "engine")


def build_1_2_5_buckets(max_value: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... up to `max_value` (vLLM's token-count buckets)."""
    buckets, exponent = [], 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_value:
                return buckets
            buckets.append(value)
        exponent += 1


class PrometheusStatLogger:
    def __init__(
        self,
        model_name: str,
        max_model_len: int,
        engine_indexes: Iterable[int] = (0,),
        max_lora: int = 0,
    ) -> None:
        self.registry = CollectorRegistry()
        self.model_name = model_name
        self._gauges()
        # lora=enabled: vLLM's info gauge, one series per (waiting, running) adapter set,
        # whose value is the time that set was last seen.
        self.max_lora = max_lora
        self.gauge_lora_info = (
            Gauge(
                "vllm:lora_requests_info",
                "Running stats on LoRA requests.",
                ("max_lora", "waiting_lora_adapters", "running_lora_adapters"),
                registry=self.registry,
            )
            if max_lora
            else None
        )
        self._counters()
        self._histograms(max_model_len)
        # The scheduler's running totals as last seen, per engine: counters take differences.
        self._last_totals: dict[int, SchedulerStats] = {}
        for engine_index in engine_indexes:  # every series exists (at 0) before traffic
            self.record(SchedulerStats(engine_index=engine_index), None, engine_index)

    def _gauges(self) -> None:
        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, LABELS, registry=self.registry)

        self.gauge_running = gauge("vllm:num_requests_running", "Requests in model execution.")
        self.gauge_waiting = gauge("vllm:num_requests_waiting", "Requests waiting to run.")
        self.gauge_kv_usage = gauge(
            "vllm:kv_cache_usage_perc", "KV cache usage. 1 means 100 percent usage."
        )

    def log_engine_initialized(self, cache_info: Mapping[str, object]) -> None:
        """vLLM's `vllm:cache_config_info`: an info gauge (value 1) labelled with the cache
        config and the number of KV blocks the engine allocated."""
        labels = {key: str(value) for key, value in cache_info.items()}
        info = Gauge(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig.",
            list(labels),
            registry=self.registry,
        )
        info.labels(**labels).set(1)

    def _counters(self) -> None:
        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, (*LABELS, *extra), registry=self.registry)

        self.counter_preemptions = counter("vllm:num_preemptions", "Cumulative preemptions.")
        self.counter_prompt_tokens = counter("vllm:prompt_tokens", "Prefill tokens processed.")
        self.counter_generation_tokens = counter(
            "vllm:generation_tokens", "Generation tokens processed."
        )
        self.counter_request_success = counter(
            "vllm:request_success", "Finished requests.", ("finished_reason",)
        )
        self.counter_prefix_cache_queries = counter(
            "vllm:prefix_cache_queries", "Prefix cache queries, in tokens."
        )
        self.counter_prefix_cache_hits = counter(
            "vllm:prefix_cache_hits", "Prefix cache hits, in tokens."
        )
        # Speculative decoding (series appear once an engine with it reports).
        self.counter_spec_decode_num_drafts = counter(
            "vllm:spec_decode_num_drafts", "Verification steps of requests with drafts."
        )
        self.counter_spec_decode_num_draft_tokens = counter(
            "vllm:spec_decode_num_draft_tokens", "Draft tokens proposed."
        )
        self.counter_spec_decode_num_accepted_tokens = counter(
            "vllm:spec_decode_num_accepted_tokens", "Draft tokens accepted."
        )
        self.counter_spec_decode_num_accepted_tokens_per_pos = counter(
            "vllm:spec_decode_num_accepted_tokens_per_pos",
            "Draft tokens accepted, per draft position.",
            ("position",),
        )

    def _histograms(self, max_model_len: int) -> None:
        def histogram(name: str, doc: str, buckets: Iterable[float]) -> Histogram:
            return Histogram(name, doc, LABELS, buckets=list(buckets), registry=self.registry)

        token_buckets = build_1_2_5_buckets(max_model_len)
        self.histogram_prompt_tokens = histogram(
            "vllm:request_prompt_tokens", "Prefill tokens per request.", token_buckets
        )
        self.histogram_generation_tokens = histogram(
            "vllm:request_generation_tokens", "Generation tokens per request.", token_buckets
        )
        self.histogram_max_tokens = histogram(
            "vllm:request_params_max_tokens",
            "The max_tokens request parameter.",
            token_buckets,
        )
        self.histogram_n = histogram(
            "vllm:request_params_n", "The n request parameter.", N_PARAM_BUCKETS
        )
        self.histogram_iteration_tokens = histogram(
            "vllm:iteration_tokens_total", "Tokens per engine step.", ITERATION_TOKENS_BUCKETS
        )
        self.histogram_ttft = histogram(
            "vllm:time_to_first_token_seconds", "Time to first token in seconds.", TTFT_BUCKETS
        )
        self.histogram_itl = histogram(
            "vllm:inter_token_latency_seconds", "Inter-token latency in seconds.", ITL_BUCKETS
        )
        phases = {
            "e2e": ("vllm:e2e_request_latency_seconds", "End-to-end request latency"),
            "queue": ("vllm:request_queue_time_seconds", "Time in the WAITING phase"),
            "inference": ("vllm:request_inference_time_seconds", "Time in the RUNNING phase"),
            "prefill": ("vllm:request_prefill_time_seconds", "Time in the PREFILL phase"),
            "decode": ("vllm:request_decode_time_seconds", "Time in the DECODE phase"),
        }
        self.histogram_phase = {
            key: histogram(name, f"{doc} in seconds.", REQUEST_LATENCY_BUCKETS)
            for key, (name, doc) in phases.items()
        }

    def record(
        self,
        scheduler_stats: SchedulerStats | None,
        iteration_stats: IterationStats | None,
        engine_index: int = 0,
    ) -> None:
        labels = (self.model_name, str(engine_index))
        if scheduler_stats is not None:
            self._record_scheduler(scheduler_stats, labels, engine_index)
        if iteration_stats is not None:
            self._record_iteration(iteration_stats, labels)

    def _record_scheduler(
        self, stats: SchedulerStats, labels: tuple[str, str], engine_index: int
    ) -> None:
        self.gauge_running.labels(*labels).set(stats.num_running)
        self.gauge_waiting.labels(*labels).set(stats.num_waiting)
        self.gauge_kv_usage.labels(*labels).set(stats.kv_cache_usage)
        last = self._last_totals.get(engine_index, SchedulerStats())
        self.counter_preemptions.labels(*labels).inc(
            max(stats.num_preemptions - last.num_preemptions, 0)
        )
        self.counter_prefix_cache_queries.labels(*labels).inc(
            max(stats.prefix_cache_queries - last.prefix_cache_queries, 0)
        )
        self.counter_prefix_cache_hits.labels(*labels).inc(
            max(stats.prefix_cache_hits - last.prefix_cache_hits, 0)
        )
        if stats.spec_decoding_stats is not None:
            self._record_spec_decode(
                stats.spec_decoding_stats.minus(last.spec_decoding_stats), labels
            )
        self._last_totals[engine_index] = stats
        if self.gauge_lora_info is not None:
            self.gauge_lora_info.labels(
                str(self.max_lora),
                ",".join(sorted(stats.waiting_lora_adapters)),
                ",".join(sorted(stats.running_lora_adapters)),
            ).set_to_current_time()

    def _record_spec_decode(self, delta: SpecDecodingStats, labels: tuple[str, str]) -> None:
        self.counter_spec_decode_num_drafts.labels(*labels).inc(delta.num_drafts)
        self.counter_spec_decode_num_draft_tokens.labels(*labels).inc(delta.num_draft_tokens)
        self.counter_spec_decode_num_accepted_tokens.labels(*labels).inc(delta.num_accepted_tokens)
        for position, count in enumerate(delta.num_accepted_tokens_per_pos):
            self.counter_spec_decode_num_accepted_tokens_per_pos.labels(*labels, str(position)).inc(
                count
            )

    def _record_iteration(self, stats: IterationStats, labels: tuple[str, str]) -> None:
        self.counter_prompt_tokens.labels(*labels).inc(stats.num_prompt_tokens)
        self.counter_generation_tokens.labels(*labels).inc(stats.num_generation_tokens)
        self.histogram_iteration_tokens.labels(*labels).observe(
            stats.num_prompt_tokens + stats.num_generation_tokens
        )
        for ttft in stats.time_to_first_tokens_iter:
            self.histogram_ttft.labels(*labels).observe(ttft)
        for itl in stats.inter_token_latencies_iter:
            self.histogram_itl.labels(*labels).observe(itl)
        for finished in stats.finished_requests:
            self._record_finished(finished, labels)

    def _record_finished(self, finished: FinishedRequestStats, labels: tuple[str, str]) -> None:
        self.counter_request_success.labels(*labels, str(finished.finish_reason)).inc()
        self.histogram_prompt_tokens.labels(*labels).observe(finished.num_prompt_tokens)
        self.histogram_generation_tokens.labels(*labels).observe(finished.num_generation_tokens)
        if finished.max_tokens_param is not None:
            self.histogram_max_tokens.labels(*labels).observe(finished.max_tokens_param)
        if finished.n_param is not None:
            self.histogram_n.labels(*labels).observe(finished.n_param)
        for key, seconds in (
            ("e2e", finished.e2e_latency),
            ("queue", finished.queued_time),
            ("inference", finished.inference_time),
            ("prefill", finished.prefill_time),
            ("decode", finished.decode_time),
        ):
            self.histogram_phase[key].labels(*labels).observe(seconds)

    def generate_latest(self) -> bytes:
        """The metrics in Prometheus' text exposition format."""
        return prometheus_client.generate_latest(self.registry)
