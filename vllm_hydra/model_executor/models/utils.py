"""Mapping Hugging Face checkpoint tensors onto a model's (possibly fused) parameters."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from vllm_hydra.model_executor.utils import (
    CheckpointMismatchError,
    WeightShapeError,
    default_weight_loader,
)


class PPMissingLayer(nn.Identity):
    """A placeholder for a layer that lives on another pipeline stage; it keeps the module
    indices (and so the parameter names) the same on every stage."""


def pp_missing_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Name prefixes of the modules held by other pipeline stages."""
    return tuple(f"{n}." for n, m in model.named_modules() if isinstance(m, PPMissingLayer))


# (fused param, checkpoint module, shard id): q/k/v -> qkv_proj, gate/up -> gate_up_proj.
StackedParams = list[tuple[str, str, str | int]]


def _target(name: str, stacked: StackedParams) -> tuple[str, str | int | None]:
    """The model parameter a checkpoint name loads into, and its shard id (None: whole)."""
    for fused, part, shard_id in stacked:
        if f".{part}." in name:
            return name.replace(f".{part}.", f".{fused}."), shard_id
    return name, None


def load_weights_by_name(
    model: nn.Module,
    weights: Iterable[tuple[str, torch.Tensor]],
    stacked: StackedParams,
    skip: tuple[str, ...] = (),
) -> set[str]:
    """Load every (name, tensor) through its parameter's weight_loader.

    Returns the parameters loaded in full: a fused parameter counts only once all its shards
    arrived. Names containing a `skip` substring, and those of modules on other pipeline
    stages, are ignored. Unknown names and shape
    mismatches are collected and raised together as CheckpointMismatchError.
    """
    params = dict(model.named_parameters())
    elsewhere = pp_missing_prefixes(model)
    shards: dict[str, set[str | int | None]] = {}
    unexpected: list[str] = []
    mis_shaped: dict[str, str] = {}
    for name, tensor in weights:
        if any(s in name for s in skip):
            continue
        target, shard_id = _target(name, stacked)
        if elsewhere and target.startswith(elsewhere):
            continue  # another pipeline stage loads it
        param = params.get(target)
        if param is None:
            unexpected.append(name)
            continue
        loader = getattr(param, "weight_loader", default_weight_loader)
        try:
            if shard_id is None:
                loader(param, tensor)
            else:
                loader(param, tensor, shard_id)
        except WeightShapeError as e:
            mis_shaped[name] = str(e)
            continue
        shards.setdefault(target, set()).add(shard_id)
    if unexpected or mis_shaped:
        raise CheckpointMismatchError(unexpected, mis_shaped)
    return {name for name, got in shards.items() if got >= _expected_shards(name, stacked)}


def _expected_shards(param_name: str, stacked: StackedParams) -> set[str | int | None]:
    ids = {shard_id for fused, _, shard_id in stacked if f".{fused}." in param_name}
    return ids or {None}
