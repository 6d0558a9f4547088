"""Helpers for the observability tests: read a server's /metrics with prometheus_client's
parser, and its stats lines."""

from __future__ import annotations

import re

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.entrypoints.openai.remote_server import RemoteServer

# The periodic stats line (vllm_hydra/metrics/loggers.py).
STATS_LINE = re.compile(
    r"Engine (?P<engine>\d+): Avg prompt throughput: (?P<prompt>[\d.]+) tokens/s, "
    r"Avg generation throughput: (?P<gen>[\d.]+) tokens/s \(over (?P<dt>[\d.]+) s\), "
    r"Running: (?P<running>\d+) reqs, Waiting: (?P<waiting>\d+) reqs, "
    r"KV cache usage: (?P<kv>[\d.]+)%, Prefix cache hit rate: (?P<hit>[\d.]+)%, "
    r"Preemptions: (?P<preempted>\d+)"
)


def scrape(server: RemoteServer) -> dict[str, float]:
    """Every sample on /metrics, keyed by its name and labels other than model_name/engine
    (e.g. `vllm:request_success_total{finished_reason=length}`), summed over engines."""
    response = httpx.get(f"{server.url}/metrics", timeout=10)
    response.raise_for_status()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            extra = {k: v for k, v in sample.labels.items() if k not in ("model_name", "engine")}
            key = sample.name + (
                "{" + ",".join(f"{k}={v}" for k, v in sorted(extra.items())) + "}" if extra else ""
            )
            samples[key] = samples.get(key, 0.0) + sample.value
    return samples
