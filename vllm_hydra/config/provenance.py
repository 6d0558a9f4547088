"""Where each value of a run came from: the schema default, a group option, the profile, `local`,
the command line, the environment, or `create_vllm_config` (with the reason).

vLLM logs its non-default arguments at start-up; NIM tracks the layer each value came from.
Hydra merges its layers into one config and keeps no record, so this reads the run's files
again from Hydra's config repository (the primary config, each group option, then the profile
and `local`), and gives each value the last source that set it, in Hydra's merge order: a file,
then the environment (an `${oc.env:...}` interpolation), then the command line. A value
`create_vllm_config` changed is `derived`, with its reason. Only values that differ from the
schema default are listed; a secret's value is never shown.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vllm_hydra.config.resolved import plain_value
from vllm_hydra.config.secrets import REDACTED, SECRET_KEYS
from vllm_hydra.config.sizes import parse_sizes
from vllm_hydra.config.vllm import EngineSections, ServeConfig, VllmConfig

# Groups laid over the options (`# @package _global_` or your own settings), in merge order.
OVERLAY_GROUPS = ("profile", "local")


@dataclass(frozen=True)
class Origin:
    key: str
    value: Any
    source: str


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted keys of nested dicts; lists and other values are leaves (an empty dict too)."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from flatten(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip("."), value


def _sections(obj: Any) -> dict[str, Any]:
    """The engine sections of a ServeConfig/VllmConfig as plain values."""
    return {
        f.name: plain_value(dataclasses.asdict(getattr(obj, f.name)))
        for f in dataclasses.fields(EngineSections)
    }


def _composed_values(cfg: DictConfig) -> dict[str, Any]:
    """What the user's layers say, sizes parsed (32k -> 32000) as the engine reads them."""
    sections, _ = parse_sizes(OmegaConf.to_object(_with_schema(cfg)))
    return dict(flatten(_sections(sections)))


def _with_schema(cfg: DictConfig) -> DictConfig:
    if dataclasses.is_dataclass(OmegaConf.get_type(cfg)):
        return cfg
    from vllm_hydra.config.store import schema_node

    return OmegaConf.merge(schema_node(ServeConfig), cfg)  # a config without its schema


def _raw_values(cfg: DictConfig) -> dict[str, Any]:
    return dict(flatten(OmegaConf.to_container(cfg, resolve=False)))


class _Layers:
    """The YAML files the run composed, read again from Hydra's config repository (inside the
    running app): which keys each one sets, and which options an overlay chose."""

    def __init__(self, config_name: str, choices: dict[str, Any], task: list[str]) -> None:
        from hydra.core.global_hydra import GlobalHydra

        loader = GlobalHydra.instance().config_loader()
        self.repository = loader.repository  # type: ignore[attr-defined]
        self.choices = {g: c for g, c in choices.items() if not g.startswith("hydra")}
        self.task = task
        self.chosen_by: dict[str, str] = {}  # group -> the overlay whose defaults chose it
        # (layer name, keys its file sets), in merge order: the primary config (a run dir's
        # saved config.yaml when reproducing one), group options, then the overlays.
        self.files: list[tuple[str, set[str]]] = [
            (f"{config_name}.yaml", self._keys("", config_name))
        ]
        self.files += [
            (f"{group}={option}", self._keys(group, option))
            for group, option in self.choices.items()
            if option is not None and group not in OVERLAY_GROUPS
        ]
        for group in OVERLAY_GROUPS:
            if self.choices.get(group) is not None:
                option = self.choices[group]
                self.files.append((f"{group}={option}", self._keys(group, option)))

    def _keys(self, group: str, option: str) -> set[str]:
        result = self.repository.load_config(f"{group}/{option}" if group else option)
        if result is None:
            return set()
        package = result.header.get("package") or group or "_global_"
        prefix = "" if package == "_global_" else f"{package.replace('_here_', group)}."
        if group in OVERLAY_GROUPS:
            for default in result.defaults_list or []:
                target = getattr(default, "group", None)
                if getattr(default, "override", False) and target:
                    self.chosen_by[target.lstrip("/")] = f"{group}={option}"
        container = OmegaConf.to_container(result.config, resolve=False)
        return {prefix + k for k, _ in flatten(container) if k}

    def on_command_line(self) -> tuple[set[str], set[str]]:
        """(keys set on the command line, groups chosen there)."""
        from hydra.core.override_parser.overrides_parser import OverridesParser

        keys, groups = set(), set()
        for override in OverridesParser.create().parse_overrides(self.task):
            name = override.key_or_group
            (groups if name in self.choices else keys).add(name)
        return keys, groups


def config_provenance(cfg: DictConfig, config: VllmConfig) -> list[Origin]:
    """Each resolved value that differs from the schema default, with where it came from.
    Call inside the Hydra app that composed `cfg` (serve.py)."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    name = hc.job.config_name or "serve"
    layers = _Layers(name, dict(hc.runtime.choices), list(hc.overrides.task))
    defaults = dict(flatten(_sections(ServeConfig())))
    final = _composed_values(cfg)
    raw = _raw_values(cfg)
    keys, groups = layers.on_command_line()
    origins = []
    for key, value in flatten(_sections(config)):
        if value == defaults.get(key) and value == final.get(key):
            continue
        if key not in final or value != final[key]:
            source = f"derived: {derived_reason(key, config) or 'create_vllm_config'}"
        else:
            source = _source(key, raw.get(key), keys, groups, layers)
        origins.append(Origin(key, REDACTED if key in SECRET_KEYS else value, source))
    return origins


def _source(key: str, raw: Any, keys: set[str], groups: set[str], layers: _Layers) -> str:
    """The last layer that set `key`: the command line, the environment, a file, else default."""
    if _covers(key, keys):
        return "command line"
    env = _env_name(raw)
    if env is not None:
        return f"environment ({env})"
    source = None
    for name, file_keys in layers.files:
        if _covers(key, file_keys):
            source = name
    if source is None:
        return "default"
    group = source.split("=")[0]
    if group in groups and group not in OVERLAY_GROUPS:
        return f"{source} (command line)"
    if group in layers.chosen_by:
        return f"{source} (chosen by {layers.chosen_by[group]})"
    return source


def _covers(key: str, keys: set[str]) -> bool:
    """`key` or a section above it is among `keys`."""
    return any(key == k or key.startswith(f"{k}.") for k in keys)


def _env_name(raw: Any) -> str | None:
    """`${oc.env:NAME,default}` -> NAME."""
    if not isinstance(raw, str) or "${oc.env:" not in raw:
        return None
    return raw.split("${oc.env:", 1)[1].split(",")[0].split("}")[0].strip()


def derived_reason(key: str, config: VllmConfig) -> str:
    """Why `create_vllm_config` set `key` as it did (the values it resolves)."""
    reasons = {
        "model.dtype": config.dtype_reason,
        "model.max_model_len": config.max_model_len_reason,
        "model.quantization": f"the checkpoint's quantization_config ({config.arch.source})",
        "device.type": "auto: cuda where torch sees a CUDA device, else cpu",
        "device.memory_gib": "the CUDA device's total memory",
        "cache.cache_dtype": "auto: the model's dtype",
        "cache.kv_cache_memory_gib": "the CPU default: 4 GiB, less where the host's ranks "
        "would take over a quarter of its memory",
        "cache.memory_utilization": "the CUDA default",
        "parallel.backend": "auto: uni for one rank, mp for more",
        "scheduler.max_num_batched_tokens": "unset: 2048 with chunked prefill, else at least "
        "max_model_len; at most max_num_seqs x max_model_len",
        "attention.backend": "auto: triton on CUDA, torch on CPU",
        "compilation.cudagraph_capture_sizes": "1, 2, 4 and multiples of 8 up to max_num_seqs",
    }
    return reasons.get(key, "")


def provenance_rows(origins: list[Origin]) -> list[tuple[str, str]]:
    return [(f"{o.key}={_shown(o.value)}", o.source) for o in origins]


def describe_provenance(origins: list[Origin]) -> str:
    rows = provenance_rows(origins)
    if not rows:
        return "  (every value is the schema default)"
    width = min(max(len(k) for k, _ in rows), 60)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def provenance_dict(origins: list[Origin]) -> dict[str, str]:
    """key -> origin, for resolved_config.yaml."""
    return {o.key: o.source for o in origins}


def _shown(value: Any) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= 60 else text[:57] + "..."
