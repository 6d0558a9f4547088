"""`reduce_segments`: the split-KV (flash-decoding) combine step.

Each segment of a request's key range left an unnormalised output with its running max (base 2)
and exp-sum; rescaling every segment to the global max and summing gives exact softmax attention.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def reduce_segments_kernel(
    out_ptr,
    segm_output_ptr,
    segm_max_ptr,
    segm_expsum_ptr,
    num_tokens_ptr,
    stride_o_tok,
    stride_o_head,
    NUM_HEADS: tl.constexpr,
    NUM_SEGMENTS: tl.constexpr,
    SEGMENTS_PAD: tl.constexpr,
    HEAD_SIZE: tl.constexpr,
    HEAD_PAD: tl.constexpr,
):
    """Grid (token, head)."""
    token = tl.program_id(0)
    head = tl.program_id(1)
    if token >= tl.load(num_tokens_ptr):  # a padded row that no request covers
        return
    offs_s = tl.arange(0, SEGMENTS_PAD)
    offs_d = tl.arange(0, HEAD_PAD)
    s_mask = offs_s < NUM_SEGMENTS
    row = (token.to(tl.int64) * NUM_HEADS + head) * NUM_SEGMENTS
    seg_max = tl.load(segm_max_ptr + row + offs_s, mask=s_mask, other=float("-inf"))
    overall = tl.max(seg_max, axis=0)
    overall = tl.where(overall > float("-inf"), overall, 0.0)
    weight = tl.math.exp2(seg_max - overall)  # 0 for empty segments (max -inf)
    expsum = tl.sum(tl.load(segm_expsum_ptr + row + offs_s, mask=s_mask, other=0.0) * weight)
    acc = tl.load(
        segm_output_ptr + (row + offs_s[:, None]) * HEAD_PAD + offs_d[None, :],
        mask=s_mask[:, None],
        other=0.0,
    )
    result = tl.sum(acc * weight[:, None], axis=0) / tl.where(expsum > 0.0, expsum, 1.0)
    o_offs = token.to(tl.int64) * stride_o_tok + head * stride_o_head + offs_d
    tl.store(out_ptr + o_offs, result.to(out_ptr.dtype.element_ty), mask=offs_d < HEAD_SIZE)


def reduce_segments(
    out: torch.Tensor,
    segm_output: torch.Tensor,
    segm_max: torch.Tensor,
    segm_expsum: torch.Tensor,
    query_start_loc: torch.Tensor,
    num_reqs: int,
) -> None:
    """out [T, H, head_size] from segm_output [T, H, S, HEAD_PAD] and segm_max/expsum
    [T, H, S]; tokens past query_start_loc[num_reqs] are left as they are."""
    num_tokens, num_heads, head_size = out.shape
    num_segments, head_pad = segm_output.shape[2], segm_output.shape[3]
    reduce_segments_kernel[(num_tokens, num_heads)](
        out,
        segm_output,
        segm_max,
        segm_expsum,
        query_start_loc[num_reqs:],
        out.stride(0),
        out.stride(1),
        NUM_HEADS=num_heads,
        NUM_SEGMENTS=num_segments,
        SEGMENTS_PAD=triton.next_power_of_2(num_segments),
        HEAD_SIZE=head_size,
        HEAD_PAD=head_pad,
    )
