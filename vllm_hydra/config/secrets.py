"""Secrets (`server.api_key`) kept out of everything a run writes or prints.

The run dir still reproduces the run: its `.hydra/config.yaml` reads the secret from the
environment variable again, and `.hydra/overrides.yaml` drops the override that carried it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

# Secret keys -> the environment variable that supplies them in a reproduced run.
SECRET_KEYS = {"server.api_key": "VLLM_HYDRA_API_KEY"}
REDACTED = "***"


def _yaml_line(*fields: str) -> re.Pattern[str]:
    """`  api_key: value` in YAML, unless null or an interpolation (which holds no secret)."""
    names = "|".join(re.escape(f) for f in fields)
    return re.compile(rf"^(\s*(?:{names}):[ \t]*)(?!null\s*$|'?\$\{{)(\S.*)$", re.MULTILINE)


_YAML_LINE = _yaml_line(*(k.rsplit(".", 1)[1] for k in SECRET_KEYS))
_OVERRIDES = "|".join(re.escape(k) for k in SECRET_KEYS)
# `server.api_key=value` in override lists and `override_dirname`.
_OVERRIDE = re.compile(rf"(\+{{0,2}}(?:{_OVERRIDES})=)(?!\$\{{)(\"[^\"]*\"|'[^']*'|[^,\s\]]+)")


def redact_text(text: str) -> str:
    """Any printed config (YAML, override lists) with each secret value replaced."""
    return _OVERRIDE.sub(rf"\g<1>{REDACTED}", _YAML_LINE.sub(rf"\g<1>'{REDACTED}'", text))


def redact_dict(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved config dict with each set secret replaced (a copy; sections are dicts)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for key in SECRET_KEYS:
        section, field = key.split(".")
        if out.get(section, {}).get(field) is not None:
            out[section][field] = REDACTED
    return out


def is_secret_override(override: str) -> bool:
    return override.lstrip("+~").split("=", 1)[0] in SECRET_KEYS


def _reproducible_config_yaml(text: str) -> str:
    """The composed config with each literal secret read from its environment variable."""
    for key, env in SECRET_KEYS.items():
        line = _yaml_line(key.rsplit(".", 1)[1])
        text = line.sub(rf"\g<1>${{oc.env:{env},null}}", text)
    return text


def redact_run_dir(output_dir: Path, sweep_dir: Path | None) -> None:
    """Rewrite what Hydra saved before the job started (it writes the overrides verbatim)."""
    hydra_dir = output_dir / ".hydra"
    _rewrite(hydra_dir / "config.yaml", _reproducible_config_yaml)
    _rewrite(hydra_dir / "overrides.yaml", _without_secret_overrides)
    _rewrite(hydra_dir / "hydra.yaml", redact_text)
    if sweep_dir is not None:
        _rewrite(sweep_dir / "multirun.yaml", redact_text)


def _without_secret_overrides(text: str) -> str:
    overrides = yaml.safe_load(text) or []
    return yaml.safe_dump([o for o in overrides if not is_secret_override(o)])


def _rewrite(path: Path, transform: Any) -> None:
    if path.is_file():
        path.write_text(transform(path.read_text()))


class RedactSecrets(Callback):
    """Hydra callback (conf/hydra/*.yaml): redact the run dir before the job runs."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        hydra = config.hydra
        sweep = Path(hydra.sweep.dir) if hydra.mode == RunMode.MULTIRUN else None
        redact_run_dir(Path(hydra.runtime.output_dir), sweep)
