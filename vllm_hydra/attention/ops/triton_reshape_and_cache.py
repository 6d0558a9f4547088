"""`reshape_and_cache`: write a step's new keys and values into the paged KV cache.

Token t's K/V go to slot `slot_mapping[t]` (block id * block_size + offset) of the cache laid
out as [num_blocks, block_size, num_kv_heads, head_size]. A negative slot means "no slot" (a
padded token of a captured CUDA graph batch) and writes nothing.
"""

from __future__ import annotations

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
    tl.store(key_cache_ptr + dst, key.to(key_cache_ptr.dtype.element_ty), mask=mask)
    value = tl.load(value_ptr + token * stride_v_tok + head * stride_v_head + dim, mask=mask)
    tl.store(value_cache_ptr + dst, value.to(value_cache_ptr.dtype.element_ty), mask=mask)


def reshape_and_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """key/value [T, num_kv_heads, head_size] (any token and head strides, contiguous last dim)
    into key_cache/value_cache [num_blocks, block_size, num_kv_heads, head_size]."""
    num_tokens, num_kv_heads, head_size = key.shape
    if num_tokens == 0:
        return
    _, block_size, _, _ = key_cache.shape
    assert key.stride(2) == 1 and value.stride(2) == 1 and key_cache.stride(3) == 1
    assert key_cache.stride() == value_cache.stride()
    reshape_and_cache_kernel[(num_tokens,)](
        key,
        value,
        key_cache,
        value_cache,
        slot_mapping,
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
    )
