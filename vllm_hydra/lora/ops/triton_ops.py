"""Shrink and expand as Triton kernels (punica's BGMV): one program per token (and output
tile), reading the token's slot from `token_lora_mapping`; slot -1 computes nothing. Products
accumulate in float32 whatever the weights' dtype."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_K = 32  # input features per step of the shrink's reduction
BLOCK_N = 32  # output features per expand program


@triton.jit
def _lora_shrink_kernel(
    x_ptr,
    lora_a_ptr,
    out_ptr,
    mapping_ptr,
    stride_x_tok,
    stride_a_slot,
    stride_a_rank,
    stride_out_tok,
    IN_FEATURES: tl.constexpr,
    RANK: tl.constexpr,
    RANK_PAD: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    token = tl.program_id(0)
    slot = tl.load(mapping_ptr + token).to(tl.int64)
    if slot < 0:
        return
    ranks = tl.arange(0, RANK_PAD)
    acc = tl.zeros((RANK_PAD,), dtype=tl.float32)
    for k0 in range(0, IN_FEATURES, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + token * stride_x_tok + ks, mask=ks < IN_FEATURES, other=0.0)
        a_ptrs = lora_a_ptr + slot * stride_a_slot + ranks[:, None] * stride_a_rank + ks[None, :]
        a_mask = (ranks[:, None] < RANK) & (ks[None, :] < IN_FEATURES)
        a = tl.load(a_ptrs, mask=a_mask, other=0.0)
        acc += tl.sum(a.to(tl.float32) * x.to(tl.float32)[None, :], axis=1)
    tl.store(out_ptr + token * stride_out_tok + ranks, acc, mask=ranks < RANK)


@triton.jit
def _lora_expand_kernel(
    buffer_ptr,
    lora_b_ptr,
    y_ptr,
    mapping_ptr,
    stride_buf_tok,
    stride_b_slot,
    stride_b_out,
    stride_y_tok,
    OUT_FEATURES: tl.constexpr,
    RANK: tl.constexpr,
    RANK_PAD: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    token = tl.program_id(0)
    slot = tl.load(mapping_ptr + token).to(tl.int64)
    if slot < 0:
        return
    ns = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    ranks = tl.arange(0, RANK_PAD)
    shrunk = tl.load(buffer_ptr + token * stride_buf_tok + ranks, mask=ranks < RANK, other=0.0)
    b_ptrs = lora_b_ptr + slot * stride_b_slot + ns[:, None] * stride_b_out + ranks[None, :]
    b_mask = (ns[:, None] < OUT_FEATURES) & (ranks[None, :] < RANK)
    b = tl.load(b_ptrs, mask=b_mask, other=0.0)
    delta = tl.sum(b.to(tl.float32) * shrunk.to(tl.float32)[None, :], axis=1)
    y_ptrs = y_ptr + token * stride_y_tok + ns
    y = tl.load(y_ptrs, mask=ns < OUT_FEATURES, other=0.0)
    tl.store(y_ptrs, (y.to(tl.float32) + delta).to(y_ptr.dtype.element_ty), mask=ns < OUT_FEATURES)


def triton_lora_shrink(
    x: torch.Tensor, lora_a: torch.Tensor, token_lora_mapping: torch.Tensor
) -> torch.Tensor:
    """x [T, in], lora_a [slots, n x rank, in] -> [T, n x rank] float32 (zero: no adapter)."""
    num_tokens, in_features = x.shape
    rank = lora_a.shape[1]
    out = torch.zeros(num_tokens, rank, dtype=torch.float32, device=x.device)
    if num_tokens == 0:
        return out
    x = x.contiguous()
    _lora_shrink_kernel[(num_tokens,)](
        x,
        lora_a,
        out,
        token_lora_mapping,
        x.stride(0),
        lora_a.stride(0),
        lora_a.stride(1),
        out.stride(0),
        IN_FEATURES=in_features,
        RANK=rank,
        RANK_PAD=triton.next_power_of_2(rank),
        BLOCK_K=BLOCK_K,
    )
    return out


def triton_lora_expand(
    y: torch.Tensor,
    buffer: torch.Tensor,
    lora_b_stacked: list[torch.Tensor],
    output_slices: tuple[int, ...],
    token_lora_mapping: torch.Tensor,
) -> None:
    """y [T, sum(output_slices)] (last dim contiguous) += buffer[:, slice i's ranks] @
    B_i[slot]^T, in place; buffer [T, n x rank]."""
    num_tokens = y.shape[0]
    if num_tokens == 0:
        return
    assert y.stride(1) == 1, "expand writes rows of y in place"
    buffer = buffer.contiguous()
    offset = 0
    for i, (lora_b, size) in enumerate(zip(lora_b_stacked, output_slices, strict=True)):
        rank = lora_b.shape[2]
        grid = (num_tokens, triton.cdiv(size, BLOCK_N))
        _lora_expand_kernel[grid](
            buffer[:, i * rank :],
            lora_b,
            y[:, offset:],
            token_lora_mapping,
            buffer.stride(0),
            lora_b.stride(0),
            lora_b.stride(1),
            y.stride(0),
            OUT_FEATURES=size,
            RANK=rank,
            RANK_PAD=triton.next_power_of_2(rank),
            BLOCK_N=BLOCK_N,
        )
        offset += size
