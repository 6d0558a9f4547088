"""Online `model.quantization=int8` / `fp8` (weights quantized per output channel in
`process_weights_after_loading`) on the embedded tiny model: greedy tokens agree with the
unquantized model at most positions over 20 prompts (issue 17, Done-when 2)."""

from __future__ import annotations

import pytest
import torch

from vllm_hydra import LLM, SamplingParams

SUBJECTS = ["cat", "dog", "king", "sun", "tree", "river", "house", "girl", "ship", "bird"]
STORIES = ["man", "city", "queen", "fox", "road", "horse", "wolf", "war", "song", "child"]
PROMPTS = [f"The {w} was" for w in SUBJECTS] + [f"Once upon a time a {w}" for w in STORIES]
NUM_TOKENS = 16
# Measured on the tiny model (fp32, on an AVX-512 BF16 CPU): int8 0.959 of positions, fp8 0.928.
MIN_AGREEMENT = {"int8": 0.9, "fp8": 0.85}
WEIGHT_DTYPE = {"null": torch.float32, "int8": torch.int8, "fp8": torch.float8_e4m3fn}


def _greedy(quantization: str) -> list[list[int]]:
    llm = LLM(
        [
            "model.dtype=float32",
            f"model.quantization={quantization}",
            "cache.num_blocks_override=256",
        ]
    )
    params = SamplingParams(temperature=0.0, max_tokens=NUM_TOKENS, ignore_eos=True)
    runner = llm.engine_core.engine_core.model_executor.worker.model_runner
    dtypes = {m.weight.dtype for m in runner.model.modules() if hasattr(m, "weight_scale")}
    assert dtypes == ({WEIGHT_DTYPE[quantization]} if quantization != "null" else set())
    outputs = llm.generate(PROMPTS, params, use_tqdm=False)
    llm.shutdown()
    return [o.outputs[0].token_ids for o in outputs]


@pytest.fixture(scope="module")
def reference() -> list[list[int]]:
    return _greedy("null")


def _agreement(a: list[list[int]], b: list[list[int]]) -> float:
    """Positions equal up to each pair's first difference (after it the contexts differ)."""
    agreed = 0
    for x, y in zip(a, b, strict=True):
        for s, t in zip(x, y, strict=True):
            if s != t:
                break
            agreed += 1
    return agreed / (len(a) * NUM_TOKENS)


@pytest.mark.parametrize("quantization", ["int8", "fp8"])
def test_online_quantization_agrees_with_unquantized(
    reference: list[list[int]], quantization: str
) -> None:
    agreement = _agreement(_greedy(quantization), reference)
    print(f"{quantization}: greedy agreement {agreement:.3f}")
    assert agreement >= MIN_AGREEMENT[quantization]
