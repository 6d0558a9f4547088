"""Reading safetensors checkpoints (one file or a sharded index) and dummy initialisation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from vllm_hydra.model_executor.layers.layernorm import RMSNorm
from vllm_hydra.model_executor.model_loader.errors import ModelLoadError
from vllm_hydra.model_executor.utils import LazyWeight

SAFETENSORS_INDEX = "model.safetensors.index.json"

# Dummy weights are uniform in [-DUMMY_RANGE, DUMMY_RANGE], like vLLM's.
DUMMY_RANGE = 1e-3


def safetensors_weight_files(model_dir: Path) -> list[Path]:
    """The shards a model.safetensors.index.json names, else every *.safetensors file."""
    index = model_dir / SAFETENSORS_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelLoadError(f"cannot read {index}: {e!r}") from e
        files = [model_dir / name for name in sorted(set(weight_map.values()))]
        absent = [str(f) for f in files if not f.is_file()]
        if absent:
            raise ModelLoadError(f"{index} names shards that do not exist: {', '.join(absent)}")
        return files
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{model_dir} holds no *.safetensors weights")
    return files


def safetensors_weights_iterator(
    files: list[Path], seen: dict[str, Path]
) -> Iterator[tuple[str, LazyWeight]]:
    """Yield (name, lazy CPU tensor) from each file; records name -> file in `seen` as it goes.

    Nothing is read until a weight loader asks for its rank's part (`LazyWeight`)."""
    for path in files:
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for name in f.keys():  # noqa: SIM118 (a safe_open handle is not a dict)
                    seen[name] = path
                    yield name, LazyWeight(f.get_slice(name))
        except ModelLoadError:
            raise
        except Exception as e:  # safetensors raises its own error types for a bad file
            raise ModelLoadError(
                f"cannot read {path}: {e} (is the file truncated or not safetensors?)"
            ) from e


def _fill_dummy(param: torch.Tensor, generator: torch.Generator) -> None:
    """Uniform small floats; any code for integer (packed quantized) tensors; fp8 via float."""
    if not param.dtype.is_floating_point:
        info = torch.iinfo(param.dtype)
        param.random_(info.min, info.max, generator=generator)
    elif param.element_size() == 1:  # fp8: no random kernels of its own
        tmp = torch.empty(param.shape, device=param.device)
        param.copy_(tmp.uniform_(-DUMMY_RANGE, DUMMY_RANGE, generator=generator))
    else:
        param.uniform_(-DUMMY_RANGE, DUMMY_RANGE, generator=generator)


@torch.no_grad()
def initialize_dummy_weights(model: nn.Module, seed: int) -> None:
    """Random small weights of the right shapes and dtypes (load.format=dummy).

    Norm weights are set to 1 so activations keep their scale and outputs still depend on
    the input.
    """
    generators: dict[torch.device, torch.Generator] = {}
    for param in model.parameters():
        if param.device not in generators:
            generators[param.device] = torch.Generator(param.device).manual_seed(seed)
        _fill_dummy(param, generators[param.device])
    for module in model.modules():
        if isinstance(module, RMSNorm):
            module.weight.fill_(1.0)
