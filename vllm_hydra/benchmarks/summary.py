"""The sweep summary: every job's results.json into summary.csv, summary.md and plots.

`BenchSummaryCallback` is the Hydra Callback (conf/hydra/bench.yaml registers it) that runs this
at the end of a multirun; `write_summary(sweep_dir)` does the same for any directory of jobs.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vllm_hydra.benchmarks.results import RESULTS_FILE, read_result

logger = logging.getLogger(__name__)

# Columns of summary.csv, in order; metrics a mode lacks are left empty.
COLUMNS = (
    "job",
    "overrides",
    "mode",
    "backend",
    "model",
    "max_num_seqs",
    "max_num_batched_tokens",
    "block_size",
    "request_rate",
    "concurrency",
    "completed",
    "failed",
    "duration_s",
    "request_throughput",
    "output_throughput",
    "total_token_throughput",
    "engine_speedup",
    "goodput",
    "output_throughput_per_user",
    "ttft_mean_ms",
    "ttft_p50_ms",
    "ttft_p90_ms",
    "ttft_p99_ms",
    "ttft_first_ms",
    "tpot_mean_ms",
    "tpot_p50_ms",
    "tpot_p90_ms",
    "tpot_p99_ms",
    "itl_mean_ms",
    "itl_p50_ms",
    "itl_p90_ms",
    "itl_p99_ms",
    "e2el_mean_ms",
    "e2el_p50_ms",
    "e2el_p90_ms",
    "e2el_p99_ms",
    "server_startup_s",
    "latency_mean_s",
    "latency_p50_s",
    "latency_p90_s",
    "latency_p99_s",
    "workload_flops",
    "weight_bytes",
    "peak_gemm_tflops",
    "read_bandwidth_gbs",
    "roofline_s",
    "roofline_fraction",
    "spec_acceptance_rate",
    "spec_mean_acceptance_length",
    "spec_speedup",
)
# Speculative decoding's table, for sweeps over speculative=none and a method.
SPEC_COLUMNS = (
    "job",
    "overrides",
    "output_throughput",
    "tpot_p50_ms",
    "spec_acceptance_rate",
    "spec_mean_acceptance_length",
    "spec_speedup",
)
# The columns of summary.md (the table a person reads), per mode.
MARKDOWN_COLUMNS = {
    "throughput": (
        "job",
        "overrides",
        "backend",
        "request_throughput",
        "output_throughput",
        "total_token_throughput",
        "engine_speedup",
        "roofline_s",
        "roofline_fraction",
    ),
    "latency": ("job", "overrides", "latency_mean_s", "latency_p50_s", "latency_p99_s"),
    "serve": (
        "job",
        "overrides",
        "completed",
        "failed",
        "request_throughput",
        "output_throughput",
        "goodput",
        "ttft_p50_ms",
        "ttft_p99_ms",
        "ttft_first_ms",
        "tpot_p50_ms",
        "itl_p99_ms",
        "e2el_p99_ms",
    ),
}


def _row(job: str, result: dict[str, Any]) -> dict[str, Any]:
    bench = result["bench"]
    row = {
        "job": job,
        "overrides": " ".join(result["overrides"]),
        "mode": bench["mode"],
        "backend": bench["backend"],
        "model": result["model"],
        "max_num_seqs": result["max_num_seqs"],
        "max_num_batched_tokens": result["max_num_batched_tokens"],
        "block_size": result["block_size"],
        "request_rate": bench["request_rate"],
        "concurrency": bench["concurrency"],
    }
    row.update({k: v for k, v in result["metrics"].items() if k in COLUMNS})
    return row


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job that wrote results.json, in job order."""
    paths = sorted(
        sweep_dir.glob(f"*/{RESULTS_FILE}"),
        key=lambda p: (
            not p.parent.name.isdigit(),
            int(p.parent.name) if p.parent.name.isdigit() else 0,
            p.parent.name,
        ),
    )
    rows = [_row(path.parent.name, read_result(path)) for path in paths]
    add_engine_speedup(rows)
    add_spec_speedup(rows)
    return rows


def _without_speculative(row: dict[str, Any]) -> str:
    return " ".join(o for o in row["overrides"].split() if not o.startswith("speculative="))


def add_spec_speedup(rows: list[dict[str, Any]]) -> None:
    """On each row, its output throughput divided by that of the job with speculative=none
    and the same other overrides (itself: 1.0), where the sweep has one."""
    reference = {
        _without_speculative(r): r.get("output_throughput")
        for r in rows
        if "speculative=none" in r["overrides"].split()
    }
    for row in rows:
        base = reference.get(_without_speculative(row))
        if base and row.get("output_throughput"):
            row["spec_speedup"] = row["output_throughput"] / base


def _without_backend(row: dict[str, Any]) -> str:
    return " ".join(o for o in row["overrides"].split() if not o.startswith("bench.backend="))


def add_engine_speedup(rows: list[dict[str, Any]]) -> None:
    """On each throughput row, the engine's output throughput divided by this row's, where the
    sweep has an engine job with the same other overrides."""
    engine = {
        _without_backend(r): r["output_throughput"]
        for r in rows
        if r["mode"] == "throughput" and r["backend"] == "engine"
    }
    for row in rows:
        reference = engine.get(_without_backend(row))
        if row["mode"] == "throughput" and reference is not None:
            row["engine_speedup"] = reference / row["output_throughput"]


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        # Three significant figures where two decimals would hide them (a roofline fraction
        # of 0.004, FLOPs of 4e12).
        wide = abs(value) >= 1e5 or 0 < abs(value) < 0.1
        return f"{value:.3g}" if wide else f"{value:.2f}"
    return str(value)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _format(row.get(k)) for k in COLUMNS})


def markdown_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_format(row.get(c)).replace("|", "\\|") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_summary(rows: list[dict[str, Any]]) -> str:
    """One table per mode in the sweep; engine_speedup = engine output tok/s / this row's."""
    parts = []
    for mode, columns in MARKDOWN_COLUMNS.items():
        mode_rows = [r for r in rows if r["mode"] == mode]
        if mode_rows:
            parts.append(f"### {mode}\n\n{markdown_table(mode_rows, columns)}\n")
    spec_rows = [r for r in rows if r.get("spec_speedup") is not None]
    if spec_rows:
        parts.append(f"### speculative decoding\n\n{markdown_table(spec_rows, SPEC_COLUMNS)}\n")
        parts.append(
            "spec_speedup: this job's output tokens/s divided by the speculative=none job's "
            "with the same other overrides; acceptance from the engine's counters (offline) or "
            "the server's /metrics counters over the timed load (serve).\n"
        )
    if any(r.get("engine_speedup") is not None for r in rows):
        parts.append(
            "engine_speedup: the engine's output tokens/s divided by this row's, for jobs whose "
            "other overrides match.\n"
        )
    return "\n".join(parts)


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    """Write summary.csv, summary.md and the plots into `sweep_dir`; return the rows."""
    rows = collect(sweep_dir)
    if not rows:
        logger.warning("No %s under %s: nothing to summarise", RESULTS_FILE, sweep_dir)
        return rows
    write_csv(rows, sweep_dir / "summary.csv")
    try:
        from vllm_hydra.benchmarks.plots import write_plots
    except ImportError:
        logger.warning("matplotlib is missing: no plots (pip install -e '.[bench]')")
        plots = []
    else:
        plots = write_plots(rows, sweep_dir)
    images = "".join(f"![{p.stem}]({p.name})\n" for p in plots)
    text = f"# Benchmark summary: {sweep_dir}\n\n{markdown_summary(rows)}\n{images}"
    (sweep_dir / "summary.md").write_text(text)
    logger.info("Summary of %d jobs: %s", len(rows), sweep_dir / "summary.md")
    return rows


class BenchSummaryCallback(Callback):
    """Hydra calls this once after every job of a multirun has finished."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_summary(Path(config.hydra.sweep.dir))
