"""Python entry points of the CPU kernels (vLLM's `_custom_ops` names), on torch tensors, and
their registration as torch operators (`torch.ops.vllm_hydra.*`).

Each `*_supported` says whether the kernel takes these tensors (CPU, dtype, layout, and the
library built: see `cpu_library`); callers keep their torch path otherwise. The elementwise
kernels are bf16 only, where they reproduce torch's roundings; fp32 models keep torch's ops,
the reference the equivalence tests compare with Hugging Face.

The kernels stay a C library built by `cpu_library` and called through ctypes (no torch headers,
ninja or network needed, ~5 s on first use), and each is bound to a `torch.library` operator with
a schema, a CPU implementation (the ctypes call) and a fake implementation (the output's shape and
dtype), so torch.compile traces a call as one opaque node instead of breaking its graph. Eager
code calls the implementations directly: the dispatcher costs ~8 us per call (measured on this
project's CPU), a few hundred per step; under torch.compile the same functions call the ops.
"""

from __future__ import annotations

import ctypes

import torch

from vllm_hydra.cpu_library import load_library

_DTYPE_IDS = {torch.float32: 0, torch.bfloat16: 1}
# The attention kernel's compiled limits (csrc/cpu/attention.c).
MAX_HEAD_SIZE, MAX_GROUP = 256, 32

_P, _I64, _INT, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
_SIGNATURES = {
    # query, q_stride, key, value, block_table, bt_stride, tokens, reqs, seq_lens, num_items,
    # num_heads, num_kv_heads, head_size, block_size, sliding_window, scale, num_threads,
    # dtype, out, out_stride
    "paged_attention_decode": [_P, _I64, _P, _P, _P, _I64, _P, _P, _P]
    + [_INT] * 6
    + [_F, _INT, _INT, _P, _I64],
    # out, out_stride, x, x_stride, residual, residual_stride, residual_out,
    # residual_out_stride, weight, eps, rows, hidden, num_threads
    "rms_norm_bf16": [_P, _I64, _P, _I64, _P, _I64, _P, _I64, _P, _F, _I64, _INT, _INT],
    # out, out_stride, x, x_stride, rows, d, num_threads
    "silu_and_mul_bf16": [_P, _I64, _P, _I64, _I64, _INT, _INT],
    # positions, query, q_stride, num_heads, key, k_stride, num_kv_heads, head_size,
    # cos_sin_cache, tokens, num_threads
    "rotary_embedding_bf16": [_P, _P, _I64, _INT, _P, _I64, _INT, _INT, _P, _I64, _INT],
    # key, key_stride, value, value_stride, key_cache, value_cache, slots, num_tokens,
    # row_bytes, num_threads (strides in bytes)
    "reshape_and_cache": [_P, _I64, _P, _I64, _P, _P, _P, _I64, _I64, _INT],
}


def bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """lib with the kernels' argument types set (once)."""
    if lib.paged_attention_decode.argtypes is None:
        for name, argtypes in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes = argtypes
            fn.restype = ctypes.c_int if name == "paged_attention_decode" else None
    return lib


def _lib() -> ctypes.CDLL | None:
    lib = load_library()
    return bind(lib) if lib is not None else None


def _rows(x: torch.Tensor) -> bool:
    """A 2-D tensor whose rows are contiguous (any row stride)."""
    return x.dim() == 2 and x.stride(1) == 1


def _bf16_cpu(*tensors: torch.Tensor) -> bool:
    return all(t.device.type == "cpu" and t.dtype == torch.bfloat16 for t in tensors)


@torch.compiler.assume_constant_result
def kernels_built() -> bool:
    """The library is built and loaded (a constant to torch.compile: it never traces the build)."""
    return _lib() is not None


def _compiling() -> bool:
    """Inside a torch.compile trace, where the kernels are called as torch operators (Dynamo
    cannot trace their raw pointers)."""
    return torch.compiler.is_compiling()


# ---- attention ----


def paged_attention_decode_supported(
    query: torch.Tensor, kv_cache: torch.Tensor, num_heads: int, num_kv_heads: int
) -> bool:
    """CPU, fp32 or bf16 (query and cache alike), within the kernel's compiled limits."""
    head_size = kv_cache.shape[-1]
    return (
        query.device.type == "cpu"
        and query.dtype == kv_cache.dtype
        and query.dtype in _DTYPE_IDS
        and head_size <= MAX_HEAD_SIZE
        and head_size % 16 == 0
        and num_heads % num_kv_heads == 0
        and num_heads // num_kv_heads <= MAX_GROUP
        and kv_cache.is_contiguous()
        and kernels_built()
    )


def paged_attention_decode(
    out: torch.Tensor,
    query: torch.Tensor,
    kv_cache: torch.Tensor,
    block_table: torch.Tensor,
    tokens: torch.Tensor,
    reqs: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    sliding_window: int | None,
) -> None:
    """out[tokens[i]] = attention of query[tokens[i]] over the seq_lens[i] cached tokens of
    request reqs[i] (its block_table row), for every i, reading K/V in place.

    query/out: [T, num_heads, head_size]; kv_cache: [2, num_blocks, block_size, num_kv_heads,
    head_size]; tokens, reqs, seq_lens, block_table: int32."""
    args = (out, query, kv_cache, block_table, tokens, reqs, seq_lens, scale, sliding_window or 0)
    if _compiling():
        torch.ops.vllm_hydra.paged_attention_decode(*args)
    else:
        _paged_attention_decode(*args)


def _paged_attention_decode(
    out: torch.Tensor,
    query: torch.Tensor,
    kv_cache: torch.Tensor,
    block_table: torch.Tensor,
    tokens: torch.Tensor,
    reqs: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    sliding_window: int,
) -> None:
    _, _, block_size, num_kv_heads, head_size = kv_cache.shape
    if query.stride(2) != 1 or query.stride(1) != head_size:
        query = query.contiguous()
    assert out.stride(2) == 1 and out.stride(1) == head_size, "out: rows of contiguous heads"
    assert block_table.stride(1) == 1
    assert tokens.dtype == reqs.dtype == seq_lens.dtype == block_table.dtype == torch.int32
    status = _lib().paged_attention_decode(  # type: ignore[union-attr]
        query.data_ptr(),
        query.stride(0),
        kv_cache[0].data_ptr(),
        kv_cache[1].data_ptr(),
        block_table.data_ptr(),
        block_table.stride(0),
        tokens.data_ptr(),
        reqs.data_ptr(),
        seq_lens.data_ptr(),
        len(tokens),
        query.shape[1],
        num_kv_heads,
        head_size,
        block_size,
        sliding_window,
        scale,
        torch.get_num_threads(),
        _DTYPE_IDS[query.dtype],
        out.data_ptr(),
        out.stride(0),
    )
    if status != 0:
        raise ValueError("paged_attention_decode: shapes beyond the kernel's compiled limits")


# ---- RMSNorm, SiLU-and-mul, rotary (bf16) ----


def bf16_kernels_supported(*tensors: torch.Tensor) -> bool:
    """All bf16 CPU tensors, and the library built."""
    return _bf16_cpu(*tensors) and kernels_built()


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(rms_norm(x [+ residual]) * weight, the sum when a residual is given); x [T, hidden]."""
    if not _compiling():
        return _rms_norm(x, weight, eps, residual)
    if residual is None:
        return torch.ops.vllm_hydra.rms_norm(x, weight, eps), None
    out, new_residual = torch.ops.vllm_hydra.fused_add_rms_norm(x, residual, weight, eps)
    return out, new_residual


def _rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    x = x if _rows(x) else x.contiguous()
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    new_residual = None
    res_ptr = res_stride = new_ptr = new_stride = 0
    if residual is not None:
        residual = residual if _rows(residual) else residual.contiguous()
        new_residual = torch.empty_like(out)
        res_ptr, res_stride = residual.data_ptr(), residual.stride(0)
        new_ptr, new_stride = new_residual.data_ptr(), new_residual.stride(0)
    _lib().rms_norm_bf16(  # type: ignore[union-attr]
        out.data_ptr(),
        out.stride(0),
        x.data_ptr(),
        x.stride(0),
        res_ptr,
        res_stride,
        new_ptr,
        new_stride,
        weight.data_ptr(),
        eps,
        x.shape[0],
        x.shape[1],
        torch.get_num_threads(),
    )
    return out, new_residual


def reshape_and_cache_supported(key: torch.Tensor, kv_cache: torch.Tensor) -> bool:
    """CPU, fp32 or bf16 (key and cache alike), a contiguous cache, the library built."""
    return (
        key.device.type == "cpu"
        and key.dtype == kv_cache.dtype
        and key.dtype in _DTYPE_IDS
        and kv_cache.is_contiguous()
        and kernels_built()
    )


def reshape_and_cache(
    key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Store key/value [T, num_kv_heads, head_size] at their slots (int64 [T]; negative: none)
    of kv_cache [2, num_blocks, block_size, num_kv_heads, head_size], in place."""
    if key.shape[0] == 0:
        return
    row = key.shape[1] * key.shape[2]
    key, value = (x if x[0].is_contiguous() else x.contiguous() for x in (key, value))
    slots = slot_mapping if slot_mapping.dtype == torch.int64 else slot_mapping.long()
    elem = key.element_size()
    _lib().reshape_and_cache(  # type: ignore[union-attr]
        key.data_ptr(),
        key.stride(0) * elem,
        value.data_ptr(),
        value.stride(0) * elem,
        kv_cache[0].data_ptr(),
        kv_cache[1].data_ptr(),
        slots.contiguous().data_ptr(),
        key.shape[0],
        row * elem,
        torch.get_num_threads(),
    )


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """silu(x[:, :d]) * x[:, d:] for x [T, 2d]."""
    return torch.ops.vllm_hydra.silu_and_mul(x) if _compiling() else _silu_and_mul(x)


def _silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    x = x if _rows(x) else x.contiguous()
    d = x.shape[1] // 2
    out = x.new_empty(x.shape[0], d)
    _lib().silu_and_mul_bf16(  # type: ignore[union-attr]
        out.data_ptr(),
        out.stride(0),
        x.data_ptr(),
        x.stride(0),
        x.shape[0],
        d,
        torch.get_num_threads(),
    )
    return out


def rotary_embedding(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    head_size: int,
    cos_sin_cache: torch.Tensor,
) -> None:
    """Rotate query [T, heads * head_size] and key [T, kv_heads * head_size] in place (neox
    style) at int64 `positions`; cos_sin_cache [max_position, head_size] = [cos | sin]."""
    args = (positions, query, key, head_size, cos_sin_cache)
    if _compiling():
        torch.ops.vllm_hydra.rotary_embedding(*args)
    else:
        _rotary_embedding(*args)


def _rotary_embedding(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    head_size: int,
    cos_sin_cache: torch.Tensor,
) -> None:
    assert _rows(query) and _rows(key) and cos_sin_cache.is_contiguous()
    assert positions.dtype == torch.int64 and positions.is_contiguous()
    _lib().rotary_embedding_bf16(  # type: ignore[union-attr]
        positions.data_ptr(),
        query.data_ptr(),
        query.stride(0),
        query.shape[1] // head_size,
        key.data_ptr(),
        key.stride(0),
        key.shape[1] // head_size,
        head_size,
        cos_sin_cache.data_ptr(),
        query.shape[0],
        torch.get_num_threads(),
    )


# ---- the torch operators ----

_LIBRARY = torch.library.Library("vllm_hydra", "FRAGMENT")
_SCHEMAS = {
    "paged_attention_decode": "(Tensor(a!) out, Tensor query, Tensor kv_cache, "
    "Tensor block_table, Tensor tokens, Tensor reqs, Tensor seq_lens, float scale, "
    "int sliding_window) -> ()",
    "rms_norm": "(Tensor x, Tensor weight, float eps) -> Tensor",
    "fused_add_rms_norm": "(Tensor x, Tensor residual, Tensor weight, float eps) "
    "-> (Tensor, Tensor)",
    "silu_and_mul": "(Tensor x) -> Tensor",
    "rotary_embedding": "(Tensor positions, Tensor(a!) query, Tensor(b!) key, int head_size, "
    "Tensor cos_sin_cache) -> ()",
}


def _rms_norm_op(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return _rms_norm(x, weight, eps)[0]


def _fused_add_rms_norm_op(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    out, new_residual = _rms_norm(x, weight, eps, residual)
    assert new_residual is not None
    return out, new_residual


def _rms_norm_fake(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _fused_add_rms_norm_fake(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    return _rms_norm_fake(x, weight, eps), _rms_norm_fake(x, weight, eps)


def _silu_and_mul_fake(x: torch.Tensor) -> torch.Tensor:
    return x.new_empty(x.shape[0], x.shape[1] // 2)


def _in_place_fake(*args: object) -> None:
    """Ops that only write into their arguments: nothing to allocate."""


_IMPLS = {
    "paged_attention_decode": (_paged_attention_decode, _in_place_fake),
    "rms_norm": (_rms_norm_op, _rms_norm_fake),
    "fused_add_rms_norm": (_fused_add_rms_norm_op, _fused_add_rms_norm_fake),
    "silu_and_mul": (_silu_and_mul, _silu_and_mul_fake),
    "rotary_embedding": (_rotary_embedding, _in_place_fake),
}


def _register_ops() -> None:
    for name, schema in _SCHEMAS.items():
        impl, fake = _IMPLS[name]
        _LIBRARY.define(name + schema)
        _LIBRARY.impl(name, impl, "CPU")
        torch.library.register_fake(f"vllm_hydra::{name}", fake, lib=_LIBRARY)


_register_ops()
