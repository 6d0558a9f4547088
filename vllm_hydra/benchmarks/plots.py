"""PNG plots of a sweep's summary rows (matplotlib, no display needed).

- throughput.png: output tokens/s against concurrency (or request rate, or per job when the
  sweep varies neither), one line per setting of the other overrides.
- ttft_vs_throughput.png: p99 TTFT against output tokens/s (serve jobs).
- pareto.png: output tokens/s per user against output tokens/s, with the Pareto front.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from vllm_hydra.benchmarks.metrics import pareto_front

Row = dict[str, Any]


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _x_axis(rows: list[Row]) -> str | None:
    """The load knob the sweep varies: concurrency, else a finite request rate, else none."""
    for key in ("concurrency", "request_rate"):
        values = {_number(r.get(key)) for r in rows}
        if len(values) > 1 or (values and None not in values and math.inf not in values):
            return key
    return None


def _series_label(row: Row, x_key: str | None) -> str:
    keep = [
        o
        for o in row["overrides"].split()
        if x_key is None or not o.startswith((f"bench.{x_key}=",))
    ]
    return " ".join(keep) or "default"


def plot_throughput(rows: list[Row], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x_key = _x_axis(rows)
    if x_key is None:
        labels = [f"{r['job']}: {r['overrides'] or 'default'}" for r in rows]
        ax.barh(labels, [_number(r.get("output_throughput")) or 0 for r in rows])
        ax.set_xlabel("output tokens/s")
    else:
        series: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for r in rows:
            x, y = _number(r.get(x_key)), _number(r.get("output_throughput"))
            if x is not None and y is not None:
                series[_series_label(r, x_key)].append((x, y))
        for label, points in series.items():
            xs, ys = zip(*sorted(points), strict=True)
            ax.plot(xs, ys, marker="o", label=label)
        ax.set_xlabel(x_key.replace("_", " "))
        ax.set_ylabel("output tokens/s")
        ax.legend(fontsize=7)
    ax.set_title("Output throughput")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_ttft(rows: list[Row], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        x, y = _number(r.get("output_throughput")), _number(r.get("ttft_p99_ms"))
        if x is not None and y is not None:
            ax.scatter(x, y)
            ax.annotate(str(r["job"]), (x, y), fontsize=7)
    ax.set_xlabel("output tokens/s")
    ax.set_ylabel("p99 TTFT (ms)")
    ax.set_title("p99 time to first token against throughput (labels: job)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_pareto(rows: list[Row], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    points = []
    for r in rows:
        x, y = _number(r.get("output_throughput")), _number(r.get("output_throughput_per_user"))
        if x is not None and y is not None:
            points.append((x, y))
            ax.annotate(str(r["job"]), (x, y), fontsize=7)
    if points:
        ax.scatter(*zip(*points, strict=True), label="jobs")
        ax.plot(*zip(*pareto_front(points), strict=True), color="C3", label="Pareto front")
        ax.legend(fontsize=7)
    ax.set_xlabel("output tokens/s")
    ax.set_ylabel("output tokens/s per user (1 / mean TPOT)")
    ax.set_title("Throughput against per-user speed")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_plots(rows: list[Row], out_dir: Path) -> list[Path]:
    """The plots that apply to these rows (latency and TTFT ones need serve jobs)."""
    paths = [
        plot_throughput([r for r in rows if "output_throughput" in r], out_dir / "throughput.png")
    ]
    serve = [r for r in rows if r["mode"] == "serve"]
    if serve:
        paths.append(plot_ttft(serve, out_dir / "ttft_vs_throughput.png"))
        paths.append(plot_pareto(serve, out_dir / "pareto.png"))
    return paths
