"""Serve a model with an OpenAI-compatible API, configured by Hydra.

python serve.py                                  # the embedded tiny model on 127.0.0.1:8000
python serve.py model=llama3 parallel.tp=4       # another composition
python serve.py profile=h100-llama3-8b           # a committed deployment profile
python serve.py dry_run=true model=llama3        # validate and plan memory, load nothing
python serve.py --cfg job                        # print the composed config
python serve.py -m dry_run=true parallel.tp=1,2,4 model=llama3 device=cuda   # a table of plans
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from vllm_hydra.config import ServeConfig, VllmConfig, check_supported, create_vllm_config
from vllm_hydra.config.command_line import check_optional_choices, run_hydra_app
from vllm_hydra.config.errors import ConfigError, exit_on_config_error
from vllm_hydra.config.provenance import (
    Origin,
    config_provenance,
    describe_provenance,
    provenance_dict,
)
from vllm_hydra.config.resolved import resolved_config_yaml
from vllm_hydra.config.store import register_configs
from vllm_hydra.entrypoints.dry_run import dry_run_report
from vllm_hydra.entrypoints.dry_run_sweep import (
    invalid_row,
    plan_row,
    refuse_real_multirun,
    write_job,
)
from vllm_hydra.plugins import PluginLoadError

logger = logging.getLogger("vllm_hydra.serve")

# Exit status of a config that cannot run (Hydra's own compose errors exit 1).
# Exit status of an engine that failed to start (the root cause is printed).
EXIT_STARTUP_FAILURE = 3

register_configs()


def _output_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def _save_resolved(yaml_text: str) -> None:
    """Write the resolved config beside Hydra's own, so a run can be reproduced exactly."""
    (_output_dir() / "resolved_config.yaml").write_text(yaml_text)


def _configure(cfg: DictConfig) -> tuple[VllmConfig, list[Origin]]:
    """Validate and resolve; the run dir gets the resolved config with its provenance."""
    check_optional_choices()
    config: VllmConfig = create_vllm_config(cfg, dry_run=bool(cfg.dry_run))
    origins = config_provenance(cfg, config)
    _save_resolved(resolved_config_yaml(config, provenance_dict(origins)))
    return config, origins


def _report(config: VllmConfig, origins: list[Origin]) -> str:
    return dry_run_report(config, resolved_config_yaml(config), origins)


def run(cfg: DictConfig) -> None:
    if HydraConfig.get().mode is RunMode.MULTIRUN:
        return run_sweep_job(cfg)
    try:
        config, origins = _configure(cfg)
    except PluginLoadError as e:
        print(f"Plugin error: {e}", file=sys.stderr)
        sys.exit(EXIT_STARTUP_FAILURE)
    if cfg.dry_run:
        sys.stdout.write(_report(config, origins))
        return
    logger.info(
        "Non-default config values (and where each came from):\n%s", describe_provenance(origins)
    )
    check_supported(config)
    from vllm_hydra.engine.exceptions import EngineStartupError
    from vllm_hydra.entrypoints.api_server import run_server

    try:
        exit_code = run_server(config)
    except EngineStartupError as e:
        print(f"Engine start-up failed: {e}", file=sys.stderr)
        sys.exit(EXIT_STARTUP_FAILURE)
    _exit_now(exit_code)


def run_sweep_job(cfg: DictConfig) -> None:
    """One job of `serve.py -m`: a dry run whose report and row go to the job's directory
    (the sweep's table comes at its end, DryRunSweepTable); a real multirun is refused."""
    if not cfg.dry_run:
        raise refuse_real_multirun()
    job = HydraConfig.get().job
    overrides = list(HydraConfig.get().overrides.task)
    try:
        config, origins = _configure(cfg)
    except (ConfigError, PluginLoadError) as e:
        row, report = invalid_row(job.num, overrides, e), f"Config error: {e}\n"
    else:
        row, report = plan_row(job.num, overrides, config), _report(config, origins)
    write_job(_output_dir(), row, report)
    status = "ok" if row["valid"] else "INVALID"
    print(f"  job {job.num}: {status}  ({_output_dir() / 'dry_run.txt'})")


def _exit_now(exit_code: int) -> None:
    """The server stopped: engines joined, sockets closed, logs written. Skip the interpreter's
    teardown, which with torch loaded takes seconds in native code (2.3 s on a 2-core machine)
    and would make a SIGTERM'd server slow to exit, as the engine process does."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)


@hydra.main(config_path="conf", config_name="serve", version_base="1.3")
def main(cfg: DictConfig) -> None:
    exit_on_config_error(lambda: run(cfg))


if __name__ == "__main__":
    run_hydra_app(ServeConfig, sys.argv[1:], main)
