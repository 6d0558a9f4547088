"""Dequantizing GEMMs in Triton for CUDA: out = x @ W^T with W read quantized and dequantized
tile by tile in registers (never materialised in memory), for the runtime layouts of int4.py
(AWQ, GPTQ, compressed-tensors W4A16) and int8.py (online int8, W8A16):

  int4  weight_packed uint8 [N, K // 2] (even k in the low nibble), scale / zero [N, groups]
  int8  weight int8 [N, K], scale [N, groups] (no zero point)

W[n, k] = (code - zero[n, k // group]) * scale[n, k // group]. Products accumulate in fp32; on
a GPU the dequantized tile is cast to the activation dtype for tensor-core dots, under the
interpreter (TRITON_INTERPRET=1, the CPU tests) everything is fp32, where its bf16 math is wrong.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


@triton.jit
def _dequant_tile(
    w_ptr,
    scale_ptr,
    zero_ptr,
    offs_n,
    offs_k,
    n_mask,
    k_mask,
    stride_w,
    stride_s,
    group_size,
    INT4: tl.constexpr,
):
    """The weight tile [BLOCK_K, BLOCK_N] (W^T) in fp32."""
    mask = k_mask[:, None] & n_mask[None, :]
    if INT4:
        byte = tl.load(w_ptr + offs_n[None, :] * stride_w + (offs_k // 2)[:, None], mask=mask)
        code = (byte.to(tl.int32) >> ((offs_k % 2) * 4)[:, None]) & 0xF
    else:
        code = tl.load(w_ptr + offs_n[None, :] * stride_w + offs_k[:, None], mask=mask)
    s_offs = offs_n[None, :] * stride_s + (offs_k // group_size)[:, None]
    scale = tl.load(scale_ptr + s_offs, mask=mask, other=0.0).to(tl.float32)
    w = code.to(tl.float32)
    if INT4:
        w = w - tl.load(zero_ptr + s_offs, mask=mask, other=0.0).to(tl.float32)
    return w * scale


@triton.jit
def dequant_gemm_kernel(
    x_ptr,
    w_ptr,
    scale_ptr,
    zero_ptr,
    out_ptr,
    M,
    N,
    K,
    group_size,
    stride_x,
    stride_w,
    stride_s,
    stride_o,
    INT4: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """Grid (M tiles, N tiles): one [BLOCK_M, BLOCK_N] tile of the output."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_mask, n_mask = offs_m < M, offs_n < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_mask = offs_k < K
        x = tl.load(
            x_ptr + offs_m[:, None] * stride_x + offs_k[None, :],
            mask=m_mask[:, None] & k_mask[None, :],
            other=0.0,
        )
        w = _dequant_tile(
            w_ptr, scale_ptr, zero_ptr, offs_n, offs_k, n_mask, k_mask, stride_w, stride_s,
            group_size, INT4,
        )  # fmt: skip
        if UPCAST:
            acc += tl.dot(x.to(tl.float32), w, input_precision="ieee")
        else:
            acc += tl.dot(x, w.to(x.dtype))
    o_offs = offs_m[:, None] * stride_o + offs_n[None, :]
    tl.store(
        out_ptr + o_offs, acc.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :]
    )


def _tiles(m: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K): tl.dot needs 16 rows; decode batches pad to that."""
    block_m = 16 if m <= 16 else (32 if m <= 32 else 64)
    return block_m, 64, 64


def _launch(
    x: torch.Tensor,
    w: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor | None,
    in_features: int,
    int4: bool,
) -> torch.Tensor:
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    if x2.stride(1) != 1:
        x2 = x2.contiguous()
    m, n = x2.shape[0], w.shape[0]
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    if m == 0:
        return out.reshape(*shape[:-1], n)
    assert w.stride(1) == 1 and scale.stride(1) == 1
    block_m, block_n, block_k = _tiles(m)
    group_size = in_features // scale.shape[1]
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    dequant_gemm_kernel[grid](
        x2, w, scale, scale if zero is None else zero, out,
        m, n, in_features, group_size,
        x2.stride(0), w.stride(0), scale.stride(0), out.stride(0),
        INT4=int4, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
        UPCAST=os.environ.get("TRITON_INTERPRET") == "1",
    )  # fmt: skip
    return out.reshape(*shape[:-1], n)


def int4_dequant_gemm(
    x: torch.Tensor, weight_packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor
) -> torch.Tensor:
    """x [..., K] @ W^T for int4 codes weight_packed [N, K // 2] -> [..., N]."""
    assert zero.stride() == scale.stride(), "scale and zero point share one layout"
    return _launch(x, weight_packed, scale, zero, weight_packed.shape[1] * 2, int4=True)


def int8_dequant_gemm(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x [..., K] @ W^T for int8 weight [N, K] and scale [N, groups] -> [..., N]."""
    return _launch(x, weight, scale, None, weight.shape[1], int4=False)
