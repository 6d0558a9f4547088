"""Resolving `model.dtype`: on CUDA the checkpoint's half dtype, on CPU what the CPU computes
natively (bf16 only with AVX-512-BF16 or AMX; emulated bf16 runs several times slower than fp32)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from vllm_hydra.config.device import DeviceType
from vllm_hydra.config.model import ModelDType

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CpuHalfSupport:
    """Which half dtypes this CPU multiplies in hardware, by torch's own checks."""

    bfloat16: bool
    float16: bool
    features: str  # what was found, for the reason printed by the dry run


def cpu_half_support() -> CpuHalfSupport:
    import torch

    avx512_bf16 = torch.cpu._is_avx512_bf16_supported()
    amx = torch.cpu._is_amx_tile_supported()
    amx_fp16 = torch.cpu._is_amx_fp16_supported()
    found = [name for name, has in [("AVX-512-BF16", avx512_bf16), ("AMX", amx)] if has]
    found += ["AMX-FP16"] if amx_fp16 else []
    features = (
        ", ".join(found) or f"no AVX-512-BF16 or AMX ({torch.backends.cpu.get_cpu_capability()})"
    )
    return CpuHalfSupport(bfloat16=avx512_bf16 or amx, float16=amx_fp16, features=features)


def resolve_dtype(
    dtype: ModelDType, checkpoint_dtype: str, device: DeviceType
) -> tuple[ModelDType, str]:
    """The dtype to serve in and why, warning once for a half dtype this CPU only emulates."""
    if device is DeviceType.cuda:
        if dtype is not ModelDType.auto:
            return dtype, "model.dtype"
        if checkpoint_dtype in ("bfloat16", "float16"):
            return ModelDType(checkpoint_dtype), "auto: the checkpoint's dtype"
        return ModelDType.bfloat16, f"auto: a {checkpoint_dtype} checkpoint is served in bfloat16"
    support = cpu_half_support()
    if dtype is ModelDType.auto:
        if support.bfloat16:
            return (
                ModelDType.bfloat16,
                f"auto: this CPU computes bfloat16 natively ({support.features})",
            )
        return ModelDType.float32, (
            f"auto: this CPU has {support.features}, so bfloat16 would be emulated; float32"
        )
    native = {ModelDType.bfloat16: support.bfloat16, ModelDType.float16: support.float16}
    if not native.get(dtype, True):
        logger.warning(
            "model.dtype=%s on a CPU with %s: %s is emulated and runs several times slower "
            "than float32 (a bf16 GEMM measured 4.8x slower on AVX2). Use model.dtype=auto "
            "(float32 here) unless you need %s's results.",
            dtype.value,
            support.features,
            dtype.value,
            dtype.value,
        )
        return dtype, f"model.dtype (emulated on this CPU: {support.features})"
    return dtype, "model.dtype"
