"""`unified_attention`: one Triton kernel for a flat batch that mixes prefills and decodes.

Every request's new queries (its last q_len positions, behind a context already in the paged
cache: earlier chunks or a prefix-cache hit) attend causally over its keys, read block by block
through its block table. One program handles BLOCK_Q query tokens of one request for one KV
head, with all the query heads that share that KV head stacked as rows of one tile (BLOCK_M =
BLOCK_Q * queries per KV head), so each K/V block is read once per KV head (GQA) and decodes
still fill a matrix-multiply tile. Scores and the output accumulate in fp32 with an online
(streaming) softmax in base 2.

Long decodes with too few (request, KV head) programs to fill the GPU take the split-KV path
(flash-decoding): each request's key range is cut into `num_kv_splits` segments computed by
separate programs, each writing an unnormalised partial output with its running max and sum,
and `reduce_segments` combines them.

An fp8 (e4m3) cache is read as the queries' dtype; its per-layer scales fold into the score
scale (k_scale) and the output (v_scale), both read from device memory.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

from vllm_hydra.attention.ops.triton_reduce_segments import reduce_segments

LOG2E = 1.4426950408889634
# Split-KV only when each segment still gets this many keys, and never into more segments.
MIN_KEYS_PER_SPLIT = 256
MAX_KV_SPLITS = 16


@triton.jit
def _dot(a, b, IEEE: tl.constexpr):
    # fp32 inputs: full-precision products (tl.dot would otherwise use TF32 on GPUs).
    if IEEE:
        return tl.dot(a, b, input_precision="ieee")
    return tl.dot(a, b)


@triton.jit
def _load_query_tile(
    q_ptr,
    query_start_loc_ptr,
    seq_lens_ptr,
    req,
    q_block,
    kv_head,
    stride_q_tok,
    stride_q_head,
    NUM_QUERIES_PER_KV: tl.constexpr,
    HEAD_SIZE: tl.constexpr,
    HEAD_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """Rows of this program's tile: their tokens, heads, absolute positions and queries."""
    q_start = tl.load(query_start_loc_ptr + req)
    q_len = tl.load(query_start_loc_ptr + req + 1) - q_start
    seq_len = tl.load(seq_lens_ptr + req)
    context_len = seq_len - q_len
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_PAD)
    q_idx = q_block * BLOCK_Q + offs_m // NUM_QUERIES_PER_KV
    head = kv_head * NUM_QUERIES_PER_KV + offs_m % NUM_QUERIES_PER_KV
    row_mask = (offs_m < BLOCK_Q * NUM_QUERIES_PER_KV) & (q_idx < q_len)
    token = (q_start + q_idx).to(tl.int64)
    q_offs = token[:, None] * stride_q_tok + head[:, None] * stride_q_head + offs_d[None, :]
    q_mask = row_mask[:, None] & (offs_d[None, :] < HEAD_SIZE)
    q = tl.load(q_ptr + q_offs, mask=q_mask, other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    return token, head, row_mask, context_len + q_idx, q, seq_len, q_len, context_len


@triton.jit
def _key_tile_range(
    seq_len,
    q_len,
    context_len,
    q_block,
    window,
    BLOCK_SIZE: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    SLIDING: tl.constexpr,
):
    """[first, last) cache blocks that hold keys some query of this q block may attend to."""
    last_q = tl.minimum((q_block + 1) * BLOCK_Q, q_len) - 1
    tile_hi = tl.cdiv(context_len + last_q + 1, BLOCK_SIZE)
    tile_lo = 0
    if SLIDING:
        first_pos = context_len + q_block * BLOCK_Q
        tile_lo = tl.maximum(first_pos - window + 1, 0) // BLOCK_SIZE
    return tile_lo, tile_hi


@triton.jit
def _attend_tiles(
    q,
    query_pos,
    row_mask,
    k_cache_ptr,
    v_cache_ptr,
    block_table_row_ptr,
    kv_head,
    seq_len,
    tile_lo,
    tile_hi,
    scale_log2,
    window,
    stride_c_block,
    stride_c_slot,
    stride_c_head,
    HEAD_SIZE: tl.constexpr,
    HEAD_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    SLIDING: tl.constexpr,
    IEEE: tl.constexpr,
    UPCAST: tl.constexpr,
    KV_FP8: tl.constexpr,
):
    """Online softmax over cache blocks [tile_lo, tile_hi): (unnormalised acc, max, sum).
    `scale_log2` includes an fp8 cache's k_scale; the caller applies its v_scale."""
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_PAD], dtype=tl.float32)
    offs_s = tl.arange(0, BLOCK_SIZE)
    offs_d = tl.arange(0, HEAD_PAD)
    d_mask = offs_d < HEAD_SIZE
    head_off = kv_head * stride_c_head
    for j in range(tile_lo, tile_hi):
        block = tl.load(block_table_row_ptr + j).to(tl.int64)
        key_pos = j * BLOCK_SIZE + offs_s
        k_mask = key_pos < seq_len
        base = block * stride_c_block + head_off
        k = tl.load(
            k_cache_ptr + base + offs_s[None, :] * stride_c_slot + offs_d[:, None],
            mask=d_mask[:, None] & k_mask[None, :],
            other=0.0,
        )
        v = tl.load(
            v_cache_ptr + base + offs_s[:, None] * stride_c_slot + offs_d[None, :],
            mask=k_mask[:, None] & d_mask[None, :],
            other=0.0,
        )
        if UPCAST or KV_FP8:
            k = k.to(q.dtype)
            v = v.to(q.dtype)
        s = _dot(q, k, IEEE) * scale_log2
        allowed = row_mask[:, None] & k_mask[None, :] & (key_pos[None, :] <= query_pos[:, None])
        if SLIDING:
            allowed = allowed & (key_pos[None, :] > query_pos[:, None] - window)
        s = tl.where(allowed, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # Rows with no key yet keep max -inf; subtract 0 for them so no inf - inf appears.
        m_safe = tl.where(m_new > float("-inf"), m_new, 0.0)
        p = tl.math.exp2(s - m_safe[:, None])
        alpha = tl.math.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, IEEE)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _kv_scales(k_scale_ptr, v_scale_ptr, KV_FP8: tl.constexpr):
    if KV_FP8:
        return tl.load(k_scale_ptr), tl.load(v_scale_ptr)
    return 1.0, 1.0


@triton.jit
def kernel_unified_attention_2d(
    out_ptr,
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    block_table_ptr,
    seq_lens_ptr,
    query_start_loc_ptr,
    k_scale_ptr,
    v_scale_ptr,
    scale_log2,
    window,
    stride_q_tok,
    stride_q_head,
    stride_o_tok,
    stride_o_head,
    stride_bt,
    stride_c_block,
    stride_c_slot,
    stride_c_head,
    NUM_QUERIES_PER_KV: tl.constexpr,
    HEAD_SIZE: tl.constexpr,
    HEAD_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    SLIDING: tl.constexpr,
    IEEE: tl.constexpr,
    UPCAST: tl.constexpr,
    KV_FP8: tl.constexpr,
):
    """Grid (request, query block, KV head): the whole key range, normalised output."""
    req = tl.program_id(0)
    q_block = tl.program_id(1)
    kv_head = tl.program_id(2)
    q_len = tl.load(query_start_loc_ptr + req + 1) - tl.load(query_start_loc_ptr + req)
    if q_block * BLOCK_Q >= q_len:
        return
    token, head, row_mask, query_pos, q, seq_len, q_len, context_len = _load_query_tile(
        q_ptr, query_start_loc_ptr, seq_lens_ptr, req, q_block, kv_head,
        stride_q_tok, stride_q_head,
        NUM_QUERIES_PER_KV, HEAD_SIZE, HEAD_PAD, BLOCK_M, BLOCK_Q, UPCAST,
    )  # fmt: skip
    tile_lo, tile_hi = _key_tile_range(
        seq_len, q_len, context_len, q_block, window, BLOCK_SIZE, BLOCK_Q, SLIDING
    )
    k_scale, v_scale = _kv_scales(k_scale_ptr, v_scale_ptr, KV_FP8)
    acc, _, l_i = _attend_tiles(
        q, query_pos, row_mask, k_cache_ptr, v_cache_ptr, block_table_ptr + req * stride_bt,
        kv_head, seq_len, tile_lo, tile_hi, scale_log2 * k_scale, window,
        stride_c_block, stride_c_slot, stride_c_head,
        HEAD_SIZE, HEAD_PAD, BLOCK_SIZE, BLOCK_M, SLIDING, IEEE, UPCAST, KV_FP8,
    )  # fmt: skip
    acc = acc * v_scale
    out = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]
    offs_d = tl.arange(0, HEAD_PAD)
    o_offs = token[:, None] * stride_o_tok + head[:, None] * stride_o_head + offs_d[None, :]
    o_mask = row_mask[:, None] & (offs_d[None, :] < HEAD_SIZE)
    tl.store(out_ptr + o_offs, out.to(out_ptr.dtype.element_ty), mask=o_mask)


@triton.jit
def kernel_unified_attention_3d(
    segm_output_ptr,
    segm_max_ptr,
    segm_expsum_ptr,
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    block_table_ptr,
    seq_lens_ptr,
    query_start_loc_ptr,
    k_scale_ptr,
    v_scale_ptr,
    scale_log2,
    window,
    stride_q_tok,
    stride_q_head,
    stride_bt,
    stride_c_block,
    stride_c_slot,
    stride_c_head,
    NUM_HEADS: tl.constexpr,
    NUM_SEGMENTS: tl.constexpr,
    NUM_QUERIES_PER_KV: tl.constexpr,
    HEAD_SIZE: tl.constexpr,
    HEAD_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    SLIDING: tl.constexpr,
    IEEE: tl.constexpr,
    UPCAST: tl.constexpr,
    KV_FP8: tl.constexpr,
):
    """Grid (request, query block, KV head * segment): one segment of the key range, written
    unnormalised to segm_output [T, H, S, HEAD_PAD] with its max and sum ([T, H, S])."""
    req = tl.program_id(0)
    q_block = tl.program_id(1)
    kv_head = tl.program_id(2) // NUM_SEGMENTS
    segment = tl.program_id(2) % NUM_SEGMENTS
    q_len = tl.load(query_start_loc_ptr + req + 1) - tl.load(query_start_loc_ptr + req)
    if q_block * BLOCK_Q >= q_len:
        return
    token, head, row_mask, query_pos, q, seq_len, q_len, context_len = _load_query_tile(
        q_ptr, query_start_loc_ptr, seq_lens_ptr, req, q_block, kv_head,
        stride_q_tok, stride_q_head,
        NUM_QUERIES_PER_KV, HEAD_SIZE, HEAD_PAD, BLOCK_M, BLOCK_Q, UPCAST,
    )  # fmt: skip
    tile_lo, tile_hi = _key_tile_range(
        seq_len, q_len, context_len, q_block, window, BLOCK_SIZE, BLOCK_Q, SLIDING
    )
    k_scale, v_scale = _kv_scales(k_scale_ptr, v_scale_ptr, KV_FP8)
    # Segments split this request's blocks evenly; the tail segments may be empty.
    per_segment = tl.cdiv(tl.cdiv(seq_len, BLOCK_SIZE), NUM_SEGMENTS)
    seg_lo = tl.maximum(tile_lo, segment * per_segment)
    seg_hi = tl.minimum(tile_hi, (segment + 1) * per_segment)
    acc, m_i, l_i = _attend_tiles(
        q, query_pos, row_mask, k_cache_ptr, v_cache_ptr, block_table_ptr + req * stride_bt,
        kv_head, seq_len, seg_lo, seg_hi, scale_log2 * k_scale, window,
        stride_c_block, stride_c_slot, stride_c_head,
        HEAD_SIZE, HEAD_PAD, BLOCK_SIZE, BLOCK_M, SLIDING, IEEE, UPCAST, KV_FP8,
    )  # fmt: skip
    acc = acc * v_scale
    row = (token * NUM_HEADS + head) * NUM_SEGMENTS + segment
    tl.store(segm_max_ptr + row, m_i, mask=row_mask)
    tl.store(segm_expsum_ptr + row, l_i, mask=row_mask)
    offs_d = tl.arange(0, HEAD_PAD)
    tl.store(
        segm_output_ptr + row[:, None] * HEAD_PAD + offs_d[None, :], acc, mask=row_mask[:, None]
    )


def _tile_shape(num_queries_per_kv: int, max_query_len: int) -> tuple[int, int]:
    """(BLOCK_M rows per tile, BLOCK_Q query tokens per tile)."""
    # tl.dot needs >= 16 rows; prefills fill bigger tiles, decodes (one token) only need the
    # query heads of one KV head.
    min_rows = 64 if max_query_len > 1 else 16
    block_m = max(min_rows, triton.next_power_of_2(num_queries_per_kv))
    return block_m, block_m // num_queries_per_kv


@functools.cache
def _num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def choose_num_kv_splits(
    num_reqs: int, num_kv_heads: int, max_query_len: int, max_seq_len: int, device: torch.device
) -> int:
    """Segments per request for a decode-only batch: enough programs to fill the GPU's SMs,
    each segment at least MIN_KEYS_PER_SPLIT keys. 1 (no split) elsewhere."""
    if max_query_len > 1 or device.type != "cuda":
        return 1
    programs = num_reqs * num_kv_heads
    num_sms = _num_sms(device.index if device.index is not None else torch.cuda.current_device())
    if programs >= num_sms:
        return 1
    by_length = max_seq_len // MIN_KEYS_PER_SPLIT
    return max(1, min(MAX_KV_SPLITS, triton.cdiv(2 * num_sms, programs), by_length))


def unified_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    out: torch.Tensor,
    query_start_loc: torch.Tensor,
    seq_lens: torch.Tensor,
    block_table: torch.Tensor,
    max_query_len: int,
    max_seq_len: int,
    scale: float,
    sliding_window: int | None = None,
    num_kv_splits: int | None = None,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> None:
    """q/out [T, num_heads, head_size]; k_cache/v_cache [num_blocks, block_size, num_kv_heads,
    head_size]; query_start_loc [R + 1], seq_lens [R], block_table [R, max_blocks] (int32).

    `num_kv_splits` None picks the split-KV segment count from the batch (1: the 2D kernel).
    An fp8 cache holds K / k_scale and V / v_scale (float32 [1] on the device; None: 1.0).
    Rows of `out` that no request covers are left as they are.
    """
    num_heads, head_size = q.shape[1], q.shape[2]
    _, block_size, num_kv_heads, _ = k_cache.shape
    num_reqs = seq_lens.shape[0]
    if q.shape[0] == 0 or num_reqs == 0:
        return
    assert q.stride(2) == 1 and out.stride(2) == 1 and k_cache.stride(3) == 1
    assert k_cache.stride() == v_cache.stride()
    qpk = num_heads // num_kv_heads
    block_m, block_q = _tile_shape(qpk, max_query_len)
    if num_kv_splits is None:
        num_kv_splits = choose_num_kv_splits(
            num_reqs, num_kv_heads, max_query_len, max_seq_len, q.device
        )
    upcast = os.environ.get("TRITON_INTERPRET") == "1"  # interpreter bf16 math is wrong
    consts = dict(
        NUM_QUERIES_PER_KV=qpk,
        HEAD_SIZE=head_size,
        HEAD_PAD=triton.next_power_of_2(head_size),
        BLOCK_SIZE=block_size,
        BLOCK_M=block_m,
        BLOCK_Q=block_q,
        SLIDING=sliding_window is not None and sliding_window > 0,
        IEEE=upcast or q.dtype == torch.float32,
        UPCAST=upcast,
        KV_FP8=k_cache.dtype == torch.float8_e4m3fn,
    )
    if consts["KV_FP8"] and (k_scale is None or v_scale is None):
        ones = torch.ones(1, dtype=torch.float32, device=q.device)
        k_scale = ones if k_scale is None else k_scale
        v_scale = ones if v_scale is None else v_scale
    grid_q = triton.cdiv(max_query_len, block_q)
    common = (
        q, k_cache, v_cache, block_table, seq_lens, query_start_loc,
        # Not read unless KV_FP8 (any pointer will do then).
        seq_lens if k_scale is None else k_scale, seq_lens if v_scale is None else v_scale,
        scale * LOG2E, sliding_window or 0, q.stride(0), q.stride(1),
    )  # fmt: skip
    cache_strides = (k_cache.stride(0), k_cache.stride(1), k_cache.stride(2))
    if num_kv_splits == 1:
        kernel_unified_attention_2d[(num_reqs, grid_q, num_kv_heads)](
            out, *common, out.stride(0), out.stride(1), block_table.stride(0), *cache_strides,
            **consts,
        )  # fmt: skip
        return
    num_tokens = q.shape[0]
    segm_output = torch.empty(
        num_tokens, num_heads, num_kv_splits, consts["HEAD_PAD"], dtype=torch.float32,
        device=q.device,
    )  # fmt: skip
    segm_max = torch.empty(
        num_tokens, num_heads, num_kv_splits, dtype=torch.float32, device=q.device
    )
    segm_expsum = torch.empty_like(segm_max)
    kernel_unified_attention_3d[(num_reqs, grid_q, num_kv_heads * num_kv_splits)](
        segm_output, segm_max, segm_expsum, *common, block_table.stride(0), *cache_strides,
        NUM_HEADS=num_heads, NUM_SEGMENTS=num_kv_splits, **consts,
    )  # fmt: skip
    reduce_segments(out, segm_output, segm_max, segm_expsum, query_start_loc, num_reqs)
