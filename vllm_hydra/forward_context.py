"""The forward context (vLLM's `set_forward_context`): the step's attention metadata and KV
caches, set by the model runner around each forward, for the attention calls of a compiled
model.

Under torch.compile each attention layer is one opaque operator,
`vllm_hydra::unified_attention(query, key, value, layer_name)`, so Dynamo traces the whole model
as one graph: no graph break per layer, no resumed frames with their own guards. An operator
takes tensors and strings only, so it finds the rest here: the layer by its name
(`attention.layer.register_attention_layers`), the metadata and that layer's KV cache in the
context of the step in flight. Eager models still pass both explicitly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from vllm_hydra.attention.backends.abstract import AttentionMetadata


@dataclass(frozen=True)
class ForwardContext:
    attn_metadata: AttentionMetadata | None
    kv_caches: list[torch.Tensor]  # this rank's layers, in the order of their Attention modules


_forward_context: ForwardContext | None = None


@contextmanager
def set_forward_context(
    attn_metadata: AttentionMetadata | None, kv_caches: list[torch.Tensor]
) -> Iterator[None]:
    global _forward_context
    previous, _forward_context = _forward_context, ForwardContext(attn_metadata, kv_caches)
    try:
        yield
    finally:
        _forward_context = previous


def get_forward_context() -> ForwardContext:
    assert _forward_context is not None, "a compiled forward runs inside set_forward_context"
    return _forward_context
