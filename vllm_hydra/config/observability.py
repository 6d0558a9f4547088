"""`observability` section: metrics, stats logging and tracing."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ObservabilityConfig:
    # Off until metrics and stats logging are built (a real run refuses them until then).
    log_stats: bool = False
    stats_interval_s: float = 10.0
    metrics: bool = False  # serve GET /metrics
    otlp_traces_endpoint: str | None = None
