"""GPU checks for the Triton attention backend, CUDA graphs and quantization (needs an NVIDIA
GPU).

    python scripts/gpu_check.py                    # all four checks
    python scripts/gpu_check.py --checks kernels bench --bench-context 4096
    python scripts/gpu_check.py --checks quant --quant-batch-sizes 1 64

1. kernels: the Triton kernels against the torch backend on CUDA in bf16 and fp16 (mixed
   prefill/decode batches, prefix hits, partial blocks, GQA 1/4/8, head sizes 64/128, block
   sizes 16/32, sliding window, split-KV decode), each measured against an fp32 reference.
2. bench: a decode-step microbenchmark of one attention layer, Triton vs torch backend:
   tokens/s and achieved KV-cache read bandwidth against the device's peak (from a table of
   known GPUs, and measured with a device-to-device copy).
3. e2e: greedy tokens through the offline LLM with compilation=cudagraph and compilation=none
   (both attention.backend=triton), which must be identical, with their output tokens/s.
4. quant: the quantized linear products on Llama-3-8B shapes (int4 group 128 and int8 through
   the Triton dequant GEMMs, fp8 through torch._scaled_mm where the device has fp8 GEMMs, else
   weight-only) against the dequantized weight in fp32, with time and achieved weight-read
   bandwidth beside a bf16 F.linear; and the fp8 KV cache in the Triton attention kernels
   against the torch backend over the same e4m3 values.

Exits 1 at the first failed check, 2 when there is no CUDA device.
"""

from __future__ import annotations

import argparse
import functools
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from vllm_hydra.attention import AttentionMetadata

# Peak DRAM bandwidth (bytes/s) by a substring of torch.cuda.get_device_name(), most specific
# first. Vendor data sheets.
PEAK_BANDWIDTH = (
    ("H200", 4.8e12),
    ("H100 PCIe", 2.0e12),
    ("H100", 3.35e12),
    ("GH200", 4.0e12),
    ("B200", 8.0e12),
    ("A100-SXM4-80GB", 2.039e12),
    ("A100 80GB PCIe", 1.935e12),
    ("A100", 1.555e12),
    ("L40S", 0.864e12),
    ("L40", 0.864e12),
    ("L4", 0.3e12),
    ("A10G", 0.6e12),
    ("A10", 0.6e12),
    ("RTX 4090", 1.008e12),
    ("RTX 3090", 0.936e12),
    ("V100", 0.9e12),
    ("T4", 0.32e12),
)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# (cached context, new tokens), as in tests/attention/test_triton_kernels.py.
MIXED = [(0, 37), (32, 9), (21, 6), (50, 1), (7, 1), (0, 1), (500, 1), (1000, 130)]
NUM_KV_HEADS = 2


@dataclass(frozen=True)
class KernelCase:
    gqa: int
    head_size: int
    block_size: int
    window: int | None = None
    num_kv_splits: int | None = None  # None: the backend's choice


KERNEL_CASES = [
    KernelCase(gqa, head, block) for gqa in (1, 4, 8) for head in (64, 128) for block in (16, 32)
] + [KernelCase(4, 128, 16, window=64), KernelCase(8, 128, 16, num_kv_splits=4)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Triton attention and CUDA graph checks on a GPU.",
        epilog="Exits 1 when a check fails, 2 when no CUDA device is present.",
    )
    parser.add_argument(
        "--checks", nargs="+", choices=("kernels", "bench", "e2e", "quant"),
        default=["kernels", "bench", "e2e", "quant"],
    )  # fmt: skip
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=["bf16", "fp16"])
    parser.add_argument("--bench-batch-sizes", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--bench-context", type=int, default=2048, help="tokens per sequence")
    parser.add_argument("--bench-heads", type=int, nargs=2, default=(32, 8), metavar=("Q", "KV"))
    parser.add_argument("--bench-head-size", type=int, default=128)
    parser.add_argument("--bench-iters", type=int, default=50)
    parser.add_argument(
        "--e2e-overrides", nargs="*", default=["model.dtype=float32"],
        help="Hydra overrides for the end-to-end run (default: the embedded tiny model, fp32)",
    )  # fmt: skip
    parser.add_argument("--quant-batch-sizes", type=int, nargs="+", default=[1, 16, 128])
    parser.add_argument(
        "--quant-shapes", type=int, nargs="+", default=[4096, 4096, 14336, 4096],
        help="(out, in) pairs of the linear layers, flat (default: Llama-3-8B's o_proj, up_proj)",
    )  # fmt: skip
    parser.add_argument("--e2e-prompts", type=int, default=32)
    parser.add_argument("--e2e-output-len", type=int, default=64)
    return parser.parse_args(argv)


# ---- 1. kernels ----


def _metadata(requests: list[tuple[int, int]], block_size: int, num_blocks: int, device: str):
    from vllm_hydra.attention import AttentionMetadata

    free = list(range(1, num_blocks))
    random.Random(0).shuffle(free)
    blocks = [[free.pop() for _ in range(-(-(c + n) // block_size))] for c, n in requests]
    return AttentionMetadata.build(
        [n for _, n in requests], [c + n for c, n in requests], blocks, block_size, device
    )


def check_kernel_case(case: KernelCase, dtype: torch.dtype) -> tuple[float, float]:
    """(Triton's, torch backend's) max abs error against the torch backend in fp32."""
    from vllm_hydra.attention.backends.torch_attn import TorchAttentionImpl
    from vllm_hydra.attention.backends.triton_attn import TritonAttentionImpl
    from vllm_hydra.attention.ops.triton_unified_attention import unified_attention

    num_heads, size = NUM_KV_HEADS * case.gqa, case.head_size
    num_blocks = sum(-(-(c + n) // case.block_size) for c, n in MIXED) + 8
    meta = _metadata(MIXED, case.block_size, num_blocks, "cuda")
    n = meta.num_actual_tokens
    gen = torch.Generator(device="cuda").manual_seed(0)
    cache32 = torch.randn(2, num_blocks, case.block_size, NUM_KV_HEADS, size, device="cuda",
                          generator=gen)  # fmt: skip
    qkv32 = torch.randn(n, (num_heads + 2 * NUM_KV_HEADS) * size, device="cuda", generator=gen)
    args = (num_heads, size, size**-0.5, NUM_KV_HEADS, case.window)

    def split(qkv: torch.Tensor) -> list[torch.Tensor]:
        return list(qkv.split([num_heads * size, NUM_KV_HEADS * size, NUM_KV_HEADS * size], -1))

    plan = _torch_plan(meta, args, case.block_size)  # the torch backend reads its own plan
    ref = TorchAttentionImpl(*args).forward(*split(qkv32), cache32.clone(), plan)
    cache, qkv = cache32.to(dtype), qkv32.to(dtype)
    torch_out = TorchAttentionImpl(*args).forward(*split(qkv), cache.clone(), plan)
    tri_cache = cache.clone()
    if case.num_kv_splits is None:
        tri_out = TritonAttentionImpl(*args).forward(*split(qkv), tri_cache, meta)
    else:  # the cache write through the backend, then a forced split count
        TritonAttentionImpl(*args).forward(*split(qkv), tri_cache, meta)
        tri_out = torch.zeros(n, num_heads, size, dtype=dtype, device="cuda")
        unified_attention(
            split(qkv)[0].reshape(n, num_heads, size), tri_cache[0], tri_cache[1], tri_out,
            meta.query_start_loc, meta.seq_lens, meta.block_table, meta.max_query_len,
            meta.max_seq_len, size**-0.5, case.window, num_kv_splits=case.num_kv_splits,
        )  # fmt: skip
        tri_out = tri_out.view(n, -1)
    torch.cuda.synchronize()
    return (tri_out.float() - ref).abs().max().item(), (torch_out.float() - ref).abs().max().item()


def run_kernel_checks(dtypes: list[str]) -> bool:
    print("== kernels: Triton vs torch backend (max abs error against fp32)")
    ok = True
    for name in dtypes:
        for case in KERNEL_CASES:
            tri_err, torch_err = check_kernel_case(case, DTYPES[name])
            # The Triton kernel may be no less exact than the torch backend (within rounding).
            passed = tri_err <= 2 * torch_err + (1e-2 if name == "bf16" else 2e-3)
            ok &= passed
            print(f"  {'ok ' if passed else 'BAD'} {name} {case}: triton {tri_err:.2e}, "
                  f"torch {torch_err:.2e}")  # fmt: skip
    return ok


# ---- 2. decode microbenchmark ----


def peak_bandwidth(name: str) -> float | None:
    return next((bw for key, bw in PEAK_BANDWIDTH if key in name), None)


def measured_copy_bandwidth(num_bytes: int = 1 << 30) -> float:
    """Read + write bytes/s of a device-to-device copy."""
    src = torch.empty(num_bytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    seconds = _time_cuda(lambda: dst.copy_(src), 20)
    return 2 * num_bytes / seconds


def _time_cuda(fn: Callable[[], object], iters: int) -> float:
    """Mean seconds per call, after warm-up, timed with CUDA events."""
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / iters


def bench_decode(args: argparse.Namespace) -> None:
    from vllm_hydra.attention.backends.torch_attn import TorchAttentionImpl
    from vllm_hydra.attention.backends.triton_attn import TritonAttentionImpl

    num_heads, num_kv_heads = args.bench_heads
    size, block_size, ctx, dtype = args.bench_head_size, 16, args.bench_context, torch.bfloat16
    name = torch.cuda.get_device_name()
    peak, copy_bw = peak_bandwidth(name), measured_copy_bandwidth()
    print(f"== bench: one decode step of one attention layer, bf16, {num_heads} q / "
          f"{num_kv_heads} kv heads, head size {size}, {ctx} tokens per sequence")  # fmt: skip
    print(f"  device {name}: peak {peak / 1e9 if peak else float('nan'):.0f} GB/s (table), "
          f"{copy_bw / 1e9:.0f} GB/s measured copy (read + write)")  # fmt: skip
    for batch in args.bench_batch_sizes:
        blocks_per_seq = -(-ctx // block_size)
        num_blocks = batch * blocks_per_seq + 1
        meta = _metadata([(ctx - 1, 1)] * batch, block_size, num_blocks, "cuda")
        cache = torch.randn(2, num_blocks, block_size, num_kv_heads, size, dtype=dtype,
                            device="cuda")  # fmt: skip
        q = torch.randn(batch, num_heads * size, dtype=dtype, device="cuda")
        k = torch.randn(batch, num_kv_heads * size, dtype=dtype, device="cuda")
        v = torch.randn_like(k)
        kv_bytes = 2 * batch * ctx * num_kv_heads * size * cache.element_size()
        line = f"  batch {batch:4d}:"
        impl_args = (num_heads, size, size**-0.5, num_kv_heads)
        plans = {"triton": meta, "torch": _torch_plan(meta, impl_args, block_size, dtype)}
        for label, impl_cls in (("triton", TritonAttentionImpl), ("torch", TorchAttentionImpl)):
            impl = impl_cls(*impl_args)
            step = functools.partial(impl.forward, q, k, v, cache, plans[label])
            seconds = _time_cuda(step, args.bench_iters)
            bw = kv_bytes / seconds
            share = f" ({100 * bw / peak:.0f}% of peak)" if peak else ""
            line += f"  {label} {seconds * 1e6:8.1f} us {batch / seconds:10.0f} tok/s "
            line += f"{bw / 1e9:6.0f} GB/s{share}"
        print(line, flush=True)


# ---- 3. end to end with CUDA graphs ----


def run_e2e(args: argparse.Namespace) -> bool:
    from vllm_hydra import LLM, SamplingParams

    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(8, 200, (args.e2e_prompts,), generator=gen).tolist()
    prompts = [torch.randint(3, 1000, (n,), generator=gen).tolist() for n in lengths]
    params = SamplingParams(temperature=0.0, max_tokens=args.e2e_output_len, ignore_eos=True)
    print(f"== e2e: greedy, {len(prompts)} prompts x {args.e2e_output_len} tokens, "
          f"overrides {args.e2e_overrides}")  # fmt: skip
    results = {}
    for mode in ("none", "cudagraph"):
        overrides = ["device=cuda", "attention.backend=triton", f"compilation={mode}"]
        llm = LLM([*overrides, *args.e2e_overrides])
        llm.generate(prompts[:2], SamplingParams(max_tokens=2), use_tqdm=False)  # warm-up
        start = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - start
        results[mode] = [o.outputs[0].token_ids for o in outputs]
        rate = len(prompts) * args.e2e_output_len / seconds
        print(f"  compilation={mode:9s}: {seconds:6.2f} s, {rate:8.1f} output tok/s")
        del llm
        torch.cuda.empty_cache()
    same = results["none"] == results["cudagraph"]
    varied = len({tuple(t) for t in results["none"]}) > 1
    print(f"  greedy tokens identical: {same} (outputs vary across prompts: {varied})")
    return same


# ---- 4. quantization ----

# Max |error| over max |reference| each product may show: bf16 rounding of the activations and
# output (int4, int8, weight-only fp8), plus per-token e4m3 activations (fp8 GEMMs).
QUANT_TOLERANCE = {"int4": 1e-2, "int8": 1e-2, "fp8": 6e-2, "bf16": 1e-2}


def _quant_weights(out_f: int, in_f: int, device: str) -> dict[str, tuple]:
    """Each method's weight layout for one layer, and its dequantized weight in fp32."""
    from vllm_hydra.model_executor.layers.quantization.fp8 import quantize_fp8
    from vllm_hydra.model_executor.layers.quantization.int4 import pack_int4
    from vllm_hydra.model_executor.layers.quantization.int8 import quantize_int8_per_channel

    gen = torch.Generator(device=device).manual_seed(0)
    w = torch.randn(out_f, in_f, device=device, generator=gen) * 0.02
    groups = in_f // 128
    codes = torch.randint(0, 16, (out_f, in_f), device=device, generator=gen)
    scale4 = torch.rand(out_f, groups, device=device, generator=gen) * 0.01 + 0.001
    zero4 = torch.randint(0, 16, (out_f, groups), device=device, generator=gen).float()
    w4 = (codes - zero4.repeat_interleave(128, 1)) * scale4.repeat_interleave(128, 1)
    q8, s8 = quantize_int8_per_channel(w)
    f8, sf8 = quantize_fp8(w, dim=1)
    bf16 = torch.bfloat16
    return {
        "int4": ((pack_int4(codes), scale4.to(bf16), zero4.to(bf16)), w4),
        "int8": ((q8, s8), q8.float() * s8),
        "fp8": ((f8, sf8), f8.float() * sf8),
        "bf16": ((w.to(bf16),), w.to(bf16).float()),
    }


def _quant_product(method: str, layout: tuple, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    import torch.nn.functional as F

    from vllm_hydra.model_executor.layers.quantization import triton_dequant_gemm as tdg
    from vllm_hydra.model_executor.layers.quantization.fp8 import (
        Fp8LinearMethod,
        device_has_fp8_gemm,
    )

    if method == "int4":
        return functools.partial(tdg.int4_dequant_gemm, x, *layout)
    if method == "int8":
        return functools.partial(tdg.int8_dequant_gemm, x, *layout)
    if method == "bf16":
        return functools.partial(F.linear, x, layout[0])
    layer = torch.nn.Module()
    layer.weight, layer.weight_scale = layout
    fp8 = Fp8LinearMethod(online=False, activation_fp8=device_has_fp8_gemm(x.device))
    fp8.process_weights_after_loading(layer)  # as the loader does
    return functools.partial(fp8.apply, layer, x, None)


def _weight_bytes(layout: tuple) -> int:
    return sum(t.numel() * t.element_size() for t in layout)


def run_quant_checks(
    args: argparse.Namespace,
    device: str = "cuda",
    kv_requests: list[tuple[int, int]] | None = None,
) -> bool:
    from vllm_hydra.model_executor.layers.quantization.fp8 import device_has_fp8_gemm

    fp8_path = "torch._scaled_mm" if device_has_fp8_gemm(torch.device(device)) else "weight-only"
    print(f"== quant: quantized linear products vs the dequantized weight in fp32 (bf16 "
          f"activations; fp8 via {fp8_path}); time, weight-read GB/s")  # fmt: skip
    ok, shapes = True, args.quant_shapes
    timer = _time_cuda if device == "cuda" else _time_host
    for out_f, in_f in zip(shapes[0::2], shapes[1::2], strict=True):
        weights = _quant_weights(out_f, in_f, device)
        for batch in args.quant_batch_sizes:
            x = torch.randn(batch, in_f, device=device).to(torch.bfloat16)
            line = f"  {out_f}x{in_f} batch {batch:4d}:"
            for method, (layout, w) in weights.items():
                product = _quant_product(method, layout, x)
                ref = x.float() @ w.t()
                error = ((product().float() - ref).abs().max() / ref.abs().max()).item()
                passed = error <= QUANT_TOLERANCE[method]
                ok &= passed
                seconds = timer(product, args.bench_iters)
                line += f"  {'' if passed else 'BAD '}{method} {seconds * 1e6:7.1f} us "
                line += f"{_weight_bytes(layout) / seconds / 1e9:5.0f} GB/s err {error:.1e}"
            print(line, flush=True)
    return check_fp8_kv_cache(device, kv_requests) and ok


def _time_host(fn: Callable[[], object], iters: int) -> float:
    """Mean seconds per call on the host (the CPU self-test of this script)."""
    fn()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def check_fp8_kv_cache(device: str = "cuda", requests: list[tuple[int, int]] | None = None) -> bool:
    """The Triton backend on an fp8 cache against the torch backend on an fp32 cache holding
    the same e4m3 values times their scales (the new K/V rounded the same way)."""
    from vllm_hydra.attention.backends.torch_attn import TorchAttentionImpl
    from vllm_hydra.attention.backends.triton_attn import TritonAttentionImpl
    from vllm_hydra.attention.kv_cache_quant import dequantize_kv, quantize_kv

    num_heads, size, block_size = NUM_KV_HEADS * 4, 128, 16
    # Every query reads its keys back from the cache (context > 0).
    requests = requests or [(c, n) for c, n in MIXED if c > 0]
    num_blocks = sum(-(-(c + n) // block_size) for c, n in requests) + 8
    meta = _metadata(requests, block_size, num_blocks, device)
    n = meta.num_actual_tokens
    gen = torch.Generator(device=device).manual_seed(0)
    scales = torch.tensor([0.02], device=device), torch.tensor([0.01], device=device)
    cache = torch.randn(2, num_blocks, block_size, NUM_KV_HEADS, size, device=device,
                        generator=gen)  # fmt: skip
    qkv = torch.randn(n, (num_heads + 2 * NUM_KV_HEADS) * size, device=device, generator=gen)
    q, k, v = qkv.split([num_heads * size, NUM_KV_HEADS * size, NUM_KV_HEADS * size], -1)
    fp8_cache = torch.stack([quantize_kv(cache[i], scales[i]) for i in (0, 1)])
    k, v = (
        dequantize_kv(quantize_kv(t, s), s, torch.float32)
        for t, s in zip((k, v), scales, strict=True)
    )
    ref_cache = torch.stack([dequantize_kv(fp8_cache[i], scales[i], torch.float32) for i in (0, 1)])
    args = (num_heads, size, size**-0.5, NUM_KV_HEADS)
    ref = TorchAttentionImpl(*args).forward(q, k, v, ref_cache, _torch_plan(meta, args, block_size))
    impl = TritonAttentionImpl(*args)
    impl.k_scale, impl.v_scale = scales
    out = impl.forward(q.bfloat16(), k.bfloat16(), v.bfloat16(), fp8_cache, meta)
    error = (out.float() - ref).abs().max().item()
    passed = error <= 2e-2
    print(f"  {'ok ' if passed else 'BAD'} fp8 KV cache: Triton (bf16 queries) vs torch over the "
          f"same e4m3 values: max abs error {error:.2e}")  # fmt: skip
    return passed


def _torch_plan(
    meta: AttentionMetadata, args: tuple, block_size: int, dtype: torch.dtype = torch.float32
) -> AttentionMetadata:
    """The torch backend's metadata (its decode plan) for the common metadata `meta`; args are
    the impl's (num_heads, head_size, scale, num_kv_heads[, sliding_window])."""
    from vllm_hydra.attention.backends.abstract import AttentionSpec
    from vllm_hydra.attention.backends.torch_attn import TorchAttentionMetadataBuilder

    num_heads, size, _, num_kv_heads, *window = args
    spec = AttentionSpec(block_size, num_heads, num_kv_heads, size, dtype, dtype, *window)
    return TorchAttentionMetadataBuilder(spec, meta.seq_lens.device).build(meta)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "gpu_check.py needs a CUDA GPU, and torch.cuda.is_available() is False here "
            f"(torch {torch.__version__}). On CPU, the kernels are tested under the Triton "
            "interpreter: pytest tests/attention tests/compilation",
            file=sys.stderr,
        )
        return 2
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    if "kernels" in args.checks and not run_kernel_checks(args.dtypes):
        return 1
    if "bench" in args.checks:
        bench_decode(args)
    if "e2e" in args.checks and not run_e2e(args):
        return 1
    if "quant" in args.checks and not run_quant_checks(args):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
