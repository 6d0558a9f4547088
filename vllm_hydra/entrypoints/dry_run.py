"""`dry_run=true`: what a run would use and how memory would be spent, with no weight loaded."""

from __future__ import annotations

from vllm_hydra.config.memory_plan import plan_memory
from vllm_hydra.config.provenance import Origin, describe_provenance
from vllm_hydra.config.support import unsupported_features
from vllm_hydra.config.vllm import VllmConfig


def derived_values(config: VllmConfig) -> list[tuple[str, str]]:
    """The values `create_vllm_config` worked out, as (name, value) rows."""
    arch, sched = config.arch, config.scheduler
    return [
        (
            "model",
            f"{config.model.name} ({arch.architecture}, {arch.num_params() / 1e6:,.1f}M "
            f"params, from {arch.source})",
        ),
        ("device", config.device.type.value),
        (
            "dtype",
            f"{config.model.dtype.value} ({config.dtype_reason}; checkpoint: "
            f"{arch.checkpoint_dtype})",
        ),
        ("quantization", config.quantization_method or "none"),
        ("kv cache dtype", config.cache.cache_dtype.value),
        (
            "max_model_len",
            f"{config.model.max_model_len} (model limit: {arch.max_model_len_limit})"
            + (f"; {config.max_model_len_reason}" if config.max_model_len_reason else ""),
        ),
        ("max_num_batched_tokens", str(sched.max_num_batched_tokens)),
        (
            "executor backend",
            f"{config.parallel.backend.value} (world size "
            f"{config.parallel.world_size}, dp {config.parallel.dp})",
        ),
        ("devices needed", _devices_needed(config)),
        ("attention backend", config.attention.backend.value),
        ("served model name", config.served_model_name),
    ]


def _devices_needed(config: VllmConfig) -> str:
    p = config.parallel
    kind = "GPUs" if config.device.type.value == "cuda" else "processes on CPU cores"
    return f"{p.world_size * p.dp} {kind} (tp {p.tp} x pp {p.pp} x dp {p.dp})"


def dry_run_report(
    config: VllmConfig, resolved_yaml: str, origins: list[Origin] | None = None
) -> str:
    """The full dry-run printout: resolved config, where the non-default values came from,
    derived values, memory plan, refusals."""
    rows = derived_values(config)
    width = max(len(k) for k, _ in rows)
    parts = ["== resolved config ==", resolved_yaml.rstrip(), ""]
    if origins is not None:
        parts += [
            "== non-default values (where each came from) ==",
            describe_provenance(origins),
            "",
        ]
    parts += [
        "== derived values ==",
        "\n".join(f"  {k:<{width}}  {v}" for k, v in rows),
        "",
        "== memory plan (per rank; every dp engine has its own) ==",
        plan_memory(config).describe(),
    ]
    refusals = unsupported_features(config)
    if refusals:
        parts += ["", "== a real run would refuse ==", *(f"  - {r}" for r in refusals)]
    return "\n".join(parts) + "\n"
