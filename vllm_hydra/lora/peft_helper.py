"""`PEFTHelper`: an adapter's adapter_config.json, read and checked before any weight is read.

An adapter this engine cannot run is refused with the reason: a missing file, a rank above
`lora.max_lora_rank`, a target module other than the attention and MLP projections, or a PEFT
feature the LoRA layers do not compute (DoRA, biases, extra trained modules, per-module ranks).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"

# Hugging Face module names the LoRA layers wrap; q/k/v pack into qkv_proj, gate/up into
# gate_up_proj.
SUPPORTED_TARGET_MODULES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)


class LoRAAdapterError(ValueError):
    """An adapter that cannot be served. `kind` says why: missing_files, rank_too_large,
    unsupported_target_modules or unsupported_feature."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class PEFTHelper:
    r: int
    lora_alpha: float
    target_modules: tuple[str, ...]
    use_rslora: bool = False

    @property
    def scaling(self) -> float:
        """The factor on B @ A: alpha / r, or alpha / sqrt(r) with rsLoRA."""
        if self.use_rslora:
            return self.lora_alpha / math.sqrt(self.r)
        return self.lora_alpha / self.r

    @classmethod
    def from_local_dir(cls, lora_path: str | Path, max_lora_rank: int) -> PEFTHelper:
        """Read and check `lora_path`/adapter_config.json; raises LoRAAdapterError."""
        path = Path(lora_path).expanduser()
        check_files(path)
        config = json.loads((path / CONFIG_FILE).read_text())
        _check_features(path, config)
        helper = cls(
            r=int(config["r"]),
            lora_alpha=float(config.get("lora_alpha", config["r"])),
            target_modules=_target_modules(path, config.get("target_modules")),
            use_rslora=bool(config.get("use_rslora", False)),
        )
        helper.validate(path, max_lora_rank)
        return helper

    def validate(self, path: Path, max_lora_rank: int) -> None:
        if self.r > max_lora_rank:
            raise LoRAAdapterError(
                "rank_too_large",
                f"The adapter at {path} has rank r={self.r}, above lora.max_lora_rank="
                f"{max_lora_rank}. Raise lora.max_lora_rank to at least {self.r}.",
            )
        unsupported = sorted(set(self.target_modules) - set(SUPPORTED_TARGET_MODULES))
        if unsupported:
            raise LoRAAdapterError(
                "unsupported_target_modules",
                f"The adapter at {path} targets {unsupported}; LoRA layers exist only for "
                f"{list(SUPPORTED_TARGET_MODULES)}. Train it with target_modules among those.",
            )


def check_files(path: Path) -> None:
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (path / name).is_file()]
    if not missing:
        return
    hint = ""
    if WEIGHTS_FILE in missing and (path / "adapter_model.bin").is_file():
        hint = " (adapter_model.bin is not read: save the adapter with safe_serialization)"
    raise LoRAAdapterError(
        "missing_files",
        f"{path} is not a PEFT adapter directory: no {' and no '.join(missing)}{hint}. "
        f"Point it at a directory holding {CONFIG_FILE} and {WEIGHTS_FILE}.",
    )


def _target_modules(path: Path, targets: Any) -> tuple[str, ...]:
    if targets == "all-linear":
        return SUPPORTED_TARGET_MODULES
    if isinstance(targets, str) or not targets:
        raise LoRAAdapterError(
            "unsupported_target_modules",
            f"The adapter at {path} gives target_modules={targets!r}; a list of module names "
            f"among {list(SUPPORTED_TARGET_MODULES)} is needed.",
        )
    return tuple(str(t) for t in targets)


# adapter_config.json fields whose non-default values the LoRA layers would silently ignore.
_FEATURES = {
    "use_dora": (False, None),
    "bias": ("none", None),
    "modules_to_save": (None, []),
    "rank_pattern": ({}, None),
    "alpha_pattern": ({}, None),
    "fan_in_fan_out": (False, None),
}


def _check_features(path: Path, config: dict[str, Any]) -> None:
    for key, defaults in _FEATURES.items():
        value = config.get(key)
        if value is not None and value not in defaults:
            raise LoRAAdapterError(
                "unsupported_feature",
                f"The adapter at {path} sets {key}={value!r}, which this engine does not "
                f"compute. Use an adapter with {key}={defaults[0]!r}.",
            )
    if config.get("peft_type", "LORA") != "LORA":
        raise LoRAAdapterError(
            "unsupported_feature",
            f"The adapter at {path} is peft_type={config['peft_type']!r}; only LORA is served.",
        )
