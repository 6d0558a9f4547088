"""Hand-packed AWQ, GPTQ and compressed-tensors checkpoints: the engine's greedy tokens equal
transformers' on the dequantized weights saved as an ordinary checkpoint, at tp=1 and tp=2;
formats and options the engine cannot run are refused by the config stage."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.model_executor.quantization.quant_checkpoints import write_quantized_pair
from vllm_hydra import LLM, SamplingParams
from vllm_hydra.config import ConfigError, compose_config, create_vllm_config

NUM_NEW_TOKENS = 16
ENGINE = ("model.dtype=float32", "device=cpu", "model.max_model_len=128",
          "cache.num_blocks_override=64")  # fmt: skip
CASES = [("awq", 128, 1), ("awq", -1, 2), ("gptq", 128, 2), ("gptq", -1, 1),
         ("ct-w4a16", 128, 2), ("ct-w8a16", -1, 1), ("ct-fp8", -1, 2)]  # fmt: skip


def _prompts() -> list[list[int]]:
    gen = torch.Generator().manual_seed(5)
    return [torch.randint(3, 4000, (n,), generator=gen).tolist() for n in (5, 17, 30)]


def _hf_greedy(path: Path, prompts: list[list[int]]) -> list[list[int]]:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    outs = []
    for p in prompts:
        out = model.generate(torch.tensor([p]), max_new_tokens=NUM_NEW_TOKENS, do_sample=False,
                             eos_token_id=-1, pad_token_id=0)  # fmt: skip
        outs.append(out[0, len(p) :].tolist())
    return outs


@pytest.mark.parametrize(("fmt", "group_size", "tp"), CASES)
def test_greedy_tokens_equal_transformers_on_dequantized(
    tmp_path: Path, fmt: str, group_size: int, tp: int
) -> None:
    quant, ref = write_quantized_pair(fmt, group_size, tmp_path)
    prompts = _prompts()
    expected = _hf_greedy(ref, prompts)
    assert len({tuple(t) for t in expected}) == len(expected)  # the reference varies
    llm = LLM([f"model.path={quant}", *ENGINE, f"parallel.tp={tp}"])
    try:
        params = SamplingParams(temperature=0.0, max_tokens=NUM_NEW_TOKENS, ignore_eos=True)
        outputs = llm.generate(prompts, params, use_tqdm=False)
    finally:
        llm.engine_core.shutdown()
    assert [list(o.outputs[0].token_ids) for o in outputs] == expected


def _config_with(tmp_path: Path, qc: dict | None, *overrides: str) -> None:
    quant, _ = write_quantized_pair("gptq", 128, tmp_path)
    config = json.loads((quant / "config.json").read_text())
    if qc is None:
        config.pop("quantization_config")
    else:
        config["quantization_config"] |= qc
    (quant / "config.json").write_text(json.dumps(config))
    create_vllm_config(compose_config([f"model.path={quant}", *ENGINE, *overrides]))


@pytest.mark.parametrize(
    ("change", "overrides", "message"),
    [
        ({"quant_method": "bitsandbytes"}, (), "quant_method='bitsandbytes'"),
        ({"desc_act": True}, (), "desc_act=true"),
        ({"group_size": 48}, (), "group_size=48"),
        ({"bits": 3}, (), "bits=3"),
        ({}, ("model.quantization=awq",), "model.quantization=awq needs"),
        ({}, ("model.quantization=fp8",), "already quantized"),
        (None, ("model.quantization=gptq",), "declares none"),
    ],
)
def test_refusals_before_any_weight_loads(
    tmp_path: Path, change: dict | None, overrides: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        _config_with(tmp_path, change, *overrides)


def test_group_that_splits_under_tp_is_refused(tmp_path: Path) -> None:
    # o_proj's input (256) over tp=4 leaves 64 per rank: half a group of 128.
    with pytest.raises(ConfigError, match="group_size=128, which does not divide"):
        _config_with(tmp_path, {}, "parallel.tp=4")


def test_fp8_without_fp8_gemms_falls_back_to_weight_only_with_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A device without fp8 GEMMs (here the CPU) keeps activations in the model dtype and says
    so once; the layers then dequantize the e4m3 weights on the fly."""
    from vllm_hydra.model_executor.layers.quantization.fp8 import Fp8Config, Fp8LinearMethod

    logger = "vllm_hydra.model_executor.layers.quantization.fp8"
    with caplog.at_level(logging.INFO, logger=logger):
        config = Fp8Config(torch.device("cpu"))
    assert "has no fp8 GEMM" in caplog.text and "(weight-only)" in caplog.text
    method = config.get_linear_method()
    assert isinstance(method, Fp8LinearMethod) and not method.activation_fp8
