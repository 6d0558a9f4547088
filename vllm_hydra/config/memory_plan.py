"""The memory plan: weights, activations and KV cache per device, computed from the config alone.

The same arithmetic as vLLM's KV cache sizing (page size = 2 x block_size x kv_heads_per_rank x
head_dim x dtype bytes, per layer), but from the architecture facts instead of a profiling run,
so a dry run and the "one request must fit" check need no weights and no device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vllm_hydra.config.device import DeviceType
from vllm_hydra.config.device_memory import Reserves, reserves
from vllm_hydra.config.model_arch import DTYPE_BYTES
from vllm_hydra.config.quantization import checkpoint_group_size, checkpoint_weight_bits

if TYPE_CHECKING:
    from vllm_hydra.config.model_arch import ModelArchConfig
    from vllm_hydra.config.vllm import VllmConfig

GIB = 1 << 30
# Planned GPU memory per device when a dry run targets CUDA without one (an H100).
ASSUMED_GPU_MEMORY_GIB = 80.0


@dataclass(frozen=True)
class MemoryPlan:
    device: DeviceType
    device_memory_bytes: int | None  # None on CPU: the KV cache is sized explicitly there
    weight_bytes: int  # per rank (the largest pipeline stage)
    activation_bytes: int  # per rank, a forward of max_num_batched_tokens (estimate)
    kv_bytes_per_token: int  # per rank
    block_size: int
    kv_budget_bytes: int
    num_blocks: int
    max_model_len: int
    budget_key: str  # the config key that sets kv_budget_bytes
    assumed_device_memory: bool = False
    # Data-parallel engines: each has its own weights and its own KV cache of this plan's size
    # (cache.kv_cache_memory_gib and num_blocks_override are per engine, per rank).
    dp: int = 1
    # CUDA only: the context, non-torch allocations and the graph pool (config/device_memory.py).
    reserves: Reserves = field(default_factory=Reserves)
    memory_utilization: float | None = None
    # lora=enabled: the adapter slots (max_loras x A and B of every LoRA layer), per rank.
    lora_bytes: int = 0

    @property
    def non_kv_bytes(self) -> int:
        """Everything but the KV cache: weights, activations, LoRA slots and the reserves."""
        return self.weight_bytes + self.activation_bytes + self.lora_bytes + self.reserves.total

    @property
    def kv_bytes_per_block(self) -> int:
        return self.kv_bytes_per_token * self.block_size

    @property
    def usable_blocks(self) -> int:
        """Blocks requests can use: block 0 is the block pool's reserved null block."""
        return max(self.num_blocks - 1, 0)

    @property
    def kv_cache_tokens(self) -> int:
        return self.usable_blocks * self.block_size

    @property
    def blocks_per_request(self) -> int:
        return math.ceil(self.max_model_len / self.block_size)

    @property
    def max_concurrency(self) -> float:
        """How many requests of max_model_len tokens the KV cache holds at once."""
        return self.usable_blocks / self.blocks_per_request

    def describe(self) -> str:
        rows = [
            ("device", self._device_text()),
            ("weights per rank", _gib(self.weight_bytes)),
            ("activations per rank (estimate)", _gib(self.activation_bytes)),
            *self._reserve_rows(),
            *([("LoRA adapter slots per rank", _gib(self.lora_bytes))] if self.lora_bytes else []),
            ("KV cache per token", f"{self.kv_bytes_per_token:,} B"),
            (f"KV cache per block ({self.block_size} tokens)", f"{self.kv_bytes_per_block:,} B"),
            (f"KV cache budget ({self.budget_key})", _gib(self.kv_budget_bytes)),
            ("KV cache blocks", f"{self.num_blocks:,} ({self.kv_cache_tokens:,} tokens)"),
            (
                f"maximum concurrency at max_model_len={self.max_model_len}",
                f"{self.max_concurrency:.2f}x",
            ),
        ]
        if self.dp > 1:
            rows.append(
                (
                    f"data-parallel engines (parallel.dp={self.dp})",
                    f"{self.dp} x the above: {_gib(self.dp * self.kv_budget_bytes)} KV cache, "
                    f"{self.dp * self.kv_cache_tokens:,} tokens, "
                    f"{self.dp * self.max_concurrency:.2f}x concurrency in all",
                )
            )
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)

    def _reserve_rows(self) -> list[tuple[str, str]]:
        if self.device is not DeviceType.cuda:
            return []
        rows = [(name, _gib(n)) for name, n in self.reserves.rows()]
        if self.device_memory_bytes is not None and self.memory_utilization is not None:
            share = int(self.device_memory_bytes * self.memory_utilization)
            rows.append(
                (
                    f"engine share (cache.memory_utilization={self.memory_utilization})",
                    f"{_gib(share)}, of which {_gib(self.non_kv_bytes)} not KV cache",
                )
            )
        return rows

    def _device_text(self) -> str:
        if self.device_memory_bytes is None:
            return self.device.value
        text = f"{self.device.value}, {_gib(self.device_memory_bytes)} per device"
        return text + (" (assumed: no CUDA device visible)" if self.assumed_device_memory else "")


def _gib(num_bytes: int) -> str:
    return f"{num_bytes / GIB:.2f} GiB"


def plan_memory(config: VllmConfig) -> MemoryPlan:
    """Size the KV cache of one rank from the resolved config."""
    device = config.device.type
    weights, activations = weight_bytes_per_rank(config), activation_bytes_per_rank(config)
    lora = lora_bytes_per_rank(config)
    device_bytes, assumed = _device_memory_bytes(config)
    reserved = reserves(config)
    non_kv = weights + activations + lora + reserved.total
    budget_key, budget = _kv_budget(config, device_bytes, non_kv)
    per_block = kv_bytes_per_token_per_rank(config) * config.cache.block_size
    num_blocks = config.cache.num_blocks_override or max(budget, 0) // per_block
    return MemoryPlan(
        device=device,
        device_memory_bytes=device_bytes,
        weight_bytes=weights,
        activation_bytes=activations,
        kv_bytes_per_token=kv_bytes_per_token_per_rank(config),
        block_size=config.cache.block_size,
        kv_budget_bytes=budget,
        num_blocks=num_blocks,
        max_model_len=_max_model_len(config),
        budget_key=budget_key,
        assumed_device_memory=assumed,
        dp=config.parallel.dp,
        reserves=reserved,
        memory_utilization=config.cache.memory_utilization,
        lora_bytes=lora,
    )


def layers_per_stage(config: VllmConfig) -> int:
    """Layers on the largest pipeline stage (uneven splits put the remainder first)."""
    return math.ceil(config.arch.num_hidden_layers / config.parallel.pp)


def kv_heads_per_rank(config: VllmConfig) -> int:
    """KV heads are split across tp ranks, and replicated when tp exceeds them."""
    return max(1, config.arch.num_key_value_heads // config.parallel.tp)


def kv_bytes_per_token_per_rank(config: VllmConfig) -> int:
    """The target's layers on this stage, plus a draft model's (its KV shares the blocks)."""
    arch = config.arch
    per_layer = 2 * kv_heads_per_rank(config) * arch.head_dim * config.cache_dtype_bytes
    return per_layer * layers_per_stage(config) + _draft_kv_bytes_per_token(config)


def _draft_kv_bytes_per_token(config: VllmConfig) -> int:
    draft = config.draft_model_arch
    if draft is None or not config.speculative.method.uses_draft_model:
        return 0
    heads = max(1, draft.num_key_value_heads // config.parallel.tp)
    return 2 * heads * draft.head_dim * config.cache_dtype_bytes * draft.num_hidden_layers


def draft_weight_bytes_per_rank(config: VllmConfig) -> int:
    """A draft model's weights (speculative=draft_model), split like the target's."""
    draft = config.draft_model_arch
    if draft is None or not config.speculative.method.uses_draft_model:
        return 0
    dtype = config.speculative.dtype.value
    return draft.num_params() * DTYPE_BYTES.get(dtype, config.dtype_bytes) // config.parallel.tp


def weight_bytes_per_rank(config: VllmConfig) -> int:
    """Weights of the largest stage, split across tp (embedding and LM head counted in full);
    quantized linear layers at their format's bits plus scales and zero points per group."""
    arch = config.arch
    embed = arch.vocab_size * arch.hidden_size
    lm_head = 0 if arch.tie_word_embeddings else embed
    per_layer = (arch.num_params() - embed - lm_head) // arch.num_hidden_layers
    per_layer_bytes = per_layer * config.dtype_bytes
    bits = checkpoint_weight_bits(arch.quantization_config, config.quantization_method)
    if bits is not None:
        linear = linear_params_per_layer(arch)
        per_layer_bytes -= linear * config.dtype_bytes
        per_layer_bytes += linear * bits // 8 + _scale_bytes_per_layer(config)
    layers = per_layer_bytes * layers_per_stage(config)
    target = (layers + (embed + lm_head) * config.dtype_bytes) // config.parallel.tp
    return target + draft_weight_bytes_per_rank(config)


def lora_bytes_per_rank(config: VllmConfig) -> int:
    """The LoRA layers' stacked A [max_loras, max_lora_rank, in] and B [max_loras, out,
    max_lora_rank] on the largest stage: column-parallel layers hold their share of B's rows,
    row-parallel ones their share of A's columns; 0 without LoRA."""
    lora = config.lora
    if not lora.enabled:
        return 0
    arch, tp = config.arch, config.parallel.tp
    h, d, inter = arch.hidden_size, arch.head_dim, arch.intermediate_size
    q, kv = arch.num_attention_heads * d // tp, kv_heads_per_rank(config) * d
    # (A's input features, B's output features) of each slice on one rank.
    slices = [(h, q), (h, kv), (h, kv), (q, h), (h, inter // tp), (h, inter // tp)]
    slices.append((inter // tp, h))
    per_layer = sum(inp + out for inp, out in slices) * lora.max_lora_rank * lora.max_loras
    name = lora.lora_dtype.value
    dtype_bytes = config.dtype_bytes if name == "auto" else DTYPE_BYTES_BY_NAME[name]
    return per_layer * dtype_bytes * layers_per_stage(config)


DTYPE_BYTES_BY_NAME = {"float32": 4, "bfloat16": 2, "float16": 2}


def linear_params_per_layer(arch: ModelArchConfig) -> int:
    """Weights of one decoder layer's linear projections (what quantization shrinks)."""
    h, d = arch.hidden_size, arch.head_dim
    q, kv = arch.num_attention_heads * d, arch.num_key_value_heads * d
    return h * (q + 2 * kv) + q * h + 3 * h * arch.intermediate_size


def _scale_bytes_per_layer(config: VllmConfig) -> int:
    """Scales (and int4 zero points) of one layer: per output channel, or per group of inputs."""
    arch = config.arch
    group = -1
    if arch.quantization_config is not None:
        group = checkpoint_group_size(arch.quantization_config)
    h, d = arch.hidden_size, arch.head_dim
    q, kv = arch.num_attention_heads * d, arch.num_key_value_heads * d
    # (output features, input features) of qkv, o, gate_up and down.
    shapes = [(q + 2 * kv, h), (h, q), (2 * arch.intermediate_size, h), (h, arch.intermediate_size)]
    per_value = 2 * config.dtype_bytes  # a scale and a zero point
    return sum(out * (1 if group == -1 else inp // group) * per_value for out, inp in shapes)


def activation_bytes_per_rank(config: VllmConfig) -> int:
    """Peak activations of one forward pass over the step's token budget (an estimate)."""
    arch, tp = config.arch, config.parallel.tp
    tokens = config.scheduler.max_num_batched_tokens or 0
    q = arch.num_attention_heads * arch.head_dim // tp
    kv = kv_heads_per_rank(config) * arch.head_dim
    per_token = 2 * arch.hidden_size + q + 2 * kv + q + 3 * arch.intermediate_size // tp
    logits = config.scheduler.max_num_seqs * arch.vocab_size * 4  # fp32 for the sampler
    return tokens * per_token * config.dtype_bytes + logits


def _max_model_len(config: VllmConfig) -> int:
    return config.model.max_model_len or config.arch.max_model_len_limit


def _device_memory_bytes(config: VllmConfig) -> tuple[int | None, bool]:
    if config.device.type is DeviceType.cpu:
        return None, False
    if config.device.memory_gib is None:
        return int(ASSUMED_GPU_MEMORY_GIB * GIB), True
    return int(config.device.memory_gib * GIB), False


def _kv_budget(config: VllmConfig, device_bytes: int | None, used: int) -> tuple[str, int]:
    cache = config.cache
    if cache.num_blocks_override is not None:
        per_block = kv_bytes_per_token_per_rank(config) * cache.block_size
        return "cache.num_blocks_override", cache.num_blocks_override * per_block
    if cache.kv_cache_memory_gib is not None or device_bytes is None:
        return "cache.kv_cache_memory_gib", int((cache.kv_cache_memory_gib or 0) * GIB)
    return "cache.memory_utilization", int(device_bytes * (cache.memory_utilization or 0)) - used
