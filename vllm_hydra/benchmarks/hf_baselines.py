"""The transformers baselines of throughput mode, on the same token-id prompts as the engine.

- `hf`: `generate()` over left-padded static batches of `bench.hf_batch_size` prompts; each
  batch runs until its longest request's output length, so a batch wastes the steps its
  shorter requests no longer need (what static batching costs; only requested tokens count).
- `hf_cb`: `generate_batch`-style continuous batching (its ContinuousBatchingManager), each
  request with its own max_new_tokens.

Weights: the checkpoint's, or random ones (`from_config`) for `load.format=dummy`; with EOS
ignored, throughput does not depend on the values.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm import tqdm

from vllm_hydra.benchmarks.workloads import BenchRequest
from vllm_hydra.config.load import LoadFormat
from vllm_hydra.config.vllm import VllmConfig

PAD_TOKEN_ID = 0


def load_hf_model(config: VllmConfig) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    assert config.model_dir is not None, "the transformers baselines need config.json on disk"
    dtype = getattr(torch, config.model.dtype.value)
    model_dir = Path(config.model_dir)
    torch.manual_seed(config.model.seed)
    if config.load.format is LoadFormat.dummy or not list(model_dir.glob("*.safetensors")):
        hf_config = AutoConfig.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    return model.to(config.device.type.value).eval()


def _generation_config(max_new_tokens: int, min_new_tokens: int | None = None):
    from transformers import GenerationConfig

    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        do_sample=False,
        pad_token_id=PAD_TOKEN_ID,
        eos_token_id=None,
    )


def _padded_batch(batch: list[BenchRequest], device: torch.device):
    width = max(len(r.prompt_token_ids) for r in batch)
    ids = [[PAD_TOKEN_ID] * (width - len(r.prompt_token_ids)) + r.prompt_token_ids for r in batch]
    lengths = torch.tensor([len(r.prompt_token_ids) for r in batch])
    mask = (torch.arange(width)[None, :] >= (width - lengths)[:, None]).long()
    return torch.tensor(ids, device=device), mask.to(device)


@torch.inference_mode()
def run_hf(
    model: torch.nn.Module, requests: list[BenchRequest], batch_size: int, progress: bool
) -> float:
    """Seconds to generate every request's output in static batches."""
    ids, mask = _padded_batch(requests[:1], model.device)
    model.generate(ids, attention_mask=mask, generation_config=_generation_config(2))  # warm-up
    start = time.perf_counter()
    batches = [requests[i : i + batch_size] for i in range(0, len(requests), batch_size)]
    for batch in tqdm(batches, desc="hf batches", disable=not progress):
        ids, mask = _padded_batch(batch, model.device)
        steps = max(r.output_len for r in batch)
        out = model.generate(
            ids, attention_mask=mask, generation_config=_generation_config(steps, steps)
        )
        assert out.shape[1] == ids.shape[1] + steps
    return time.perf_counter() - start


@torch.inference_mode()
def run_hf_cb(model: torch.nn.Module, requests: list[BenchRequest], progress: bool) -> float:
    """Seconds for transformers' continuous batching to generate every request's output."""
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    max_len = max(r.output_len for r in requests)
    config = _generation_config(max_len)
    config.eos_token_id = -1  # continuous batching wants an int; -1 never matches
    total = sum(len(r.prompt_token_ids) + r.output_len for r in requests)
    cb = ContinuousBatchingConfig(
        page_size=16, num_blocks=total // 16 + len(requests) + 16, max_batch_tokens=2048
    )
    start = time.perf_counter()
    with (
        model.continuous_batching_context_manager(
            generation_config=config, continuous_batching_config=cb, block=True, timeout=5
        ) as manager,
        tqdm(total=len(requests), desc="hf_cb requests", disable=not progress) as bar,
    ):
        for i, r in enumerate(requests):
            manager.add_request(r.prompt_token_ids, request_id=f"r{i}", max_new_tokens=r.output_len)
        done: dict[str, int] = {}
        while len(done) < len(requests):
            result = manager.get_result(timeout=1)
            if result is not None and result.is_finished():
                done[result.request_id] = len(result.generated_tokens)
                bar.update(1)
            elif result is None and not manager.is_running():
                raise RuntimeError("transformers' continuous batching manager stopped early")
    elapsed = time.perf_counter() - start
    expected = {f"r{i}": r.output_len for i, r in enumerate(requests)}
    assert done == expected, "hf_cb generated other lengths than requested"
    return elapsed
