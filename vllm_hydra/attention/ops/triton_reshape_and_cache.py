"""`reshape_and_cache`: write a step's new keys and values into the paged KV cache.

Token t's K/V go to slot `slot_mapping[t]` (block id * block_size + offset) of the cache laid
out as [num_blocks, block_size, num_kv_heads, head_size]. A negative slot means "no slot" (a
padded token of a captured CUDA graph batch) and writes nothing. An fp8 cache stores
x / scale saturated to e4m3's range, the scales read from device memory (k_scale / v_scale,
float32 [1]), so a captured graph sees scales set after its capture.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


@triton.jit
def reshape_and_cache_kernel(
    key_ptr,
    value_ptr,
    key_cache_ptr,
    value_cache_ptr,
    slot_mapping_ptr,
    k_scale_ptr,
    v_scale_ptr,
    stride_k_tok,
    stride_k_head,
    stride_v_tok,
    stride_v_head,
    stride_cache_block,
    stride_cache_slot,
    stride_cache_head,
    NUM_KV_HEADS: tl.constexpr,
    HEAD_SIZE: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    TILE: tl.constexpr,  # next power of 2 of NUM_KV_HEADS * HEAD_SIZE
    FP8: tl.constexpr,
    ROUND_E4M3: tl.constexpr,
):
    token = tl.program_id(0)
    slot = tl.load(slot_mapping_ptr + token).to(tl.int64)
    if slot < 0:
        return
    block = slot // BLOCK_SIZE
    offset = slot % BLOCK_SIZE
    offs = tl.arange(0, TILE)
    mask = offs < NUM_KV_HEADS * HEAD_SIZE
    head = offs // HEAD_SIZE
    dim = offs % HEAD_SIZE
    dst = block * stride_cache_block + offset * stride_cache_slot + head * stride_cache_head + dim
    key = tl.load(key_ptr + token * stride_k_tok + head * stride_k_head + dim, mask=mask)
    value = tl.load(value_ptr + token * stride_v_tok + head * stride_v_head + dim, mask=mask)
    if FP8:
        key = _to_fp8_range(key, tl.load(k_scale_ptr), ROUND_E4M3)
        value = _to_fp8_range(value, tl.load(v_scale_ptr), ROUND_E4M3)
    tl.store(key_cache_ptr + dst, key.to(key_cache_ptr.dtype.element_ty), mask=mask)
    tl.store(value_cache_ptr + dst, value.to(value_cache_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _to_fp8_range(x, scale, ROUND_E4M3: tl.constexpr):
    """x / scale in fp32, saturated to e4m3's +-448 (and rounded onto e4m3's grid first
    where the cast itself cannot be trusted to)."""
    y = x.to(tl.float32) / scale
    y = tl.minimum(tl.maximum(y, -448.0), 448.0)
    if ROUND_E4M3:
        y = _round_to_e4m3(y)
    return y


@triton.jit
def _round_to_e4m3(y):
    """y rounded to nearest even on e4m3's grid (3 mantissa bits; subnormal step 2^-9), still
    fp32. The interpreter's fp32 -> e4m3 cast drops the carry of a mantissa that rounds up
    (7.9 -> 4, 0.005 -> 0.0039); the GPU's cast (cvt.rn) is exact and needs none of this."""
    exponent = ((y.to(tl.uint32, bitcast=True) >> 23) & 0xFF).to(tl.int32) - 127
    exponent = tl.maximum(exponent, -6)  # e4m3's smallest normal exponent
    step = ((exponent - 3 + 127) << 23).to(tl.uint32).to(tl.float32, bitcast=True)
    magic = 12582912.0  # 1.5 * 2^23: adding and removing it rounds to an integer, half to even
    r = ((y / step + magic) - magic) * step
    return tl.where(y < 0, -tl.abs(r), tl.abs(r))  # keep -0.0's sign, as torch's cast does


def reshape_and_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> None:
    """key/value [T, num_kv_heads, head_size] (any token and head strides, contiguous last dim)
    into key_cache/value_cache [num_blocks, block_size, num_kv_heads, head_size]; an fp8 cache
    divides by k_scale / v_scale (float32 [1] on the device; None: 1.0)."""
    num_tokens, num_kv_heads, head_size = key.shape
    if num_tokens == 0:
        return
    _, block_size, _, _ = key_cache.shape
    assert key.stride(2) == 1 and value.stride(2) == 1 and key_cache.stride(3) == 1
    assert key_cache.stride() == value_cache.stride()
    fp8 = key_cache.dtype == torch.float8_e4m3fn
    ones = torch.ones(1, dtype=torch.float32, device=key.device) if fp8 else slot_mapping
    reshape_and_cache_kernel[(num_tokens,)](
        key,
        value,
        key_cache,
        value_cache,
        slot_mapping,
        ones if k_scale is None else k_scale,
        ones if v_scale is None else v_scale,
        key.stride(0),
        key.stride(1),
        value.stride(0),
        value.stride(1),
        key_cache.stride(0),
        key_cache.stride(1),
        key_cache.stride(2),
        NUM_KV_HEADS=num_kv_heads,
        HEAD_SIZE=head_size,
        BLOCK_SIZE=block_size,
        TILE=triton.next_power_of_2(num_kv_heads * head_size),
        FP8=fp8,
        ROUND_E4M3=fp8 and os.environ.get("TRITON_INTERPRET") == "1",
    )
