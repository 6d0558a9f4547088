"""GET /metrics on a real `python serve.py`, read with prometheus_client's parser (as vLLM's
tests/entrypoints/openai/test_metrics.py does): exact counts after known traffic, gauges back to
zero after clients disconnect mid-stream, and the engine-stats UTILITY call agrees. The server
runs with observability.log_stats=false, so it never writes a stats line."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.entrypoints.openai.remote_server import RemoteServer, StreamReader
from tests.metrics.conftest import STATS_LINE, scrape

NUM_REQUESTS = 10
MAX_TOKENS = 10
PROMPT_IDS = list(range(100, 137))  # P = 37 tokens
P = len(PROMPT_IDS)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteServer]:
    remote = RemoteServer(
        tmp_path_factory.mktemp("metrics") / "run",
        "server.served_model_name=tiny-metrics",
        "observability.log_stats=false",
        "observability.stats_interval_s=0.2",
        "scheduler.max_num_seqs=2",  # so that some requests wait
    )
    yield remote
    remote.stop()


def test_metrics_before_traffic_are_labelled_and_zero(server: RemoteServer) -> None:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    running = families["vllm:num_requests_running"].samples[0]
    assert running.labels == {"model_name": "tiny-metrics", "engine": "0"}
    assert running.value == 0
    assert families["vllm:kv_cache_usage_perc"].samples[0].value == 0


def test_metrics_count_ten_requests_exactly(server: RemoteServer) -> None:
    before = scrape(server)
    client = server.client()
    for _ in range(NUM_REQUESTS):
        completion = client.completions.create(
            model="tiny-metrics",
            prompt=PROMPT_IDS,
            max_tokens=MAX_TOKENS,
            temperature=0.0,
            extra_body={"ignore_eos": True},
        )
        assert completion.usage.prompt_tokens == P
        assert completion.usage.completion_tokens == MAX_TOKENS
    after = scrape(server)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta("vllm:time_to_first_token_seconds_count") == NUM_REQUESTS
    assert delta("vllm:inter_token_latency_seconds_count") == NUM_REQUESTS * (MAX_TOKENS - 1)
    assert delta("vllm:prompt_tokens_total") == NUM_REQUESTS * P
    assert delta("vllm:generation_tokens_total") == NUM_REQUESTS * MAX_TOKENS
    assert delta("vllm:request_success_total{finished_reason=length}") == NUM_REQUESTS
    assert delta("vllm:e2e_request_latency_seconds_count") == NUM_REQUESTS
    assert delta("vllm:request_prompt_tokens_sum") == NUM_REQUESTS * P
    assert delta("vllm:request_prompt_tokens_count") == NUM_REQUESTS
    assert delta("vllm:request_generation_tokens_sum") == NUM_REQUESTS * MAX_TOKENS
    assert delta("vllm:iteration_tokens_total_sum") == NUM_REQUESTS * (P + MAX_TOKENS)
    for phase in ("queue", "prefill", "decode", "inference"):
        assert delta(f"vllm:request_{phase}_time_seconds_count") == NUM_REQUESTS
    # The same prompt ten times: the prefix cache serves its full blocks from the second on.
    assert delta("vllm:prefix_cache_queries_total") >= NUM_REQUESTS * (P // 16) * 16
    assert delta("vllm:prefix_cache_hits_total") >= (NUM_REQUESTS - 1) * (P // 16) * 16
    assert after["vllm:num_requests_running"] == 0
    assert after["vllm:kv_cache_usage_perc"] == 0
    # Latencies are positive and ordered: prefill and decode fit inside the whole request.
    assert delta("vllm:request_decode_time_seconds_sum") > 0
    assert delta("vllm:request_inference_time_seconds_sum") <= delta(
        "vllm:e2e_request_latency_seconds_sum"
    )


def _wait_for(server: RemoteServer, ok: callable, timeout_s: float = 60) -> dict[str, float]:
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(server)
        if ok(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


def test_gauges_return_to_zero_after_clients_disconnect(server: RemoteServer) -> None:
    body = {"prompt": PROMPT_IDS, "max_tokens": 1500, "ignore_eos": True, "temperature": 0.0}
    readers = [StreamReader(server, body) for _ in range(4)]
    try:
        # max_num_seqs=2: two requests run, two wait.
        busy = _wait_for(
            server,
            lambda s: s["vllm:num_requests_running"] == 2 and s["vllm:num_requests_waiting"] == 2,
        )
        assert busy["vllm:num_requests_running"] == 2
        assert busy["vllm:num_requests_waiting"] == 2
        assert busy["vllm:kv_cache_usage_perc"] > 0
        stats = httpx.get(f"{server.url}/debug/engine_stats", timeout=10).json()
        assert stats["num_running"] + stats["num_waiting"] == 4
        assert stats["num_free_blocks"] < stats["num_total_blocks"]
        assert all(reader.error is None for reader in readers)
    finally:
        for reader in readers:
            reader.stop()
    idle = _wait_for(
        server,
        lambda s: (
            s["vllm:num_requests_running"] == 0
            and s["vllm:num_requests_waiting"] == 0
            and s["vllm:kv_cache_usage_perc"] == 0
        ),
    )
    assert idle["vllm:num_requests_running"] == 0
    assert idle["vllm:num_requests_waiting"] == 0
    assert idle["vllm:kv_cache_usage_perc"] == 0
    stats = httpx.get(f"{server.url}/debug/engine_stats", timeout=10).json()
    assert stats["num_running"] == stats["num_waiting"] == 0
    assert stats["kv_cache_usage"] == 0 and stats["num_free_blocks"] == stats["num_total_blocks"]
    assert stats["num_finished_requests"] >= 4  # aborted requests count as finished


def test_log_stats_false_writes_no_stats_lines(server: RemoteServer) -> None:
    server.client().completions.create(model="tiny-metrics", prompt=PROMPT_IDS, max_tokens=4)
    # With log_stats=true a line (at least the one once idle) would come within an interval.
    time.sleep(1.0)
    output = server.output()
    assert "Serving the OpenAI API" in output
    assert not STATS_LINE.search(output)
