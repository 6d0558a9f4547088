"""The quantized linear products against the dequantized weight in fp64: torch's CPU int4 GEMM
(`_weight_int4pack_mm_for_cpu`) and int8 GEMM on both sides of their row threshold, and the
Triton dequant GEMMs under the interpreter (small shapes)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.triton_interpreter import requires_interpreter
from vllm_hydra.model_executor.layers.quantization.int4 import Int4LinearMethod, pack_int4
from vllm_hydra.model_executor.layers.quantization.int8 import (
    INT8_PACKED_MAX_ROWS,
    Int8LinearMethod,
)

OUT, IN = 96, 256


def int4_layer(
    group_size: int, dtype: torch.dtype, seed: int = 0, out_features: int = OUT
) -> tuple[nn.Module, torch.Tensor]:
    """A layer with the int4 runtime layout (random codes, scales, zero points) and its W."""
    gen = torch.Generator().manual_seed(seed)
    groups = 1 if group_size == -1 else IN // group_size
    codes = torch.randint(0, 16, (out_features, IN), generator=gen)
    scale = (torch.rand(out_features, groups, generator=gen) * 0.05 + 0.01).to(dtype)
    zero = torch.randint(0, 16, (out_features, groups), generator=gen).to(dtype)
    layer = nn.Module()
    layer.weight_packed = nn.Parameter(pack_int4(codes), requires_grad=False)
    layer.weight_scale = nn.Parameter(scale, requires_grad=False)
    layer.weight_zero_point = nn.Parameter(zero, requires_grad=False)
    g = IN // groups
    zeros, scales = (t.double().repeat_interleave(g, 1) for t in (zero, scale))
    return layer, (codes.double() - zeros) * scales


def int8_layer(group_size: int, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    groups = 1 if group_size == -1 else IN // group_size
    q = torch.randint(-127, 128, (OUT, IN), generator=gen).to(torch.int8)
    scale = torch.rand(OUT, groups, generator=gen) * 0.01 + 0.001
    layer = nn.Module()
    layer.weight = nn.Parameter(q, requires_grad=False)
    layer.weight_scale = nn.Parameter(scale, requires_grad=False)
    w = q.double() * scale.double().repeat_interleave(IN // groups, 1)
    return layer, w


TOL = {torch.float32: 1e-4, torch.bfloat16: 3e-2}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("group_size", [128, 32, -1])
@pytest.mark.parametrize("rows", [1, 40])
def test_cpu_int4_gemm_matches_dequantized(group_size: int, dtype: torch.dtype, rows: int) -> None:
    layer, w = int4_layer(group_size, dtype)
    method = Int4LinearMethod(group_size)
    method.process_weights_after_loading(layer)
    assert layer.cpu_int4_group is not None  # the packed kernel runs, not the fallback
    x = torch.randn(rows, IN).to(dtype)
    bias = torch.randn(OUT).to(dtype)
    got = method.apply(layer, x, bias)
    want = x.double() @ w.t() + bias.double()
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), want, atol=TOL[dtype] * want.abs().max(), rtol=0)


def test_cpu_int4_shapes_the_kernel_lacks_dequantize_instead() -> None:
    """torch's CPU int4 GEMM needs out features in multiples of 16 (a tp shard may not be)."""
    layer, w = int4_layer(128, torch.float32, out_features=40)
    method = Int4LinearMethod(128)
    method.process_weights_after_loading(layer)
    assert layer.cpu_int4_group is None
    x = torch.randn(3, IN)
    want = x.double() @ w.t()
    got = method.apply(layer, x, None).double()
    torch.testing.assert_close(got, want, atol=1e-4 * want.abs().max(), rtol=0)


@pytest.mark.parametrize("rows", [1, INT8_PACKED_MAX_ROWS, INT8_PACKED_MAX_ROWS + 1, 64])
@pytest.mark.parametrize("group_size", [-1, 64])
def test_cpu_int8_gemm_matches_dequantized_on_both_paths(rows: int, group_size: int) -> None:
    layer, w = int8_layer(group_size)
    method = Int8LinearMethod(online=False, group_size=group_size)
    method.process_weights_after_loading(layer)
    x = torch.randn(rows, IN, dtype=torch.bfloat16)
    got = method.apply(layer, x, None)
    want = x.double() @ w.t()
    torch.testing.assert_close(got.double(), want, atol=3e-2 * want.abs().max(), rtol=0)


@requires_interpreter
@pytest.mark.parametrize(("group_size", "rows"), [(128, 3), (-1, 20), (32, 1)])
def test_triton_int4_dequant_gemm_matches_torch(group_size: int, rows: int) -> None:
    from vllm_hydra.model_executor.layers.quantization.triton_dequant_gemm import (
        int4_dequant_gemm,
    )

    layer, w = int4_layer(group_size, torch.float16, seed=1)
    x = torch.randn(rows, IN, dtype=torch.float16)
    got = int4_dequant_gemm(x, layer.weight_packed, layer.weight_scale, layer.weight_zero_point)
    want = x.double() @ w.t()
    assert got.shape == (rows, OUT) and got.dtype == torch.float16
    torch.testing.assert_close(got.double(), want, atol=2e-3 * want.abs().max(), rtol=0)


@requires_interpreter
@pytest.mark.parametrize(("group_size", "rows"), [(-1, 5), (64, 17)])
def test_triton_int8_dequant_gemm_matches_torch(group_size: int, rows: int) -> None:
    from vllm_hydra.model_executor.layers.quantization.triton_dequant_gemm import (
        int8_dequant_gemm,
    )

    layer, w = int8_layer(group_size, seed=2)
    x = torch.randn(rows, IN)
    got = int8_dequant_gemm(x, layer.weight, layer.weight_scale)
    want = x.double() @ w.t()
    torch.testing.assert_close(got.double(), want, atol=1e-5 * want.abs().max(), rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 16, 17, 40])
def test_cpu_fp8_weight_only_matches_dequantized(rows: int, dtype: torch.dtype) -> None:
    """csrc/cpu/fp8_gemm.c: the register-widening GEMV up to 16 rows, dequantize-then-GEMM past."""
    from vllm_hydra.model_executor.layers.quantization.cpu_fp8_linear import (
        fp8_linear_cpu_supported,
    )
    from vllm_hydra.model_executor.layers.quantization.fp8 import Fp8LinearMethod, quantize_fp8

    gen = torch.Generator().manual_seed(3)
    q, scale = quantize_fp8(torch.randn(OUT, IN, generator=gen), dim=1)
    q[0, :3] = torch.tensor([0.001, -0.004, 0.0]).to(q.dtype)  # subnormal and zero codes
    layer = nn.Module()
    layer.weight = nn.Parameter(q, requires_grad=False)
    layer.weight_scale = nn.Parameter(scale, requires_grad=False)
    method = Fp8LinearMethod(online=False, activation_fp8=False)
    method.process_weights_after_loading(layer)
    x = torch.randn(rows, IN, generator=gen).to(dtype)
    assert fp8_linear_cpu_supported(x, layer.weight)
    bias = torch.randn(OUT).to(dtype)
    got = method.apply(layer, x, bias)
    want = x.double() @ (q.double() * scale.double()).t() + bias.double()
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), want, atol=TOL[dtype] * want.abs().max(), rtol=0)


@pytest.mark.parametrize("rows", [1, 16, 32])
def test_cpu_fp8_kernels_decode_every_e4m3_code_exactly(rows: int) -> None:
    """All 254 finite codes (normals, subnormals, both zeros) through both kernels, read back
    through an identity product in fp32: bit-equal to torch's cast."""
    from vllm_hydra.model_executor.layers.quantization.cpu_fp8_linear import fp8_linear_cpu

    codes = torch.arange(256, dtype=torch.uint8)
    codes = codes[(codes & 0x7F) != 0x7F].reshape(-1)  # drop the two NaNs
    weight = torch.cat([codes, codes[:2]]).reshape(16, 16).view(torch.float8_e4m3fn)
    x = torch.eye(16).repeat(max(1, rows // 16), 1)
    if rows == 1:  # the one-row GEMV, one unit row at a time
        got = torch.cat([fp8_linear_cpu(r[None], weight, torch.ones(16), None) for r in x])
    else:
        got = fp8_linear_cpu(x, weight.contiguous(), torch.ones(16), None)
    assert torch.equal(got[:16], weight.float().t())
