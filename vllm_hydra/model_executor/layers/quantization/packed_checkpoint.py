"""Regrouping a pre-quantized checkpoint's per-layer tensors (qweight, qzeros, scales, ...)
into the layers' runtime parameters as the tensors stream past."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch

from vllm_hydra.model_executor.utils import Weight, as_tensor

# {suffix: tensor} of one linear layer -> {parameter suffix: tensor}.
Convert = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
# A tensor the runtime layout does not keep, checked as it arrives (e.g. GPTQ's g_idx).
Check = Callable[[torch.Tensor], None]


def regroup(
    weights: Iterable[tuple[str, Weight]],
    required: tuple[str, ...],
    convert: Convert,
    checked: dict[str, Check] | None = None,
) -> Iterator[tuple[str, Weight]]:
    """Pass every tensor through except a linear layer's `required` parts, which are held
    until they have all arrived and then yielded converted, and the `checked` ones, which are
    checked and dropped. A layer left incomplete is yielded as it came, so the loader names
    what is missing or unexpected."""
    checked = checked or {}
    pending: dict[str, dict[str, Weight]] = {}
    for name, weight in weights:
        prefix, _, suffix = name.rpartition(".")
        if suffix in checked:
            checked[suffix](as_tensor(weight))
            continue
        if suffix not in required:
            yield name, weight
            continue
        parts = pending.setdefault(prefix, {})
        parts[suffix] = weight
        if len(parts) == len(required):
            tensors = {k: as_tensor(v) for k, v in pending.pop(prefix).items()}
            for param, tensor in convert(tensors).items():
                yield f"{prefix}.{param}", tensor
    for prefix, parts in pending.items():
        for suffix, weight in parts.items():
            yield f"{prefix}.{suffix}", weight
