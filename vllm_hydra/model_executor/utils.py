"""Helpers shared by the layers' weight loaders."""

from __future__ import annotations

from typing import Any

import torch


class WeightShapeError(ValueError):
    """A checkpoint tensor whose shape does not fit the parameter (slice) it is loaded into."""

    def __init__(self, expected: tuple[int, ...], got: tuple[int, ...]) -> None:
        self.expected = expected
        self.got = got
        super().__init__(f"expected shape {list(expected)}, got {list(got)}")


def set_weight_attrs(param: torch.Tensor, attrs: dict[str, Any]) -> None:
    """Attach loader hooks (e.g. `weight_loader`) to a parameter, as vLLM does."""
    for key, value in attrs.items():
        setattr(param, key, value)


class LazyWeight:
    """A checkpoint tensor not read yet (a safetensors slice): `narrow` and indexing read only
    the bytes of the part asked for, so a tensor-parallel rank never reads the other shards."""

    def __init__(self, safe_slice: Any) -> None:
        self._slice = safe_slice

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self._slice.get_shape())

    def narrow(self, dim: int, start: int, length: int) -> torch.Tensor:
        index = (slice(None),) * dim + (slice(start, start + length),)
        return self._slice[index]

    def __getitem__(self, index: Any) -> torch.Tensor:
        return self._slice[index]

    def materialize(self) -> torch.Tensor:
        """The whole tensor (for parameters every rank holds in full)."""
        return self._slice[:] if len(self.shape) else self._slice[...]


# A checkpoint tensor as the weight loaders receive it.
Weight = torch.Tensor | LazyWeight


def as_tensor(weight: Weight) -> torch.Tensor:
    return weight.materialize() if isinstance(weight, LazyWeight) else weight


def copy_weight(dst: torch.Tensor, src: Weight) -> None:
    """Copy a checkpoint tensor into a parameter (slice), casting dtype, checking the shape."""
    if tuple(dst.shape) != tuple(src.shape):
        raise WeightShapeError(tuple(dst.shape), tuple(src.shape))
    dst.copy_(as_tensor(src))


def shard(loaded: Weight, dim: int, rank: int, world_size: int) -> Weight:
    """This rank's equal slice of a full checkpoint tensor along `dim` (read lazily).

    A wrong-sized checkpoint tensor gives a wrong-sized slice, which `copy_weight` reports.
    """
    if world_size == 1:
        return loaded
    size = loaded.shape[dim] // world_size
    return loaded.narrow(dim, rank * size, size)


def default_weight_loader(param: torch.Tensor, loaded: torch.Tensor) -> None:
    """Load an unsharded parameter (norm weights, replicated tensors)."""
    copy_weight(param.data, loaded)


class CheckpointMismatchError(ValueError):
    """Checkpoint tensors the model has no place for, or whose shapes do not fit.

    Raised by a model's load_weights after it has read every tensor, so that one error lists
    every problem; the model loader adds the files and the missing tensors.
    """

    def __init__(self, unexpected: list[str], mis_shaped: dict[str, str]) -> None:
        self.unexpected = unexpected
        self.mis_shaped = mis_shaped  # checkpoint name -> what was wrong
        super().__init__(f"unexpected tensors: {unexpected}; mis-shaped tensors: {mis_shaped}")
