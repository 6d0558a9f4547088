"""`observability` section: metrics, stats logging and tracing."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ObservabilityConfig:
    log_stats: bool = True
    stats_interval_s: float = 10.0
    metrics: bool = True  # serve GET /metrics
    otlp_traces_endpoint: str | None = None
