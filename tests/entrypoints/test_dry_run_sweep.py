"""`serve.py -m dry_run=true`: every job runs, each writes its report and row, and a table ends
the sweep (the refusal of a real multirun is a case of tests/test_serve_misconfig.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from vllm_hydra.entrypoints.dry_run_sweep import table

REPO = Path(__file__).resolve().parents[2]


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "serve.py", "-m", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180)


def test_a_dry_run_sweep_runs_past_an_invalid_job(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = serve(
        "dry_run=true", "model=llama3", "device=cuda", "parallel.tp=3,4", f"hydra.sweep.dir={sweep}"
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output  # one job cannot run
    assert "== dry-run sweep: 2 jobs, 1 invalid ==" in result.stdout
    rows = [json.loads((sweep / str(n) / "dry_run.json").read_text()) for n in (0, 1)]
    assert not rows[0]["valid"] and "parallel.tp=3 does not divide" in rows[0]["problem"]
    assert rows[1]["valid"] and rows[1]["devices"] == "4 cuda" and rows[1]["max_model_len"] == 8192
    assert "== memory plan" in (sweep / "1" / "dry_run.txt").read_text()
    assert (sweep / "dry_run_table.md").read_text() in result.stdout
    assert "| 1 | parallel.tp=4 | yes | 8192 |" in result.stdout
    assert "Traceback" not in output


def test_the_table_shows_what_varies() -> None:
    rows = [
        {"job": 0, "overrides": "dry_run=true parallel.tp=1", "valid": True, "max_model_len": 8},
        {"job": 1, "overrides": "dry_run=true parallel.tp=3", "valid": False, "problem": "a|b"},
    ]
    lines = table(rows).splitlines()
    assert lines[2] == "| 0 | parallel.tp=1 | yes | 8 |  |  |  |  |"
    assert lines[3] == "| 1 | parallel.tp=3 | NO |  |  |  |  | a\\|b |"
