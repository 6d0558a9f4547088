"""The GEMM each linear layer runs: `F.linear`, or on CPU oneDNN on a weight packed once.

F.linear hands oneDNN a plain [out, in] weight on every call, and oneDNN repacks it into its
blocked (AMX/AVX-512) layout each time. Packing once after loading, as vLLM's
`dispatch_cpu_unquantized_gemm` does, takes that off every step. Measured (2 threads, this
project's 2-core CPU, bench-125m's 12 layers plus LM head in bf16): 28.5 -> 18.4 ms at 64
tokens, 19.0 -> 13.0 ms at 1, with bit-identical outputs; so bf16 and fp16 only, where the
oneDNN kernels are the ones F.linear already used (fp32 goes to another BLAS).

Under torch.compile the packed GEMM is the operator `vllm_hydra::onednn_linear` (a schema and a
fake implementation), so Inductor keeps it as one opaque call on the packed weight rather than
compiling an `mm` on the plain one (Inductor packs weights only with freezing, which the engine
does not use); eager code calls oneDNN directly and skips the dispatcher.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

# gemm(x, weight, bias) -> x @ weight.T + bias
Gemm = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]

# The batch size oneDNN tunes the packed layout for; other sizes run on it as fast (measured
# 1 to 2048 tokens).
PACK_BATCH_HINT = 64


@torch.library.custom_op("vllm_hydra::onednn_linear", mutates_args=())
def onednn_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight.T + bias on a weight packed by `torch.ops.mkldnn._reorder_linear_weight`."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [None], "")


@onednn_linear.register_fake
def _(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], packed.shape[0]))


def default_gemm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.linear(x, weight, bias)


def can_pack_for_onednn(weight: torch.Tensor) -> bool:
    """A CPU bf16/fp16 weight on a build and CPU whose oneDNN runs that dtype natively."""
    if weight.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    if weight.dtype == torch.bfloat16:
        return torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if weight.dtype == torch.float16:
        return torch.ops.mkldnn._is_mkldnn_fp16_supported()
    return False


def dispatch_cpu_unquantized_gemm(layer: nn.Module, remove_weight: bool) -> bool:
    """Give `layer` a `gemm` on its weight packed for oneDNN; with `remove_weight` the plain
    weight is dropped (the packed copy replaces it). False, layer untouched, if not packable."""
    weight: torch.Tensor = layer.weight
    if not can_pack_for_onednn(weight):
        return False
    packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACK_BATCH_HINT)

    def onednn_gemm(
        x: torch.Tensor, _weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return torch.ops.vllm_hydra.onednn_linear(x, packed, bias)
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [None], "")

    layer.gemm = onednn_gemm
    if remove_weight:
        layer.weight = nn.Parameter(weight.new_empty(0), requires_grad=False)
    return True


def pack_linear_weights(model: nn.Module) -> int:
    """Dispatch every layer with a `gemm` to packed oneDNN where it can; a weight that another
    module shares (tied embeddings) is kept. Returns the number of layers packed."""
    uses = Counter(id(p) for m in model.modules() for p in m.parameters(recurse=False))
    packed = 0
    for module in model.modules():
        if getattr(module, "quant_method", None) is not None and not getattr(
            module.quant_method, "uses_gemm", False
        ):
            continue  # a quantized layer runs its own kernel
        if hasattr(module, "gemm") and isinstance(module.weight, torch.Tensor):
            shared = uses[id(module.weight)] > 1
            packed += dispatch_cpu_unquantized_gemm(module, remove_weight=not shared)
    if packed:
        logger.info("oneDNN: %d linear layers run on pre-packed weights", packed)
    return packed
