"""`model` section: which checkpoint to serve and how (vLLM's ModelConfig)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from vllm_hydra.config.quantization import QuantizationMethod


class ModelDType(Enum):
    # auto: on CUDA the checkpoint's dtype (a float32 checkpoint in bfloat16); on CPU bfloat16
    # where the CPU computes it natively (AVX-512-BF16 or AMX), else float32 (config/dtype.py).
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


@dataclass(frozen=True)
class ModelConfig:
    # Short name, shown in logs and used as the served model name unless server sets one.
    name: str = "tiny"
    # A local checkpoint directory, or a hub id found in the Hugging Face cache.
    path: str = ""
    # Tokenizer directory or hub id; unset: path.
    tokenizer: str | None = None
    dtype: ModelDType = ModelDType.auto
    # Tokens per request (prompt + output). Unset: the model's limit from config.json
    # (max_position_embeddings and kin); `auto` (or -1): the largest length the KV cache holds,
    # capped by that limit. Takes sizes: 32k (32,000), 32K (32,768). An int once resolved.
    max_model_len: Any = None
    seed: int = 0
    # Hub revision (branch, tag or commit) of a hub id; meaningless for a local directory.
    revision: str | None = None
    trust_remote_code: bool = False
    # Run without a tokenizer: prompts are token ids and outputs carry no text (a checkpoint
    # with no tokenizer files, or load.format=dummy for a model that is not on disk).
    skip_tokenizer_init: bool = False
    # Values laid over config.json before anything reads it, e.g. {max_position_embeddings: 4096}.
    hf_overrides: dict[str, Any] = field(default_factory=dict)
    # null: the checkpoint's quantization_config (none: unquantized); fp8 / int8: quantize an
    # unquantized checkpoint online; compressed-tensors / awq / gptq: the format the checkpoint
    # must declare. Resolved to the method that runs (null only for an unquantized model).
    quantization: QuantizationMethod | None = None
    # A chat template for /v1/chat/completions, in place of the tokenizer's own (or for a
    # checkpoint that has none): a path to a Jinja file, or the template itself inline.
    chat_template: str | None = None
