"""`Attention`: the model-side attention layer over a paged KV cache.

Models hand it q/k/v after their projections and rotary embedding, plus this layer's KV cache
and the step's metadata, both passed explicitly. Under torch.compile the layer is the operator
`vllm_hydra::unified_attention` instead, which reads both from the forward context
(`vllm_hydra/forward_context.py`). The layer holds its fp8 KV cache scales (`_k_scale`,
`_v_scale`, as in vLLM; unused by other cache dtypes).
"""

from __future__ import annotations

import itertools
import weakref

import torch
from torch import nn

from vllm_hydra.attention.backends.abstract import (
    AttentionBackend,
    AttentionMetadata,
)
from vllm_hydra.attention.kv_cache_quant import (
    K_SCALE_CONSTANT,
    V_SCALE_CONSTANT,
    compute_kv_scale,
)
from vllm_hydra.forward_context import get_forward_context

# The attention layers of compiled models, by name (vLLM's static forward context). Names are
# "model<k>.attn<i>": the k-th model this process compiled, its i-th layer, the same in every
# run, so Inductor's on-disk cache (keyed by the graph, names included) serves a restart.
_LAYERS: weakref.WeakValueDictionary[str, Attention] = weakref.WeakValueDictionary()
_MODEL_NUMBERS = itertools.count()


def register_attention_layers(model: nn.Module, num_layers: int) -> None:
    """Name `model`'s attention layers for `unified_attention`: layer i reads kv_caches[i]."""
    layers = [m for m in model.modules() if isinstance(m, Attention)]
    assert len(layers) == num_layers, f"{len(layers)} attention layers for {num_layers} caches"
    number = next(_MODEL_NUMBERS)
    for index, layer in enumerate(layers):
        layer.layer_name, layer.kv_cache_index = f"model{number}.attn{index}", index
        _LAYERS[layer.layer_name] = layer


@torch.library.custom_op("vllm_hydra::unified_attention", mutates_args=())
def unified_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, layer_name: str
) -> torch.Tensor:
    """Layer `layer_name`'s attention for the step in the forward context (it writes the
    layer's KV cache, which is no argument: the compiled graph neither reads nor copies it)."""
    layer, context = _LAYERS[layer_name], get_forward_context()
    kv_cache = context.kv_caches[layer.kv_cache_index]
    return _run_attention(layer, query, key, value, kv_cache, context.attn_metadata)


@unified_attention.register_fake
def _(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, layer_name: str) -> torch.Tensor:
    return torch.empty_like(query)


@torch.compiler.disable
def _run_attention(
    layer: Attention,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    kv_cache: torch.Tensor,
    attn_metadata: AttentionMetadata | None,
) -> torch.Tensor:
    """The backend's attention, never traced: backends read host-side lengths (which Dynamo
    would guard on and recompile for every step) and launch their own kernels. A compiled
    model reaches it through `unified_attention`; the decorator keeps any other traced call
    out of the graph too."""
    if layer.calculate_kv_scales and attn_metadata is not None:
        n = attn_metadata.num_actual_tokens  # not the padding past them
        layer.calc_kv_scales(key[:n], value[:n])
    impl = layer.impl
    impl.k_scale, impl.v_scale = layer._k_scale, layer._v_scale
    return impl.forward(query, key, value, kv_cache, attn_metadata)


class Attention(nn.Module):
    """Scaled dot-product attention with GQA/MQA, computed by an attention backend."""

    def __init__(
        self,
        num_heads: int,
        head_size: int,
        scale: float,
        num_kv_heads: int,
        attn_backend: type[AttentionBackend],
        sliding_window: int | None = None,
    ) -> None:
        super().__init__()
        if num_heads % num_kv_heads != 0:
            raise ValueError(
                f"num_heads={num_heads} is not a multiple of num_kv_heads={num_kv_heads}"
            )
        self.num_heads = num_heads
        self.head_size = head_size
        self.scale = scale
        self.num_kv_heads = num_kv_heads
        self.attn_backend = attn_backend
        impl_cls = attn_backend.get_impl_cls()
        self.impl = impl_cls(num_heads, head_size, scale, num_kv_heads, sliding_window)
        # fp8 KV cache scales (float32 [1], on the model's device; 1.0 unless calculated).
        self.register_buffer("_k_scale", torch.ones(1, dtype=torch.float32), persistent=False)
        self.register_buffer("_v_scale", torch.ones(1, dtype=torch.float32), persistent=False)
        # Set by the model runner once warm-up is over: the next real batch sets the scales.
        self.calculate_kv_scales = False
        # Set by register_attention_layers for a compiled model.
        self.layer_name: str | None = None
        self.kv_cache_index = -1

    def calc_kv_scales(self, key: torch.Tensor, value: torch.Tensor) -> None:
        """k_scale / v_scale from this batch's keys and values (vLLM's rule), once."""
        self._k_scale.copy_(compute_kv_scale(key, K_SCALE_CONSTANT))
        self._v_scale.copy_(compute_kv_scale(value, V_SCALE_CONSTANT))
        self.calculate_kv_scales = False

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        attn_metadata: AttentionMetadata | None,
    ) -> torch.Tensor:
        """q [T, heads * head_size], k/v [T, kv_heads * head_size] -> [T, heads * head_size].

        attn_metadata None (a profiling run) leaves the cache untouched and returns zeros.
        """
        if self.layer_name is not None and torch.compiler.is_compiling():
            return torch.ops.vllm_hydra.unified_attention(query, key, value, self.layer_name)
        return _run_attention(self, query, key, value, kv_cache, attn_metadata)

    def extra_repr(self) -> str:
        return (
            f"heads={self.num_heads}, kv_heads={self.num_kv_heads}, head_size={self.head_size}, "
            f"backend={self.attn_backend.get_name()}"
        )
