"""Serving metrics from per-request timings: throughput, TTFT, TPOT, ITL, E2EL and goodput.

Definitions follow vLLM's `bench serve`: TTFT is the time from sending a request to its first
token, ITL the gaps between streamed chunks, TPOT = (E2EL - TTFT) / (output tokens - 1), and
goodput the requests per second that meet every SLO limit set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from vllm_hydra.config.bench import SLOConfig

PERCENTILES = (50, 90, 99)
LATENCY_METRICS = ("ttft", "tpot", "itl", "e2el")


@dataclass
class RequestRecord:
    """One request as the load generator saw it (seconds, from its own send time)."""

    prompt_len: int
    output_len: int = 0  # tokens generated (the server's usage count)
    success: bool = False
    ttft: float = 0.0
    itl: list[float] = field(default_factory=list)
    latency: float = 0.0  # end-to-end
    error: str = ""

    @property
    def tpot(self) -> float | None:
        if self.output_len < 2:
            return None
        return (self.latency - self.ttft) / (self.output_len - 1)


def distribution(values: list[float], name: str) -> dict[str, float]:
    """`{name}_mean_ms`, `{name}_p50_ms`, ... over `values` in seconds (NaN when empty)."""
    arr = np.asarray(values, dtype=float) * 1e3
    stats = {f"{name}_mean_ms": float(arr.mean()) if arr.size else float("nan")}
    for p in PERCENTILES:
        stats[f"{name}_p{p}_ms"] = float(np.percentile(arr, p)) if arr.size else float("nan")
    return stats


def meets_slo(record: RequestRecord, slo: SLOConfig) -> bool:
    limits = {"ttft_ms": record.ttft, "tpot_ms": record.tpot or 0.0, "e2el_ms": record.latency}
    return all(
        getattr(slo, key) is None or value * 1e3 <= getattr(slo, key)
        for key, value in limits.items()
    )


def serve_metrics(records: list[RequestRecord], duration: float, slo: SLOConfig) -> dict:
    """The flat metrics dict of one serve-mode run that lasted `duration` seconds."""
    ok = [r for r in records if r.success]
    input_tokens = sum(r.prompt_len for r in ok)
    output_tokens = sum(r.output_len for r in ok)
    metrics: dict[str, float | int] = {
        "duration_s": duration,
        "completed": len(ok),
        "failed": len(records) - len(ok),
        "total_input_tokens": input_tokens,
        "total_output_tokens": output_tokens,
        "request_throughput": len(ok) / duration,
        "output_throughput": output_tokens / duration,
        "total_token_throughput": (input_tokens + output_tokens) / duration,
        "goodput": sum(meets_slo(r, slo) for r in ok) / duration,
    }
    metrics.update(distribution([r.ttft for r in ok], "ttft"))
    # The first request sent: on a fresh server it meets a cold grammar (compiled on demand).
    metrics["ttft_first_ms"] = records[0].ttft * 1e3 if records and records[0].success else math.nan
    metrics.update(distribution([t for r in ok if (t := r.tpot) is not None], "tpot"))
    metrics.update(distribution([gap for r in ok for gap in r.itl], "itl"))
    metrics.update(distribution([r.latency for r in ok], "e2el"))
    # What one user sees: the output rate of a single stream, for the Pareto plot.
    tpot_mean = metrics["tpot_mean_ms"]
    metrics["output_throughput_per_user"] = 1e3 / tpot_mean if tpot_mean > 0 else float("nan")
    return metrics


def offline_metrics(num_requests: int, input_tokens: int, output_tokens: int, seconds: float):
    """Throughput-mode metrics (the same names as serve mode's, where they mean the same)."""
    return {
        "duration_s": seconds,
        "completed": num_requests,
        "failed": 0,
        "total_input_tokens": input_tokens,
        "total_output_tokens": output_tokens,
        "request_throughput": num_requests / seconds,
        "output_throughput": output_tokens / seconds,
        "total_token_throughput": (input_tokens + output_tokens) / seconds,
    }


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (more is better on both), by x."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return sorted(front)
