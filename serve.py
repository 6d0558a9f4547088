"""Serve a model with an OpenAI-compatible API, configured by Hydra.

python serve.py                                  # the embedded tiny model on 127.0.0.1:8000
python serve.py model=llama3 parallel.tp=4       # another composition
python serve.py profile=h100-llama3-8b           # a committed deployment profile
python serve.py dry_run=true model=llama3        # validate and plan memory, load nothing
python serve.py --cfg job                        # print the composed config
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from vllm_hydra.config import ServeConfig, VllmConfig, check_supported, create_vllm_config
from vllm_hydra.config.command_line import check_optional_choices, run_hydra_app
from vllm_hydra.config.errors import exit_on_config_error
from vllm_hydra.config.provenance import config_provenance, describe_provenance, provenance_dict
from vllm_hydra.config.resolved import resolved_config_yaml
from vllm_hydra.config.store import register_configs
from vllm_hydra.entrypoints.dry_run import dry_run_report
from vllm_hydra.plugins import PluginLoadError

logger = logging.getLogger("vllm_hydra.serve")

# Exit status of a config that cannot run (Hydra's own compose errors exit 1).
# Exit status of an engine that failed to start (the root cause is printed).
EXIT_STARTUP_FAILURE = 3

register_configs()


def _save_resolved(yaml_text: str) -> None:
    """Write the resolved config beside Hydra's own, so a run can be reproduced exactly."""
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    (output_dir / "resolved_config.yaml").write_text(yaml_text)


def run(cfg: DictConfig) -> None:
    check_optional_choices()
    try:
        config: VllmConfig = create_vllm_config(cfg, dry_run=bool(cfg.dry_run))
    except PluginLoadError as e:
        print(f"Plugin error: {e}", file=sys.stderr)
        sys.exit(EXIT_STARTUP_FAILURE)
    origins = config_provenance(cfg, config)
    _save_resolved(resolved_config_yaml(config, provenance_dict(origins)))
    if cfg.dry_run:
        sys.stdout.write(dry_run_report(config, resolved_config_yaml(config), origins))
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
