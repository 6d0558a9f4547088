"""`make bench`: run the benchmark campaigns and rewrite docs/benchmarks.md from their summaries.

    python -m vllm_hydra.benchmarks.report                 # every campaign (run on an idle machine)
    python -m vllm_hydra.benchmarks.report --only tiny-throughput --doc /tmp/benchmarks.md

Each campaign is one `scripts/bench.py -m ...` sweep into outputs/bench/report/<name>/; the doc
shows its command and its summary table (summary.md), so every figure can be re-measured.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from vllm_hydra.benchmarks.results import RESULTS_FILE, read_result
from vllm_hydra.benchmarks.summary import markdown_summary, write_summary

REPO = Path(__file__).resolve().parents[2]
REPORT_DIR = REPO / "outputs" / "bench" / "report"
DOC = REPO / "docs" / "benchmarks.md"
# Hand-written notes (profiles, what was changed and why), appended to the generated doc.
NOTES = REPO / "docs" / "benchmarks-notes.md"


@dataclass(frozen=True)
class Campaign:
    name: str
    title: str
    overrides: tuple[str, ...]
    note: str = ""

    def command(self, extra: tuple[str, ...] = ()) -> str:
        return "python scripts/bench.py -m " + " ".join((*self.overrides, *extra))


CAMPAIGNS = (
    Campaign(
        "tiny-throughput",
        "Offline throughput against transformers, tiny model",
        ("bench.mode=throughput", "bench.backend=engine,hf,hf_cb", "model=tiny"),
        "The random workload (64 requests, 32-512 prompt tokens, 32-256 output tokens, EOS "
        "ignored); `hf` runs padded batches of 16 (`bench.hf_batch_size`).",
    ),
    Campaign(
        "bench-125m-throughput",
        "Offline throughput against transformers, bench-125m (random weights, model.dtype=auto)",
        (
            "bench.mode=throughput",
            "bench.backend=engine,hf,hf_cb",
            "model=bench-125m",
            "load=dummy",
        ),
        "The same random workload on a ~125M-parameter Llama (hidden 768, 12 layers, 12 heads, "
        "4 KV heads); the target is an engine_speedup of at least 3 over both baselines. "
        "`roofline_s` is the least time this machine could run the workload in (each forward "
        "step's FLOPs over the GEMM peak or its weight and K/V bytes over the read bandwidth, "
        "whichever is larger, both measured by the run, vllm_hydra/benchmarks/roofline.py); "
        "`roofline_fraction` is it over the measured duration.",
    ),
    Campaign(
        "tiny-serve",
        "Serving: concurrency against max_num_seqs, tiny model",
        ("bench.mode=serve", "scheduler.max_num_seqs=4,16", "bench.concurrency=1,8"),
        "Each job starts its own `serve.py` and drives it over HTTP with streamed completions.",
    ),
    Campaign(
        "tiny-prefix",
        "Prefix caching on the shared-prefix workload, tiny model",
        ("bench=prefix", "cache.enable_prefix_caching=true,false"),
    ),
    Campaign(
        "tiny-compile",
        "torch.compile against eager, tiny model",
        ("bench.mode=throughput", "compilation=none,torch_compile"),
        "The random workload; compiling happens at engine start-up, before the timed part.",
    ),
    Campaign(
        "tiny-structured",
        "Structured outputs: every request held to a JSON schema against none, tiny model",
        ("bench.mode=throughput", "bench.workload.structured_output=none,json"),
        "The random workload; with `json` every request carries one JSON schema that cannot "
        "close before the request's output length (benchmarks/workloads.py), so both jobs "
        "generate the same tokens and the difference is guided decoding's cost (the grammar "
        "is compiled in the untimed warm-up).",
    ),
    Campaign(
        "tiny-structured-ttft",
        "Structured outputs: time to first token with a cold grammar, tiny model",
        (
            "bench.mode=serve",
            "bench.concurrency=1",
            "bench.workload.num_requests=8",
            "bench.workload.structured_output=none,json",
        ),
        "Each job starts a fresh `serve.py` (its warm-up request is free text), so the first "
        "structured request meets a cold grammar: the backend reads the vocabulary and compiles "
        "the schema while the request waits. `ttft_first_ms` is that first request's TTFT; "
        "`ttft_p50_ms` is the warm figure (the compiled grammar is cached).",
    ),
    Campaign(
        "tiny-lora",
        "LoRA: four adapters spread over the requests against the base model, tiny model",
        (
            "bench.mode=throughput",
            "lora=enabled",
            "lora.max_loras=4",
            "bench.lora_adapters=0,4",
        ),
        "The random workload; with `bench.lora_adapters=4` request k runs random adapter k mod "
        "4 (rank 16 on every projection), so every step mixes four adapters; with 0 every "
        "request runs the base model (the LoRA layers are there, but no step has an adapter).",
    ),
    Campaign(
        "bench-125m-parallel",
        "Tensor and data parallelism through the server, bench-125m (random weights)",
        (
            "bench.mode=serve",
            "model=bench-125m",
            "load=dummy",
            "cache.kv_cache_memory_gib=1",
            "bench.concurrency=64",
            "parallel.tp=1,2",
            "parallel.dp=1,2",
        ),
        "Every job shares the machine's cores between its tp x dp ranks (torch threads per "
        "rank = cores / world size), so on 2 cores parallelism adds communication, not compute.",
    ),
    Campaign(
        "bench-125m-quant-throughput",
        "Online quantization, throughput, bench-125m (random weights)",
        (
            "bench.mode=throughput",
            "model=bench-125m",
            "load=dummy",
            "model.quantization=null,int8,fp8",
        ),
        "Weight-only int8 (torch's int8 GEMM up to 16 rows, the dequantized weight in a bf16 "
        "GEMM past that) and fp8 (dequantized on the fly: the CPU has no fp8 GEMM) against the "
        "bf16 weights; see the notes below for which wins where and why.",
    ),
    Campaign(
        "bench-125m-quant-latency",
        "Online quantization, latency at batch 1 and 64, bench-125m (random weights)",
        (
            "bench.mode=latency",
            "bench.batch_size=1,64",
            "model=bench-125m",
            "load=dummy",
            "model.quantization=null,int8,fp8",
        ),
    ),
    Campaign(
        "tiny-spec-latency",
        "Speculative decoding (ngram) at batch 1, tiny model",
        ("bench=repeat", "speculative=none,ngram", "bench.num_iters=5"),
        "`bench=repeat`: 16 prompts of one random span repeated 3 times (48-96 tokens), 64 "
        "output tokens each, EOS ignored; latency mode times the first request alone.",
    ),
    Campaign(
        "bench-125m-spec-latency",
        "Speculative decoding (ngram) at batch 1, bench-125m (random weights)",
        (
            "bench=repeat",
            "model=bench-125m",
            "load=dummy",
            "speculative=none,ngram",
            "bench.num_iters=5",
        ),
        "Random weights do not copy their prompt, and their greedy output repeats no n-gram "
        "of its context: prompt lookup finds nothing to propose.",
    ),
    Campaign(
        "tiny-spec-serve",
        "Speculative decoding (ngram) through the server at concurrency 1 and 8, tiny model",
        (
            "bench=repeat",
            "bench.mode=serve",
            "bench.concurrency=1,8",
            "bench.workload.num_requests=16",
            "bench.workload.output_len_min=32",
            "bench.workload.output_len_max=32",
            "speculative=none,ngram",
        ),
    ),
)


def run_campaign(campaign: Campaign, extra: tuple[str, ...]) -> Path:
    sweep_dir = REPORT_DIR / campaign.name
    cmd = [
        sys.executable,
        str(REPO / "scripts" / "bench.py"),
        "-m",
        *campaign.overrides,
        *extra,
        f"hydra.sweep.dir={sweep_dir}",
    ]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)
    return sweep_dir


def _environment(sweep_dirs: list[Path]) -> str:
    for sweep_dir in sweep_dirs:
        for path in sorted(sweep_dir.glob(f"*/{RESULTS_FILE}")):
            env = read_result(path)["env"]
            return ", ".join(f"{k} {v}" for k, v in env.items())
    return "unknown"


def render(campaigns: list[Campaign], sweep_dirs: list[Path], extra: tuple[str, ...]) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Benchmarks\n",
        f"Regenerated by `make bench` ({stamp}); environment: {_environment(sweep_dirs)}.\n",
        "Every table below is the `summary.md` of one `scripts/bench.py` sweep; run the "
        "command shown to measure it again (add `hydra.sweep.dir=...` to choose where). "
        "Figures from a shared machine are not comparable with each other.\n",
    ]
    for campaign, sweep_dir in zip(campaigns, sweep_dirs, strict=True):
        rows = write_summary(sweep_dir)
        parts.append(f"## {campaign.title}\n\n```bash\n{campaign.command(extra)}\n```\n")
        if campaign.note:
            parts.append(campaign.note + "\n")
        parts.append(markdown_summary(rows) if rows else "(not measured yet: run `make bench`)\n")
    if NOTES.exists():
        parts.append(NOTES.read_text())
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="campaign names (default: all)")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--overrides", nargs="*", default=[], help="added to every campaign")
    parser.add_argument(
        "--no-run", action="store_true", help="re-render from the existing sweep dirs"
    )
    args = parser.parse_args()
    campaigns = [c for c in CAMPAIGNS if not args.only or c.name in args.only]
    extra = tuple(args.overrides)
    sweep_dirs = [REPORT_DIR / c.name if args.no_run else run_campaign(c, extra) for c in campaigns]
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(render(campaigns, sweep_dirs, extra))
    print(f"wrote {args.doc}")


if __name__ == "__main__":
    main()
