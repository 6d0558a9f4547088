"""`serve.py -m ... dry_run=true`: a sweep of deployment plans, one row per job.

A multirun of the server itself makes no sense (the basic launcher would serve the first job
until it is stopped, then the next), so a real one is refused; benchmarking a server per job is
what `scripts/bench.py -m` does. A dry-run sweep runs to the end however many jobs are invalid:
each job writes its full report (`dry_run.txt`) and its row (`dry_run.json`) to its own
directory, and `DryRunSweepTable` (a Hydra callback) prints the table and writes
`dry_run_table.md` in the sweep directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from vllm_hydra.config.errors import ConfigError
from vllm_hydra.config.memory_plan import plan_memory
from vllm_hydra.config.vllm import VllmConfig

ROW_FILE = "dry_run.json"
REPORT_FILE = "dry_run.txt"
TABLE_FILE = "dry_run_table.md"
COLUMNS = (
    "job",
    "overrides",
    "valid",
    "max_model_len",
    "kv_cache_tokens",
    "max_concurrency",
    "devices",
    "problem",
)


def refuse_real_multirun() -> ConfigError:
    return ConfigError(
        "serve.py -m without dry_run=true would start one server per job, each serving until "
        "it is stopped. Add dry_run=true to check every job of the sweep and get a table of "
        "their plans, or use scripts/bench.py -m to start and measure a server per job."
    )


def plan_row(job: int, overrides: list[str], config: VllmConfig) -> dict[str, Any]:
    plan, p = plan_memory(config), config.parallel
    return {
        "job": job,
        "overrides": " ".join(overrides),
        "valid": True,
        "max_model_len": config.model.max_model_len,
        "kv_cache_tokens": plan.kv_cache_tokens,
        "max_concurrency": round(plan.max_concurrency, 2),
        "devices": f"{p.world_size * p.dp} {config.device.type.value}",
        "problem": "",
    }


def invalid_row(job: int, overrides: list[str], error: Exception) -> dict[str, Any]:
    problems = error.problems if isinstance(error, ConfigError) else [str(error)]
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    return {
        "job": job,
        "overrides": " ".join(overrides),
        "valid": False,
        "problem": problems[0] + more,
    }


def write_job(output_dir: Path, row: dict[str, Any], report: str) -> None:
    (output_dir / ROW_FILE).write_text(json.dumps(row))
    (output_dir / REPORT_FILE).write_text(report)


def read_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = [json.loads(p.read_text()) for p in sweep_dir.glob(f"*/{ROW_FILE}")]
    return sorted(rows, key=lambda r: r["job"])


def table(rows: list[dict[str, Any]]) -> str:
    """A markdown table, one row per job; invalid jobs keep their first problem."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    swept = _swept_overrides(rows)
    for row in rows:
        cells = [_cell(swept[row["job"]] if c == "overrides" else row.get(c)) for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _swept_overrides(rows: list[dict[str, Any]]) -> dict[int, str]:
    """Each job's overrides less those every job shares (the table shows what varies)."""
    split = {r["job"]: r["overrides"].split() for r in rows}
    shared = set.intersection(*(set(o) for o in split.values())) if len(rows) > 1 else set()
    return {job: " ".join(o for o in ovs if o not in shared) for job, ovs in split.items()}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return str(value).replace("|", "\\|")


class DryRunSweepTable(Callback):
    """Hydra callback (conf/hydra/default.yaml): the table at the end of a dry-run sweep."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = read_rows(sweep_dir)
        if not rows:
            return
        text = table(rows)
        (sweep_dir / TABLE_FILE).write_text(text)
        invalid = sum(not r["valid"] for r in rows)
        print(f"\n== dry-run sweep: {len(rows)} jobs, {invalid} invalid ==\n{text}", end="")
        print(
            f"Each job's report: {sweep_dir}/<job>/{REPORT_FILE}; this table: "
            f"{sweep_dir / TABLE_FILE}"
        )
        if invalid:
            raise SystemExit(2)  # the config-error status: some job cannot run
