"""Attention backend registry: a backend name from the config -> its backend class.

The Triton backend is imported on first use: its kernels are defined at import, and under the
Triton interpreter TRITON_INTERPRET=1 must be set by then.
"""

from __future__ import annotations

from collections.abc import Callable

from vllm_hydra.attention.backends.abstract import AttentionBackend
from vllm_hydra.attention.backends.torch_attn import TorchAttentionBackend
from vllm_hydra.config.attention import AttentionBackendName


def _triton_backend() -> type[AttentionBackend]:
    from vllm_hydra.attention.backends.triton_attn import TritonAttentionBackend

    return TritonAttentionBackend


_BACKENDS: dict[str, Callable[[], type[AttentionBackend]]] = {
    AttentionBackendName.torch.value: lambda: TorchAttentionBackend,
    AttentionBackendName.triton.value: _triton_backend,
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
    return _BACKENDS[key]()
