"""vLLM's tests/entrypoints/serve/instrumentator/test_metrics.py, the parts this issue adds:
vllm:cache_config_info and the request-parameter histograms (vllm:request_params_n,
vllm:request_params_max_tokens), checked as differences on the shared server."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.entrypoints.openai.compat.compat_helpers import ok
from tests.entrypoints.openai.conftest import MODEL
from tests.entrypoints.openai.remote_server import RemoteServer

pytestmark = pytest.mark.compat

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: RemoteServer) -> Samples:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    wanted = {"model_name": MODEL, "engine": "0", **labels}
    return sum(v for (n, lbl), v in samples.items() if n == name and wanted.items() <= set(lbl))


def test_cache_config_info(server: RemoteServer) -> None:
    samples = scrape(server)
    info = [dict(lbl) for (name, lbl), v in samples.items() if name == "vllm:cache_config_info"]
    assert len(info) == 1
    assert info[0]["block_size"] == "16" and info[0]["enable_prefix_caching"] == "True"
    assert int(info[0]["num_gpu_blocks"]) > 0
    stats = httpx.get(f"{server.url}/debug/engine_stats").json()
    assert int(info[0]["num_gpu_blocks"]) >= stats["num_total_blocks"]


def test_request_params_histograms(server: RemoteServer) -> None:
    before = scrape(server)
    body = {"prompt": "Once upon a time", "temperature": 1.0, "seed": 1}
    ok(server, "/v1/completions", max_tokens=3, **body)
    ok(server, "/v1/completions", max_tokens=5, n=2, **body)
    ok(server, "/v1/chat/completions", messages=[{"role": "user", "content": "hi"}], max_tokens=7)
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # n: once per user request (3 requests: n = 1, 2, 1).
    assert delta("vllm:request_params_n_count") == 3
    assert delta("vllm:request_params_n_sum") == 4
    assert delta("vllm:request_params_n_bucket", le="1.0") == 2
    assert delta("vllm:request_params_n_bucket", le="2.0") == 3
    # max_tokens: once per sequence (1 + 2 + 1).
    assert delta("vllm:request_params_max_tokens_count") == 4
    assert delta("vllm:request_params_max_tokens_sum") == 3 + 5 + 5 + 7
