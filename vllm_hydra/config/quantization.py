"""`model.quantization`: which quantization method serves the model, and the checks that refuse
a checkpoint's format the engine cannot run, before any weight is read (vLLM's
`ModelConfig._verify_quantization`).

`null` reads the checkpoint's `quantization_config` (none: unquantized); `fp8` and `int8`
quantize an ordinary checkpoint online; `awq`, `gptq` and `compressed-tensors` name the format
a pre-quantized checkpoint must declare.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from vllm_hydra.config.errors import ConfigError

# The functional form keeps vLLM's spelling "compressed-tensors" as the member name, which is
# what Hydra matches an override against.
QuantizationMethod = Enum(
    "QuantizationMethod",
    [(m, m) for m in ("fp8", "int8", "compressed-tensors", "awq", "gptq")],
)

ONLINE_METHODS = ("fp8", "int8")
CHECKPOINT_METHODS = ("compressed-tensors", "awq", "gptq")

# Group sizes the int4 kernels implement (-1: one group over the whole input dimension).
SUPPORTED_GROUP_SIZES = (-1, 32, 64, 128)
# compressed-tensors formats (config.json "format") the loaders read.
SUPPORTED_CT_FORMATS = ("pack-quantized", "int-quantized", "naive-quantized", "float-quantized")


def resolve_quantization(method: Any, checkpoint: dict[str, Any] | None, source: str) -> str | None:
    """The method that serves the model: the key's, else the checkpoint's; raises ConfigError
    for a format the engine cannot run or a key that contradicts the checkpoint."""
    key = None if method is None else method.value
    declared = None if checkpoint is None else str(checkpoint.get("quant_method", ""))
    if declared is not None and declared not in CHECKPOINT_METHODS:
        raise ConfigError(
            f"model.path: {source} declares quantization_config.quant_method={declared!r}, "
            f"which this engine cannot run. Supported checkpoint formats: "
            f"{', '.join(CHECKPOINT_METHODS)}; online: model.quantization in "
            f"{{{', '.join(ONLINE_METHODS)}}} on an unquantized checkpoint."
        )
    if key in ONLINE_METHODS and declared is not None:
        raise ConfigError(
            f"model.quantization={key} quantizes an unquantized checkpoint online, but {source} "
            f"is already quantized (quant_method={declared}). Use model.quantization=null."
        )
    if key in CHECKPOINT_METHODS and declared != key:
        raise ConfigError(
            f"model.quantization={key} needs a checkpoint whose config.json declares "
            f"quantization_config.quant_method={key}; {source} declares {declared or 'none'}. "
            f"Use model.quantization=null to serve the checkpoint as it is."
        )
    if declared is not None:
        _CHECKS[declared](checkpoint or {}, source)
    return key or declared


def check_group_split(
    group_size: int, in_features: dict[str, int], tp: int, source: str
) -> list[str]:
    """Every linear input dimension, per tensor-parallel rank, must be whole groups."""
    if group_size == -1:
        return []
    return [
        f"model.quantization: {source} has group_size={group_size}, which does not divide "
        f"{name}={size} split over parallel.tp={tp} ({size // tp} per rank). "
        f"Use a parallel.tp whose split keeps whole groups."
        for name, size in in_features.items()
        if size % tp or (size // tp) % group_size
    ]


def checkpoint_group_size(checkpoint: dict[str, Any]) -> int:
    """The group size a checkpoint quantizes its weights with (-1: per channel or tensor)."""
    if checkpoint.get("quant_method") == "compressed-tensors":
        weights = _ct_weights(checkpoint)
        return int(weights.get("group_size") or -1) if weights.get("strategy") == "group" else -1
    return int(checkpoint.get("group_size", checkpoint.get("q_group_size", -1)))


def checkpoint_weight_bits(checkpoint: dict[str, Any] | None, method: str | None) -> int | None:
    """Bits per quantized linear weight (None: unquantized)."""
    if method is None:
        return None
    if method in ONLINE_METHODS:
        return 8
    assert checkpoint is not None
    if method == "compressed-tensors":
        return int(_ct_weights(checkpoint)["num_bits"])
    return int(checkpoint.get("bits", checkpoint.get("w_bit", 4)))


def _check_group_size(group_size: int, where: str, source: str) -> None:
    if group_size not in SUPPORTED_GROUP_SIZES:
        raise ConfigError(
            f"model.path: {source} has {where}={group_size}; the int4 kernels implement group "
            f"sizes {', '.join(map(str, SUPPORTED_GROUP_SIZES))}. Use a checkpoint quantized "
            f"with one of them."
        )


def _check_bits(bits: int, supported: tuple[int, ...], method: str, source: str) -> None:
    if bits not in supported:
        raise ConfigError(
            f"model.path: {source} has {method} bits={bits}; the engine runs {method} with "
            f"bits in {{{', '.join(map(str, supported))}}}."
        )


def _check_awq(q: dict[str, Any], source: str) -> None:
    _check_bits(int(q.get("bits", q.get("w_bit", 4))), (4,), "awq", source)
    _check_group_size(int(q.get("group_size", q.get("q_group_size", 128))), "group_size", source)
    if not q.get("zero_point", True):
        raise ConfigError(
            f"model.path: {source} is AWQ without zero points; the engine runs AWQ with "
            f"zero_point=true only."
        )
    version = str(q.get("version", "gemm")).lower()
    if version != "gemm":
        raise ConfigError(
            f"model.path: {source} is AWQ version={version}; the engine reads the GEMM "
            f"packing only (version=gemm)."
        )


def _check_gptq(q: dict[str, Any], source: str) -> None:
    _check_bits(int(q.get("bits", 4)), (4,), "gptq", source)
    _check_group_size(int(q.get("group_size", 128)), "group_size", source)
    if q.get("desc_act"):
        raise ConfigError(
            f"model.path: {source} is GPTQ with desc_act=true (act-order: input channels "
            f"permuted by g_idx); the engine runs desc_act=false only. Use a checkpoint "
            f"quantized with desc_act=false."
        )
    fmt = str(q.get("checkpoint_format", "gptq"))
    if fmt != "gptq":
        raise ConfigError(
            f"model.path: {source} is GPTQ checkpoint_format={fmt}; the engine reads "
            f"checkpoint_format=gptq (v1 packing) only."
        )


def _ct_weights(q: dict[str, Any]) -> dict[str, Any]:
    groups = q.get("config_groups") or {}
    if len(groups) != 1:
        return {}
    return next(iter(groups.values())).get("weights") or {}


def _check_compressed_tensors(q: dict[str, Any], source: str) -> None:
    fmt = str(q.get("format", ""))
    if fmt not in SUPPORTED_CT_FORMATS:
        raise ConfigError(
            f"model.path: {source} is compressed-tensors format={fmt!r}; the engine reads "
            f"{', '.join(SUPPORTED_CT_FORMATS)}."
        )
    groups = q.get("config_groups") or {}
    if len(groups) != 1:
        raise ConfigError(
            f"model.path: {source} has {len(groups)} compressed-tensors config_groups; the "
            f"engine runs checkpoints with one scheme for every Linear layer."
        )
    w = _ct_weights(q)
    kind, bits, strategy = w.get("type"), int(w.get("num_bits", 0)), w.get("strategy")
    supported = {("int", 4): ("group", "channel"), ("int", 8): ("group", "channel"),
                 ("float", 8): ("channel", "tensor")}  # fmt: skip
    if (kind, bits) not in supported or strategy not in supported[(kind, bits)]:
        raise ConfigError(
            f"model.path: {source} quantizes weights as type={kind} num_bits={bits} "
            f"strategy={strategy}; the engine runs W4A16/W8A16 (int, group or channel) and "
            f"FP8 (float 8, channel or tensor)."
        )
    if kind == "int" and not w.get("symmetric", True):
        raise ConfigError(
            f"model.path: {source} quantizes weights asymmetrically (symmetric=false); the "
            f"engine runs symmetric compressed-tensors int schemes only."
        )
    if strategy == "group":
        _check_group_size(int(w.get("group_size") or 0), "weights.group_size", source)


_CHECKS = {"awq": _check_awq, "gptq": _check_gptq, "compressed-tensors": _check_compressed_tensors}
