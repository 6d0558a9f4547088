"""Attention backend registry: a backend name from the config -> its backend class."""

from __future__ import annotations

from vllm_hydra.attention.backends.abstract import AttentionBackend
from vllm_hydra.attention.backends.torch_attn import TorchAttentionBackend
from vllm_hydra.config.attention import AttentionBackendName

# The Triton backend registers here when it is built.
_BACKENDS: dict[str, type[AttentionBackend]] = {
    TorchAttentionBackend.get_name(): TorchAttentionBackend,
}


def get_attn_backend(name: str | AttentionBackendName) -> type[AttentionBackend]:
    """The backend class for `attention.backend` (a resolved config names torch or triton)."""
    key = name.value if isinstance(name, AttentionBackendName) else name
    if key == AttentionBackendName.auto.value:
        key = TorchAttentionBackend.get_name()  # unresolved config: the backend that runs anywhere
    if key not in _BACKENDS:
        raise ValueError(
            f"attention.backend={key} has no implementation; available: {', '.join(_BACKENDS)}"
        )
    return _BACKENDS[key]
