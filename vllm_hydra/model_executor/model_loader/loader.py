"""`get_model`: build the registry's class for a config, in its dtype and device, with weights.

`load.format` auto/safetensors reads the checkpoint (one file or a sharded index) and refuses a
checkpoint that does not match the architecture with one ModelLoadError listing every missing,
unexpected and mis-shaped tensor; `dummy` fills random weights and reads no file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from vllm_hydra.config import LoadFormat, VllmConfig
from vllm_hydra.model_executor.layers.quantization import (
    QuantizationConfig,
    get_quantization_config,
    set_quant_config,
)
from vllm_hydra.model_executor.layers.utils import pack_linear_weights
from vllm_hydra.model_executor.model_loader.errors import ModelLoadError
from vllm_hydra.model_executor.model_loader.weight_utils import (
    initialize_dummy_weights,
    safetensors_weight_files,
    safetensors_weights_iterator,
)
from vllm_hydra.model_executor.models.registry import get_model_cls
from vllm_hydra.model_executor.utils import CheckpointMismatchError

logger = logging.getLogger(__name__)

# Longest list of tensor names an error message spells out.
MAX_LISTED = 20


@contextmanager
def set_default_torch_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Parameters created inside get the model's dtype; the old default comes back after."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def get_model(vllm_config: VllmConfig) -> nn.Module:
    """The model for `vllm_config`, weights loaded, in eval mode."""
    model_cls = get_model_cls(vllm_config.arch.architecture)
    dtype = getattr(torch, vllm_config.model.dtype.value)
    device = torch.device(vllm_config.device.type.value)
    quant_config = get_quantization_config(vllm_config)
    with set_default_torch_dtype(dtype), device, set_quant_config(quant_config):
        model = model_cls(vllm_config)
    if vllm_config.load.format is LoadFormat.dummy:
        initialize_dummy_weights(model, vllm_config.model.seed)
    else:
        if vllm_config.model_dir is None:
            raise ModelLoadError(
                f"model.path={vllm_config.model.path} is not on disk; only load.format=dummy "
                "can run it"
            )
        load_checkpoint(model, Path(vllm_config.model_dir), quant_config)
    with set_default_torch_dtype(dtype):
        process_weights_after_loading(model, quant_config)
    pack_linear_weights(model)  # CPU bf16/fp16: eager and torch.compile alike
    return model.eval()


@torch.no_grad()
def process_weights_after_loading(
    model: nn.Module, quant_config: QuantizationConfig | None
) -> None:
    """Each linear layer's method turns its loaded tensors into its kernel's layout (online
    quantization happens here)."""
    layers = [m for m in model.modules() if hasattr(m, "quant_method")]
    for layer in layers:
        layer.quant_method.process_weights_after_loading(layer)
    if quant_config is not None:
        logger.info("quantization: %s on %d linear layers", quant_config.get_name(), len(layers))


@torch.no_grad()
def load_checkpoint(
    model: nn.Module, model_dir: Path, quant_config: QuantizationConfig | None = None
) -> None:
    """Load every safetensors tensor of `model_dir`; raise if any parameter stays unloaded.
    A pre-quantized checkpoint's tensors are first regrouped into the layers' parameters."""
    files = safetensors_weight_files(model_dir)
    seen: dict[str, Path] = {}
    weights = safetensors_weights_iterator(files, seen)
    if quant_config is not None:
        weights = quant_config.adapt_checkpoint(weights)
    try:
        loaded = model.load_weights(weights)
        mismatch = None
    except CheckpointMismatchError as e:
        loaded, mismatch = set(), e
    missing = _missing_tensors(model, loaded, seen)
    if missing or mismatch is not None:
        raise ModelLoadError(_mismatch_message(model, model_dir, files, missing, mismatch, seen))


def _missing_tensors(model: nn.Module, loaded: set[str], seen: dict[str, Path]) -> list[str]:
    """Checkpoint names that were never read for the parameters left unloaded."""
    packed: dict[str, list[str]] = getattr(model, "packed_modules_mapping", {})
    missing = []
    for name, _ in model.named_parameters():
        if name in loaded:
            continue
        sources = [name]
        for fused, parts in packed.items():
            if f".{fused}." in name:
                sources = [name.replace(f".{fused}.", f".{part}.") for part in parts]
        missing += [s for s in sources if s not in seen]
    return missing


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    more = len(names) - MAX_LISTED
    return shown + (f", ... and {more} more" if more > 0 else "")


def _mismatch_message(
    model: nn.Module,
    model_dir: Path,
    files: list[Path],
    missing: list[str],
    mismatch: CheckpointMismatchError | None,
    seen: dict[str, Path],
) -> str:
    where = ", ".join(f.name for f in files)
    lines = [f"the checkpoint in {model_dir} ({where}) does not match {type(model).__name__}:"]
    if missing:
        lines.append(f"  missing tensors ({len(missing)}): {_listed(missing)}")
    if mismatch is not None and mismatch.unexpected:
        names = [f"{n} (in {seen[n].name})" for n in mismatch.unexpected]
        lines.append(f"  unexpected tensors ({len(names)}): {_listed(names)}")
    if mismatch is not None and mismatch.mis_shaped:
        names = [f"{n} (in {seen[n].name}): {why}" for n, why in mismatch.mis_shaped.items()]
        lines.append(f"  mis-shaped tensors ({len(names)}): {_listed(names)}")
    lines.append("  Is model.path the checkpoint this config.json describes?")
    return "\n".join(lines)
