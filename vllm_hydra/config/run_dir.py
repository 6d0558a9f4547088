"""The run dir reproduces its run: `python serve.py --config-dir <run>/.hydra --config-name config`.

Hydra saves the composed config without the defaults list that chose Hydra's own settings, so
composing it again would put the reproduction in Hydra's stock run dir, without this project's
callbacks (secret redaction). This callback gives `.hydra/config.yaml` back the one entry it
needs: the `hydra` option the run used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

HEADER = "# Reproduce: python {app} --config-dir {dir} --config-name config\n"


def reproducible_config_yaml(text: str, hydra_option: str, app: str, directory: Path) -> str:
    """`text` (a saved config.yaml) with a defaults list selecting `hydra: <option>`."""
    if text.lstrip().startswith(("defaults:", "# Reproduce:")):
        return text  # already done (a reproduction of a reproduction)
    header = HEADER.format(app=app, dir=directory)
    return f"{header}defaults:\n  - hydra: {hydra_option}\n  - _self_\n{text}"


class ReproducibleRunDir(Callback):
    """Hydra callback (conf/hydra/*.yaml): make `.hydra/config.yaml` composable on its own."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        hydra = config.hydra
        option = hydra.runtime.choices.get("hydra")
        path = Path(hydra.runtime.output_dir) / hydra.output_subdir / "config.yaml"
        if option is None or hydra.output_subdir is None or not path.is_file():
            return
        app = f"{hydra.job.name}.py"
        path.write_text(reproducible_config_yaml(path.read_text(), option, app, path.parent))
