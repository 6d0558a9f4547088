"""Micro-benchmark of the CPU paged decode-attention kernel (csrc/cpu/attention.c) on one layer's
shape, against an fp32 reference, optionally beside another checkout's kernel in the same run.

    python scripts/bench_attention_kernel.py                      # bench-125m at batch 64
    python scripts/bench_attention_kernel.py --baseline /work/main/vllm_hydra/csrc/cpu
    python scripts/bench_attention_kernel.py --batch 2 --context 4000 --head-size 128 --kv-heads 1

Each sequence's blocks are scattered at random over the cache. The kernels are timed in
alternating rounds (so load on a shared machine hits both alike), on one cache or, with
--layers 12, on a decode step's twelve in turn (read from memory, not the LLC); the table gives
the fastest round's ms per call, the median round's, the K/V read rate and FLOP rate of the
fastest, and the largest error against attention computed in fp32 by torch.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch

from vllm_hydra import _custom_ops as ops
from vllm_hydra.cpu_library import build_library


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batch", type=int, default=64, help="sequences (one query token each)")
    p.add_argument("--context", type=int, default=261, help="tokens of context per sequence")
    p.add_argument("--heads", type=int, default=12, help="query heads")
    p.add_argument("--kv-heads", type=int, default=4, help="KV heads")
    p.add_argument("--head-size", type=int, default=64)
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--window", type=int, default=0, help="sliding window (0: none)")
    p.add_argument("--dtype", nargs="+", default=["bfloat16", "float32"])
    p.add_argument("--calls", type=int, default=50, help="calls per timed round")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument(
        "--layers",
        type=int,
        default=1,
        help="caches called in turn (12: a decode step's, which no LLC holds; 1: one layer's)",
    )
    p.add_argument("--baseline", type=Path, help="another checkout's csrc/cpu to time beside")
    return p.parse_args()


def make_inputs(args: argparse.Namespace, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    per_seq = -(-args.context // args.block_size)
    num_blocks = args.batch * per_seq + 1
    shape = (2, num_blocks, args.block_size, args.kv_heads, args.head_size)
    perm = torch.randperm(num_blocks - 1, generator=gen)[: args.batch * per_seq] + 1
    rows = torch.arange(args.batch, dtype=torch.int32)
    return {
        "kv_cache": torch.randn(shape, generator=gen).to(dtype),
        "block_table": perm.view(args.batch, per_seq).to(torch.int32).contiguous(),
        "query": torch.randn(args.batch, args.heads, args.head_size, generator=gen).to(dtype),
        "tokens": rows,
        "reqs": rows.clone(),
        "seq_lens": torch.full((args.batch,), args.context, dtype=torch.int32),
    }


def reference(args: argparse.Namespace, x: dict[str, torch.Tensor]) -> torch.Tensor:
    """Attention in fp32 over each sequence's gathered K/V."""
    b, ctx, group = args.batch, args.context, args.heads // args.kv_heads
    k, v = (
        x["kv_cache"][i][x["block_table"].long()].reshape(b, -1, args.kv_heads, args.head_size)
        for i in (0, 1)
    )
    start = ctx - args.window if 0 < args.window < ctx else 0
    k = k[:, start:ctx].float().repeat_interleave(group, 2)
    v = v[:, start:ctx].float().repeat_interleave(group, 2)
    scores = torch.einsum("bhd,bthd->bht", x["query"].float(), k) * args.head_size**-0.5
    return torch.einsum("bht,bthd->bhd", torch.softmax(scores, -1), v)


def kernel_call(
    args: argparse.Namespace, x: dict[str, torch.Tensor], out: torch.Tensor
) -> Callable:
    """One call, on the next of --layers caches (each a copy of x's) in turn."""
    caches = [x["kv_cache"]] + [x["kv_cache"].clone() for _ in range(args.layers - 1)]
    turn = iter(range(1 << 62))

    def call() -> None:
        ops.paged_attention_decode(
            out,
            x["query"],
            caches[next(turn) % len(caches)],
            x["block_table"],
            x["tokens"],
            x["reqs"],
            x["seq_lens"],
            args.head_size**-0.5,
            args.window or None,
        )

    return call


def timed_round(call: Callable, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls


def using(lib: object | None) -> contextlib.AbstractContextManager:
    """Calls go to lib (a baseline's library) instead of this checkout's, while active."""
    if lib is None:
        return contextlib.nullcontext()
    return mock.patch.object(ops, "_lib", lambda: lib)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    libs = {"this checkout": None}
    if args.baseline:
        libs[f"baseline ({args.baseline})"] = ops.bind(build_library(args.baseline))
    span = min(args.context, args.window or args.context)
    kv_bytes_per_elem = 2 * args.batch * span * args.kv_heads * args.head_size
    flops = 4 * args.batch * span * args.heads * args.head_size
    print(f"shape: {vars(args)}, {args.threads} threads")
    print("| dtype | kernel | ms/call (best) | ms/call (median) | K/V GB/s | GFLOP/s | max err |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in args.dtype:
        dtype = getattr(torch, name)
        x = make_inputs(args, dtype)
        expected = reference(args, x)
        times: dict[str, list[float]] = {k: [] for k in libs}
        errors, calls = {}, {}
        out = torch.empty_like(x["query"])
        for label, lib in libs.items():
            calls[label] = kernel_call(args, x, out)
            with using(lib):
                calls[label]()
                errors[label] = (out.float() - expected).abs().max().item()
        for _ in range(args.rounds):
            for label, lib in libs.items():
                with using(lib):
                    times[label].append(timed_round(calls[label], args.calls))
        elem = x["kv_cache"].element_size()
        for label, t in times.items():
            best = min(t)
            print(
                f"| {name} | {label} | {best * 1e3:.3f} | {statistics.median(t) * 1e3:.3f} | "
                f"{kv_bytes_per_elem * elem / best / 1e9:.1f} | {flops / best / 1e9:.1f} | "
                f"{errors[label]:.2e} |"
            )


if __name__ == "__main__":
    main()
