"""`bench.lora_adapters=N`: N random PEFT adapters of the benchmarked model (any checkpoint,
`load=dummy` included), written where the job writes its results, and one per request in turn.

Each adapter targets every supported module at rank `lora.max_lora_rank`, so a step pays the
whole LoRA cost; the weights are small random values (the workload ignores EOS, so what the
model says does not matter, only what it costs).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.lora.lora_model import module_shapes
from vllm_hydra.lora.peft_helper import CONFIG_FILE, SUPPORTED_TARGET_MODULES, WEIGHTS_FILE
from vllm_hydra.lora.request import LoRARequest

ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


def write_random_adapter(config: VllmConfig, path: Path, seed: int) -> Path:
    arch, rank = config.arch, config.lora.max_lora_rank
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(arch.num_hidden_layers):
        for name, (in_features, out_features) in module_shapes(arch).items():
            parent = "self_attn" if name in ATTENTION_MODULES else "mlp"
            key = f"base_model.model.model.layers.{layer}.{parent}.{name}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(rank, in_features, generator=gen) * 0.01
            tensors[f"{key}.lora_B.weight"] = torch.randn(out_features, rank, generator=gen) * 0.01
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / WEIGHTS_FILE))
    adapter_config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": 2 * rank,
        "target_modules": list(SUPPORTED_TARGET_MODULES),
        "bias": "none",
    }
    (path / CONFIG_FILE).write_text(json.dumps(adapter_config, indent=1))
    return path


def write_random_adapters(config: VllmConfig, count: int, root: Path) -> list[LoRARequest]:
    """`count` adapters under root/adapters/, as the requests that name them."""
    return [
        LoRARequest(
            f"bench-lora-{i}",
            i + 1,
            str(write_random_adapter(config, root / "adapters" / f"lora-{i}", i)),
        )
        for i in range(count)
    ]


def spread(lora_requests: list[LoRARequest], num_requests: int) -> list[LoRARequest | None]:
    """Request k runs with adapter k mod N (all with the base model when there are none)."""
    if not lora_requests:
        return [None] * num_requests
    return [lora_requests[k % len(lora_requests)] for k in range(num_requests)]
