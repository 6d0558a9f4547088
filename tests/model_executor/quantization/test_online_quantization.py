"""Online `model.quantization=int8` / `fp8` (weights quantized per output channel in
`process_weights_after_loading`) on the embedded tiny model: the logits of every prompt position
stay within a stated tolerance of the unquantized model's, and greedy tokens agree with it at
most positions, over 20 prompts (issue 17, Done-when 2)."""

from __future__ import annotations

import pytest
import torch

from vllm_hydra import LLM, SamplingParams
from vllm_hydra.attention import AttentionMetadata
from vllm_hydra.worker.model_runner import ModelRunner

SUBJECTS = ["cat", "dog", "king", "sun", "tree", "river", "house", "girl", "ship", "bird"]
STORIES = ["man", "city", "queen", "fox", "road", "horse", "wolf", "war", "song", "child"]
PROMPTS = [f"The {w} was" for w in SUBJECTS] + [f"Once upon a time a {w}" for w in STORIES]
NUM_TOKENS = 16
# Measured on the tiny model (fp32, on a 2-core AMD EPYC with AVX-512 BF16), after its copy
# fine-tuning (scripts/finetune_tiny_copy.py): greedy agreement int8 0.975 of positions, fp8
# 0.875 (before it: 0.959, 0.928).
MIN_AGREEMENT = {"int8": 0.9, "fp8": 0.85}
# Logits of every prompt position of the 20 prompts against the unquantized model's (same
# CPU): max |error| int8 0.219, fp8 1.316; that over the reference's largest |logit| (about
# 16.2), int8 0.0135, fp8 0.0814. The tolerances leave about 1.5x room. Before the copy
# fine-tuning the maxima were 0.082 and 0.320 (medians over positions 0.055 and 0.176, now
# 0.087 and 0.305): the copying model's sharper attention amplifies the weight error at a few
# positions.
MAX_ABS_ERROR = {"int8": 0.33, "fp8": 2.0}
MAX_REL_ERROR = {"int8": 0.02, "fp8": 0.12}
WEIGHT_DTYPE = {"null": torch.float32, "int8": torch.int8, "fp8": torch.float8_e4m3fn}


class Run:
    """One engine's greedy tokens and its prompt logits for PROMPTS."""

    def __init__(self, quantization: str) -> None:
        llm = LLM(
            [
                "model.dtype=float32",
                f"model.quantization={quantization}",
                "cache.num_blocks_override=256",
            ]
        )
        try:
            runner = llm.engine_core.engine_core.model_executor.worker.model_runner
            dtypes = {m.weight.dtype for m in runner.model.modules() if hasattr(m, "weight_scale")}
            assert dtypes == ({WEIGHT_DTYPE[quantization]} if quantization != "null" else set())
            params = SamplingParams(temperature=0.0, max_tokens=NUM_TOKENS, ignore_eos=True)
            outputs = llm.generate(PROMPTS, params, use_tqdm=False)
            self.tokens = [o.outputs[0].token_ids for o in outputs]
            self.logits = [_prompt_logits(runner, llm.tokenizer.encode(p)) for p in PROMPTS]
        finally:
            llm.shutdown()


@torch.inference_mode()
def _prompt_logits(runner: ModelRunner, ids: list[int]) -> torch.Tensor:
    """The model's logits [len(ids), vocab] for one prompt, prefilled into free KV blocks."""
    n = len(ids)
    blocks = list(range(1, 1 + -(-n // runner.block_size)))
    common = AttentionMetadata.build([n], [n], [blocks], runner.block_size)
    meta = runner.attn_metadata_builder.build(common)
    hidden = runner.model(torch.tensor(ids), torch.arange(n), runner.kv_caches, meta)
    return runner.model.compute_logits(hidden)


@pytest.fixture(scope="module")
def reference() -> Run:
    return Run("null")


@pytest.fixture(scope="module", params=["int8", "fp8"])
def quantized(request: pytest.FixtureRequest) -> tuple[str, Run]:
    return request.param, Run(request.param)


def _agreement(a: list[list[int]], b: list[list[int]]) -> float:
    """Positions equal up to each pair's first difference (after it the contexts differ)."""
    agreed = 0
    for x, y in zip(a, b, strict=True):
        for s, t in zip(x, y, strict=True):
            if s != t:
                break
            agreed += 1
    return agreed / (len(a) * NUM_TOKENS)


def test_online_quantization_agrees_with_unquantized(
    reference: Run, quantized: tuple[str, Run]
) -> None:
    quantization, run = quantized
    agreement = _agreement(run.tokens, reference.tokens)
    print(f"{quantization}: greedy agreement {agreement:.3f}")
    assert agreement >= MIN_AGREEMENT[quantization]


def test_online_quantization_logits_within_tolerance(
    reference: Run, quantized: tuple[str, Run]
) -> None:
    quantization, run = quantized
    ref, got = torch.cat(reference.logits), torch.cat(run.logits)
    assert ref.shape == got.shape and ref.shape[0] > 100
    abs_error = (got - ref).abs().max().item()
    rel_error = abs_error / ref.abs().max().item()
    print(f"{quantization}: logits max abs error {abs_error:.3f}, relative {rel_error:.4f}")
    assert abs_error <= MAX_ABS_ERROR[quantization]
    assert rel_error <= MAX_REL_ERROR[quantization]
    assert abs_error > 0  # the weights really are quantized
