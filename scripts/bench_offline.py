"""Offline throughput: `LLM.generate` against transformers on the same prompts, in one run.

    python scripts/bench_offline.py                      # the embedded tiny model, 64 prompts
    python scripts/bench_offline.py --overrides model.path=/models/x --output-len 64

Backends: `engine` (this project's LLM), `hf` (transformers `generate`, left-padded static
batches) and `hf_cb` (transformers `generate_batch`, its continuous batching). Every request
asks for exactly `--output-len` tokens (EOS ignored), so the three produce the same token count.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from transformers import AutoModelForCausalLM, GenerationConfig
from transformers.generation.configuration_utils import ContinuousBatchingConfig

from vllm_hydra import LLM, SamplingParams
from vllm_hydra.config import compose_config


def make_prompts(num: int, low: int, high: int, vocab: int, seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high + 1, (num,), generator=gen).tolist()
    return [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in lengths]


def run_engine(overrides: list[str], prompts: list[list[int]], output_len: int) -> float:
    llm = LLM(overrides)
    params = SamplingParams(temperature=0.0, max_tokens=output_len, ignore_eos=True)
    llm.generate(prompts[:2], SamplingParams(max_tokens=2), use_tqdm=False)  # warm-up
    start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    assert all(len(o.outputs[0].token_ids) == output_len for o in outputs)
    return elapsed


def _hf_model(model_dir: str, dtype: torch.dtype) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()


def run_hf(
    model_dir: str,
    dtype: torch.dtype,
    prompts: list[list[int]],
    output_len: int,
    batch_size: int,
    pad_id: int,
) -> float:
    model = _hf_model(model_dir, dtype)
    config = GenerationConfig(
        max_new_tokens=output_len,
        min_new_tokens=output_len,
        do_sample=False,
        pad_token_id=pad_id,
        eos_token_id=None,
    )
    start = time.perf_counter()
    for i in range(0, len(prompts), batch_size):
        batch = prompts[i : i + batch_size]
        width = max(len(p) for p in batch)
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in batch])
        lengths = torch.tensor([len(p) for p in batch])
        mask = (torch.arange(width)[None, :] >= (width - lengths)[:, None]).long()
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=mask, generation_config=config)
        assert out.shape[1] == width + output_len
    return time.perf_counter() - start


def run_hf_cb(
    model_dir: str, dtype: torch.dtype, prompts: list[list[int]], output_len: int, pad_id: int
) -> float:
    model = _hf_model(model_dir, dtype)
    config = GenerationConfig(
        max_new_tokens=output_len, do_sample=False, eos_token_id=-1, pad_token_id=pad_id
    )
    total = sum(len(p) + output_len for p in prompts)
    cb = ContinuousBatchingConfig(
        page_size=16, num_blocks=total // 16 + len(prompts) + 16, max_batch_tokens=2048
    )
    start = time.perf_counter()
    with torch.inference_mode():
        results = model.generate_batch(
            inputs=prompts, generation_config=config, continuous_batching_config=cb
        )
    elapsed = time.perf_counter() - start
    assert all(len(r.generated_tokens) == output_len for r in results.values())
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--overrides", nargs="*", default=[], help="Hydra overrides of serve.yaml")
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--input-len", type=int, nargs=2, default=(32, 512), metavar=("MIN", "MAX"))
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--hf-batch-size", type=int, default=64)
    parser.add_argument("--backends", nargs="*", default=["engine", "hf", "hf_cb"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    overrides = ["device=cpu", *args.overrides]
    config = compose_config(overrides)
    dtype = getattr(torch, config.model.dtype.value)
    prompts = make_prompts(args.num_prompts, *args.input_len, config.arch.vocab_size, args.seed)
    model_dir = config.model_dir or ""
    runners: dict[str, Callable[[], float]] = {
        "engine": lambda: run_engine(overrides, prompts, args.output_len),
        "hf": lambda: run_hf(model_dir, dtype, prompts, args.output_len, args.hf_batch_size, 0),
        "hf_cb": lambda: run_hf_cb(model_dir, dtype, prompts, args.output_len, 0),
    }
    tokens = args.output_len * len(prompts)
    print(
        f"model={config.model.name} dtype={config.model.dtype.value} prompts={len(prompts)} "
        f"input={sum(map(len, prompts))} tokens output={tokens} tokens "
        f"threads={torch.get_num_threads()}"
    )
    rates = {}
    for name in args.backends:
        seconds = runners[name]()
        rates[name] = tokens / seconds
        print(f"{name:>7}: {seconds:8.2f} s  {rates[name]:9.1f} output tok/s", flush=True)
    if "engine" in rates:
        for name, rate in rates.items():
            if name != "engine":
                print(f"engine / {name}: {rates['engine'] / rate:.2f}x")


if __name__ == "__main__":
    main()
