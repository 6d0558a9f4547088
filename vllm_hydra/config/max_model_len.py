"""`model.max_model_len`: unset (the model's limit), a number, or `auto` (what the KV cache holds).

vLLM's `max_model_len=-1` auto-fit: the largest length one request can have with the KV cache
the plan gives, capped by the model's own limit. Each resolved value carries its reason, which
the dry run and the provenance listing print.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from vllm_hydra.config.memory_plan import plan_memory
from vllm_hydra.config.model_arch import ModelArchConfig
from vllm_hydra.config.scheduler import SchedulerConfig
from vllm_hydra.config.sizes import MAX_MODEL_LEN_AUTO
from vllm_hydra.config.vllm import VllmConfig


def is_auto(requested: int | None) -> bool:
    return requested == MAX_MODEL_LEN_AUTO


def initial_max_model_len(requested: int | None, arch: ModelArchConfig) -> tuple[int, str]:
    """The value before any auto-fit, and why."""
    limit = arch.max_model_len_limit
    if requested is None:
        return limit, f"unset: the model's limit ({arch.max_len_key} in {arch.source})"
    if is_auto(requested):
        return limit, "auto"  # fitted to the KV cache once the plan is known
    return requested, ""


def auto_fit_max_model_len(
    config: VllmConfig,
    scheduler: SchedulerConfig,
    resolve_scheduler: Callable[[SchedulerConfig, int], SchedulerConfig],
) -> VllmConfig:
    """`model.max_model_len=auto`: the model's limit, or what the KV cache holds when less.
    `scheduler` is the section as written; its unset token budget follows the fitted length."""
    arch, plan = config.arch, plan_memory(config)
    limit, held = arch.max_model_len_limit, plan.kv_cache_tokens
    if held >= limit or held <= 0:  # none held: the KV cache rule reports it
        reason = (
            f"auto: the model's limit ({arch.max_len_key} in {arch.source}); the KV cache "
            f"holds {held:,} tokens ({plan.budget_key})"
        )
        return replace(config, max_model_len_reason=reason)
    reason = (
        f"auto: the KV cache holds {held:,} tokens ({plan.budget_key}), fewer than the "
        f"model's limit {limit:,} ({arch.max_len_key})"
    )
    return replace(
        config,
        model=replace(config.model, max_model_len=held),
        scheduler=resolve_scheduler(scheduler, held),
        max_model_len_reason=reason,
    )
