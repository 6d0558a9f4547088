"""Architecture facts read from a checkpoint's config.json, before any weight is read.

Both config.json forms are read: transformers 5 (`dtype`, `rope_parameters`) and the older one
(`torch_dtype`, `rope_theta`, `rope_scaling`). Hub ids that cannot be fetched offline fall back
to the facts committed under `model_archs/`, so validation and dry runs work without a download.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vllm_hydra.config.errors import ConfigError

# Architectures built into the engine (plugins may register more in the model registry).
SUPPORTED_ARCHITECTURES = (
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
)

# RoPE variants the rotary embedding implements (Llama 3.1 uses llama3).
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")

# config.json keys that bound the context length; the smallest one present wins (as in vLLM).
MAX_LEN_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "model_max_length",
    "max_target_positions",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
)
FALLBACK_MAX_LEN = 2048

KNOWN_ARCHS_DIR = Path(__file__).parent / "model_archs"

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ModelArchConfig:
    """The hyperparameters the config stage, the memory plan and the model builder need."""

    architecture: str
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    max_len_key: str  # which config.json key bounds max_model_len
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    rms_norm_eps: float
    tie_word_embeddings: bool
    attention_bias: bool  # q/k/v projections carry a bias (Qwen2)
    qk_norm: bool  # RMSNorm on q and k per head (Qwen3)
    sliding_window: int | None  # attention window, when the model uses one
    mlp_bias: bool
    checkpoint_dtype: str
    bos_token_id: int | None
    eos_token_id: int | list[int] | None
    source: str  # the config.json this came from
    # config.json's quantization_config (a pre-quantized checkpoint), None for an ordinary one.
    quantization_config: dict[str, Any] | None = None

    @property
    def max_model_len_limit(self) -> int:
        """The longest context the model supports, after RoPE scaling."""
        return _scaled_max_len(self.max_position_embeddings, self.rope_scaling)

    def num_params(self) -> int:
        """Parameter count from the shapes (untied LM head counted separately)."""
        h, d = self.hidden_size, self.head_dim
        q, kv = self.num_attention_heads * d, self.num_key_value_heads * d
        attn = h * q + 2 * h * kv + q * h
        if self.attention_bias:
            attn += q + 2 * kv
        if self.qk_norm:
            attn += 2 * d
        layer = attn + 3 * h * self.intermediate_size + 2 * h
        embed = self.vocab_size * h
        lm_head = 0 if self.tie_word_embeddings else self.vocab_size * h
        return embed + self.num_hidden_layers * layer + h + lm_head


def _scaled_max_len(limit: int, rope_scaling: dict[str, Any] | None) -> int:
    if not rope_scaling:
        return limit
    rope_type = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
    factor = rope_scaling.get("factor")
    if rope_type in ("default", "llama3", "longrope", "su") or factor is None:
        return limit
    if rope_type == "yarn":
        return int(rope_scaling.get("original_max_position_embeddings", limit) * factor)
    return int(limit * factor)


def _rope(hf: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """(rope_theta, scaling) from either config.json form; scaling is None for plain RoPE."""
    params = hf.get("rope_parameters")
    if isinstance(params, dict):
        theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
    else:
        theta = float(hf.get("rope_theta", 10000.0))
        scaling = dict(hf.get("rope_scaling") or {})
    if scaling.get("rope_type", scaling.get("type", "default")) == "default":
        return theta, None
    return theta, scaling


def _sliding_window(hf: dict[str, Any]) -> int | None:
    """The attention window the model applies; Llama ignores a `sliding_window` key, and Qwen
    only uses one with `use_sliding_window`."""
    window = hf.get("sliding_window")
    model_type = hf.get("model_type")
    if not isinstance(window, int) or model_type not in ("mistral", "qwen2", "qwen3"):
        return None
    if model_type != "mistral" and not hf.get("use_sliding_window", False):
        return None
    return window


def _max_len(hf: dict[str, Any]) -> tuple[int, str]:
    present = [(int(hf[k]), k) for k in MAX_LEN_KEYS if isinstance(hf.get(k), int)]
    if not present:
        return FALLBACK_MAX_LEN, "fallback"
    return min(present)


def arch_from_hf_config(hf: dict[str, Any], source: str) -> ModelArchConfig:
    """Parse a config.json dict. Raises ConfigError for an architecture the engine lacks."""
    from vllm_hydra.model_executor.models.registry import ModelRegistry

    architectures = hf.get("architectures") or []
    supported = ModelRegistry.get_supported_archs()  # built in, and registered by plugins
    arch = next((a for a in architectures if a in supported), None)
    if arch is None:
        raise ConfigError(
            f"model.path: {source} names architectures={architectures}, which this engine does "
            f"not implement. Supported: {', '.join(supported)}. A plugin can add one "
            f"(README 'Plugins')."
        )
    _check_supported_layers(hf, source)
    heads = int(hf["num_attention_heads"])
    theta, scaling = _rope(hf)
    max_len, max_len_key = _max_len(hf)
    model_type = str(hf.get("model_type", ""))
    return ModelArchConfig(
        architecture=arch,
        model_type=model_type,
        vocab_size=int(hf["vocab_size"]),
        hidden_size=int(hf["hidden_size"]),
        intermediate_size=int(hf["intermediate_size"]),
        num_hidden_layers=int(hf["num_hidden_layers"]),
        num_attention_heads=heads,
        num_key_value_heads=int(hf.get("num_key_value_heads") or heads),
        head_dim=int(hf.get("head_dim") or hf["hidden_size"] // heads),
        max_position_embeddings=max_len,
        max_len_key=max_len_key,
        rope_theta=theta,
        rope_scaling=scaling,
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        attention_bias=bool(hf.get("attention_bias", model_type == "qwen2")),
        qk_norm=model_type == "qwen3",
        sliding_window=_sliding_window(hf),
        mlp_bias=bool(hf.get("mlp_bias", False)),
        checkpoint_dtype=str(hf.get("dtype") or hf.get("torch_dtype") or "float32"),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"),
        source=source,
        quantization_config=hf.get("quantization_config"),
    )


def _check_supported_layers(hf: dict[str, Any], source: str) -> None:
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise ConfigError(
            f"model.path: {source} has hidden_act={act}; the engine implements silu (SwiGLU)."
        )
    _, scaling = _rope(hf)
    rope_type = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ConfigError(
            f"model.path: {source} uses rope_type={rope_type}, which the engine does not "
            f"implement. Supported: {', '.join(SUPPORTED_ROPE_TYPES)}."
        )


def known_arch_file(hub_id: str) -> Path:
    """Where the committed config.json of a hub id lives (`org/name` -> `org--name.json`)."""
    return KNOWN_ARCHS_DIR / (hub_id.replace("/", "--") + ".json")


def read_hf_config(path: Path) -> dict[str, Any]:
    """Read a config.json as it is on disk."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"model.path: cannot read {path}: {e}") from e


def apply_hf_overrides(hf: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Lay `model.hf_overrides` over config.json. An old-form `rope_scaling` override on a
    transformers-5 config (which reads only `rope_parameters`) lands in `rope_parameters`,
    so it is honoured rather than shadowed."""
    merged = {**hf, **overrides}
    params = hf.get("rope_parameters")
    if "rope_scaling" in overrides and "rope_parameters" not in overrides and params:
        scaling = dict(overrides["rope_scaling"] or {"rope_type": "default"})
        merged["rope_parameters"] = {"rope_theta": params.get("rope_theta"), **scaling}
    return merged


def hf_override_warnings(hf: dict[str, Any], overrides: dict[str, Any]) -> list[str]:
    """Overrides that run but that vLLM warns about: a context beyond the trained length."""
    trained, key = _max_len(hf)
    value = overrides.get(key)
    if not isinstance(value, int) or value <= trained:
        return []
    return [
        f"model.hf_overrides.{key}={value} exceeds the length the checkpoint was trained for "
        f"({key}={trained} in config.json): outputs beyond {trained} tokens degrade. To "
        f"extend the context, scale RoPE instead (model.hf_overrides.rope_scaling)."
    ]
