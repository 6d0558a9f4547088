"""fp8 weight-only linear layers on CPU (csrc/cpu/fp8_gemm.c): up to FP8_GEMV_MAX_ROWS rows
read the e4m3 weight once and widen it in registers (`fp8_gemv`); more rows dequantize it in
one pass (`fp8_dequant`, scale applied) and multiply in torch. torch's own e4m3 cast is ~100x
slower than its int8 one on CPU, which made the plain dequantize-and-multiply path the
slowest of all the products."""

from __future__ import annotations

import ctypes
import functools

import torch
import torch.nn.functional as F

from vllm_hydra.cpu_library import load_library

FP8_GEMV_MAX_ROWS = 16  # fp8_gemm.c's compiled limit
_DTYPE_IDS = {torch.float32: 0, torch.bfloat16: 1}  # common.h's DTYPE_*
_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
# x, x_stride, m, w, scale, n, k, dtype, out, out_stride, num_threads
_GEMV = [_P, _I64, _INT, _P, _P, _I64, _I64, _INT, _P, _I64, _INT]
# w, scale, n, k, dtype, out, num_threads
_DEQUANT = [_P, _P, _I64, _I64, _INT, _P, _INT]


@functools.cache
def _lib() -> ctypes.CDLL | None:
    lib = load_library()
    if lib is not None:
        for name, argtypes in (("fp8_gemv", _GEMV), ("fp8_dequant", _DEQUANT)):
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = argtypes, ctypes.c_int
    return lib


def fp8_linear_cpu_supported(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype in _DTYPE_IDS
        and weight.shape[1] % 16 == 0
        and weight.is_contiguous()
        and not torch.compiler.is_compiling()
        and _lib() is not None
    )


def fp8_linear_cpu(
    x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """x [..., K] @ (e4m3 weight [N, K] * scale [N] float32)^T (+ bias) -> [..., N]."""
    shape = x.shape
    n, k = weight.shape
    x2 = x.reshape(-1, k)
    if x2.stride(1) != 1:
        x2 = x2.contiguous()
    dtype, threads, lib = _DTYPE_IDS[x.dtype], torch.get_num_threads(), _lib()
    assert lib is not None and scale.dtype == torch.float32 and scale.is_contiguous()
    if x2.shape[0] <= FP8_GEMV_MAX_ROWS:
        out = x.new_empty(x2.shape[0], n)
        lib.fp8_gemv(
            x2.data_ptr(), x2.stride(0), x2.shape[0], weight.data_ptr(), scale.data_ptr(),
            n, k, dtype, out.data_ptr(), out.stride(0), threads,
        )  # fmt: skip
        out = out if bias is None else out + bias
    else:
        w = x.new_empty(n, k)
        lib.fp8_dequant(weight.data_ptr(), scale.data_ptr(), n, k, dtype, w.data_ptr(), threads)
        out = F.linear(x2, w, bias)
    return out.reshape(*shape[:-1], n)
