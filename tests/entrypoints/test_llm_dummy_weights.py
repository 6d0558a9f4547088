"""`load.format=dummy` runs an architecture from its config.json alone: random weights, real
shapes. Llama 3 8B in bf16 (16 GB) is opt-in (`--run-slow`); a small Qwen3 runs always."""

from __future__ import annotations

import pytest

from vllm_hydra import LLM, SamplingParams

GREEDY = SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True)


def test_dummy_weights_for_a_checkpoint_without_weights(write_checkpoint) -> None:
    ckpt = write_checkpoint(weights=False, num_hidden_layers=2)
    llm = LLM(
        [f"model.path={ckpt}", "load.format=dummy", "model.skip_tokenizer_init=true", "device=cpu"]
    )
    (output,) = llm.generate([[1, 5, 9, 13]], GREEDY, use_tqdm=False)
    assert len(output.outputs[0].token_ids) == 4
    assert output.outputs[0].text == ""  # no tokenizer: token ids only


@pytest.mark.slow
def test_llama3_8b_dummy_runs_in_bf16_on_cpu() -> None:
    llm = LLM(
        [
            "model=llama3",
            "load.format=dummy",
            "model.skip_tokenizer_init=true",
            "device=cpu",
            "model.dtype=bfloat16",
            "model.max_model_len=512",
            "cache.kv_cache_memory_gib=1",
            "scheduler.max_num_seqs=4",
        ]
    )
    assert llm.config.model.dtype.value == "bfloat16"
    outputs = llm.generate([[128000, 791, 6864, 374], [128000, 40, 1093]], GREEDY, use_tqdm=False)
    assert all(len(o.outputs[0].token_ids) == 4 for o in outputs)
    assert all(0 <= t < 128256 for o in outputs for t in o.outputs[0].token_ids)
