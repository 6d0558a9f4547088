"""`LoRAModel`: one adapter's weights on the host, checked against the base model's shapes.

PEFT stores, per targeted module, `lora_A` [r, in] and `lora_B` [out, r] under names like
`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`. The scaling (alpha / r, or
alpha / sqrt(r) with rsLoRA) is folded into B once here, so a step computes x @ A^T @ B^T.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from vllm_hydra.config.model_arch import ModelArchConfig
from vllm_hydra.lora.peft_helper import (
    SUPPORTED_TARGET_MODULES,
    WEIGHTS_FILE,
    LoRAAdapterError,
    PEFTHelper,
)

_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>model\.layers\.(?P<layer>\d+)\.(?:self_attn|mlp)\."
    r"(?P<name>\w+))\.lora_(?P<ab>[AB])(?:\.default)?\.weight$"
)


@dataclass(frozen=True)
class LoRALayerWeights:
    """One module's adapter: lora_a [r, in], lora_b [out, r] with the scaling folded in."""

    lora_a: torch.Tensor
    lora_b: torch.Tensor

    @property
    def rank(self) -> int:
        return self.lora_a.shape[0]


def module_shapes(arch: ModelArchConfig) -> dict[str, tuple[int, int]]:
    """Each supported target module's (in_features, out_features) in the full model."""
    h, d, inter = arch.hidden_size, arch.head_dim, arch.intermediate_size
    q, kv = arch.num_attention_heads * d, arch.num_key_value_heads * d
    return {
        "q_proj": (h, q),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (q, h),
        "gate_proj": (h, inter),
        "up_proj": (h, inter),
        "down_proj": (inter, h),
    }


@dataclass
class LoRAModel:
    lora_int_id: int
    rank: int
    # Hugging Face module name ("model.layers.0.self_attn.q_proj") -> its weights.
    loras: dict[str, LoRALayerWeights]

    @classmethod
    def from_local_checkpoint(
        cls,
        lora_path: str | Path,
        lora_int_id: int,
        arch: ModelArchConfig,
        max_lora_rank: int,
        dtype: torch.dtype = torch.float32,
    ) -> LoRAModel:
        """Read and check a PEFT adapter directory; raises LoRAAdapterError."""
        path = Path(lora_path).expanduser()
        helper = PEFTHelper.from_local_dir(path, max_lora_rank)
        tensors = load_file(str(path / WEIGHTS_FILE))
        pairs = _pair_tensors(path, tensors, arch.num_hidden_layers)
        shapes = module_shapes(arch)
        loras = {}
        for module, (lora_a, lora_b) in pairs.items():
            _check_shapes(path, module, lora_a, lora_b, shapes[module.rsplit(".", 1)[1]])
            _check_rank(path, module, lora_a, helper.r)
            loras[module] = LoRALayerWeights(
                lora_a.to(dtype).contiguous(), (lora_b * helper.scaling).to(dtype).contiguous()
            )
        return cls(lora_int_id, helper.r, loras)


def _pair_tensors(
    path: Path, tensors: dict[str, torch.Tensor], num_layers: int
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """module -> (A, B), refusing any tensor that is not a supported module's LoRA A or B."""
    found: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = _KEY.match(key)
        if match is None or match["name"] not in SUPPORTED_TARGET_MODULES:
            raise LoRAAdapterError(
                "unsupported_target_modules",
                f"The adapter at {path} holds {key}; LoRA layers exist only for "
                f"{list(SUPPORTED_TARGET_MODULES)} of the decoder layers.",
            )
        if int(match["layer"]) >= num_layers:
            raise LoRAAdapterError(
                "incompatible",
                f"The adapter at {path} holds {key}, but the model has {num_layers} layers.",
            )
        found.setdefault(match["module"], {})[match["ab"]] = tensor
    if not found:
        raise LoRAAdapterError("missing_files", f"The adapter at {path} holds no LoRA weights.")
    pairs = {}
    for module, ab in found.items():
        if set(ab) != {"A", "B"}:
            raise LoRAAdapterError(
                "incompatible", f"The adapter at {path} has lora_A or lora_B of {module} only."
            )
        pairs[module] = (ab["A"], ab["B"])
    return pairs


def _check_shapes(
    path: Path,
    module: str,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    in_out: tuple[int, int],
) -> None:
    in_features, out_features = in_out
    if lora_a.shape[1] != in_features or lora_b.shape[0] != out_features:
        raise LoRAAdapterError(
            "incompatible",
            f"The adapter at {path} does not fit this model: {module} has lora_A "
            f"{list(lora_a.shape)} and lora_B {list(lora_b.shape)}, the model's module is "
            f"{in_features} -> {out_features}.",
        )


def _check_rank(path: Path, module: str, lora_a: torch.Tensor, r: int) -> None:
    if lora_a.shape[0] != r:
        raise LoRAAdapterError(
            "unsupported_feature",
            f"The adapter at {path} has rank {lora_a.shape[0]} in {module} but r={r} in its "
            f"config (per-module ranks are not served).",
        )
