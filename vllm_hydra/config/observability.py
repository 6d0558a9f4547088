"""`observability` section: metrics, stats logging and tracing."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ObservabilityConfig:
    log_stats: bool = True  # one stats line every stats_interval_s while there is work
    stats_interval_s: float = 10.0
    metrics: bool = True  # serve Prometheus metrics on GET /metrics
    otlp_traces_endpoint: str | None = None  # OTLP/HTTP traces endpoint; None: no tracing

    @property
    def collect_stats(self) -> bool:
        """Whether the engine records request events and scheduler stats for the frontend."""
        return self.metrics or self.log_stats or self.otlp_traces_endpoint is not None
