"""Python entry point of the CPU decode kernel over an fp8 (e4m3) KV cache
(csrc/cpu/attention_fp8.c), beside `_custom_ops.paged_attention_decode` for fp32/bf16 caches:
the same arguments plus the layer's k_scale and v_scale."""

from __future__ import annotations

import ctypes
import functools

import torch

from vllm_hydra.attention.kv_cache_quant import FP8_KV_DTYPE
from vllm_hydra.cpu_library import load_library

_QUERY_DTYPES = {torch.float32: 0, torch.bfloat16: 1}  # csrc/cpu/common.h's DTYPE_*
MAX_HEAD_SIZE, MAX_GROUP = 256, 32  # attention_fp8.c's compiled limits

_P, _I64, _INT, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
# query, q_stride, key, value, block_table, bt_stride, tokens, reqs, seq_lens, num_items,
# num_heads, num_kv_heads, head_size, block_size, sliding_window, scale, k_scale, v_scale,
# num_threads, dtype, out, out_stride
_ARGTYPES = [_P, _I64, _P, _P, _P, _I64, _P, _P, _P, *[_INT] * 6, _F, _F, _F, _INT, _INT, _P, _I64]


@functools.cache
def _kernel() -> ctypes._CFuncPtr | None:
    lib = load_library()
    if lib is None:
        return None
    fn = lib.paged_attention_decode_fp8
    fn.argtypes, fn.restype = _ARGTYPES, ctypes.c_int
    return fn


def paged_attention_decode_fp8_supported(
    query: torch.Tensor, kv_cache: torch.Tensor, num_heads: int, num_kv_heads: int
) -> bool:
    """CPU, an fp8 cache, fp32 or bf16 queries, within the kernel's compiled limits."""
    head_size = kv_cache.shape[-1]
    return (
        query.device.type == "cpu"
        and kv_cache.dtype == FP8_KV_DTYPE
        and query.dtype in _QUERY_DTYPES
        and head_size <= MAX_HEAD_SIZE
        and head_size % 16 == 0
        and num_heads % num_kv_heads == 0
        and num_heads // num_kv_heads <= MAX_GROUP
        and kv_cache.is_contiguous()
        and not torch.compiler.is_compiling()
        and _kernel() is not None
    )


def paged_attention_decode_fp8(
    out: torch.Tensor,
    query: torch.Tensor,
    kv_cache: torch.Tensor,
    block_table: torch.Tensor,
    tokens: torch.Tensor,
    reqs: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    sliding_window: int | None,
    k_scale: torch.Tensor,
    v_scale: torch.Tensor,
) -> None:
    """As `_custom_ops.paged_attention_decode`, over a cache holding K / k_scale and
    V / v_scale in e4m3 (scales float32 [1])."""
    _, _, block_size, num_kv_heads, head_size = kv_cache.shape
    if query.stride(2) != 1 or query.stride(1) != head_size:
        query = query.contiguous()
    assert out.stride(2) == 1 and out.stride(1) == head_size, "out: rows of contiguous heads"
    assert block_table.stride(1) == 1
    assert tokens.dtype == reqs.dtype == seq_lens.dtype == block_table.dtype == torch.int32
    status = _kernel()(  # type: ignore[misc]
        query.data_ptr(), query.stride(0), kv_cache[0].data_ptr(), kv_cache[1].data_ptr(),
        block_table.data_ptr(), block_table.stride(0), tokens.data_ptr(), reqs.data_ptr(),
        seq_lens.data_ptr(), len(tokens), query.shape[1], num_kv_heads, head_size, block_size,
        sliding_window or 0, scale, k_scale.item(), v_scale.item(), torch.get_num_threads(),
        _QUERY_DTYPES[query.dtype], out.data_ptr(), out.stride(0),
    )  # fmt: skip
    if status != 0:
        raise ValueError("paged_attention_decode_fp8: shapes beyond the kernel's compiled limits")
