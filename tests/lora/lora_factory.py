"""Tiny PEFT adapters made with `peft` (random, non-zero A and B) and their transformers + peft
greedy references, for the LoRA equivalence tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, GenerationConfig

ALL_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class AdapterSpec:
    r: int = 8
    lora_alpha: float = 16.0
    target_modules: tuple[str, ...] = ALL_TARGETS
    use_rslora: bool = False
    seed: int = 0


def write_peft_adapter(base: Path, path: Path, spec: AdapterSpec) -> Path:
    """Save a random LoRA adapter of `base` (init_lora_weights=False: A and B both random)."""
    from peft import LoraConfig, get_peft_model

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.lora_alpha,
        target_modules=list(spec.target_modules),
        use_rslora=spec.use_rslora,
        init_lora_weights=False,
        lora_dropout=0.0,
    )
    torch.manual_seed(spec.seed)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(path)
    return path


def edit_adapter_config(path: Path, **changes: object) -> Path:
    config_file = path / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config.update(changes)
    config_file.write_text(json.dumps(config))
    return path


def hf_greedy(
    base: Path, adapter: Path | None, prompts: list[list[int]], num_new_tokens: int
) -> list[list[int]]:
    """transformers (+ peft for `adapter`) greedy tokens, fp32, EOS an ordinary token."""
    from peft import PeftModel

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    config = GenerationConfig(
        max_new_tokens=num_new_tokens, do_sample=False, eos_token_id=-1, pad_token_id=0
    )
    outputs = []
    with torch.inference_mode():
        for prompt in prompts:
            out = model.generate(input_ids=torch.tensor([prompt]), generation_config=config)
            outputs.append(out[0, len(prompt) :].tolist())
    return outputs
