"""Serving metrics, the engine's speedup column and the Pareto front."""

from __future__ import annotations

import pytest

from vllm_hydra.benchmarks.metrics import RequestRecord, pareto_front, serve_metrics
from vllm_hydra.benchmarks.summary import add_engine_speedup
from vllm_hydra.config.bench import SLOConfig


def _record(ttft: float, latency: float, output_len: int) -> RequestRecord:
    gaps = [(latency - ttft) / (output_len - 1)] * (output_len - 1)
    return RequestRecord(10, output_len, True, ttft, gaps, latency)


def test_serve_metrics() -> None:
    records = [_record(0.1, 1.0, 10), _record(0.3, 2.1, 10), RequestRecord(10, error="HTTP 503")]
    m = serve_metrics(records, duration=4.0, slo=SLOConfig(ttft_ms=200))
    assert (m["completed"], m["failed"]) == (2, 1)
    assert m["output_throughput"] == pytest.approx(20 / 4)
    assert m["total_token_throughput"] == pytest.approx(40 / 4)
    assert m["goodput"] == pytest.approx(1 / 4)  # only the first meets TTFT <= 200 ms
    assert m["ttft_mean_ms"] == pytest.approx(200)
    assert m["tpot_mean_ms"] == pytest.approx(150)  # (0.9 / 9 + 1.8 / 9) / 2
    assert m["itl_p50_ms"] == pytest.approx(150)
    assert m["e2el_p99_ms"] == pytest.approx(2089, abs=1)


def test_engine_speedup_matches_rows_by_other_overrides() -> None:
    rows = [
        {
            "mode": "throughput",
            "backend": b,
            "overrides": f"bench.backend={b} model={m}",
            "output_throughput": t,
        }
        for b, m, t in [("engine", "a", 300.0), ("hf", "a", 100.0), ("hf", "b", 50.0)]
    ]
    add_engine_speedup(rows)
    assert rows[0]["engine_speedup"] == pytest.approx(1.0)
    assert rows[1]["engine_speedup"] == pytest.approx(3.0)
    assert "engine_speedup" not in rows[2]  # no engine job with model=b


def test_pareto_front() -> None:
    points = [(1.0, 10.0), (2.0, 8.0), (2.0, 5.0), (3.0, 3.0), (1.5, 4.0)]
    assert pareto_front(points) == [(1.0, 10.0), (2.0, 8.0), (3.0, 3.0)]
