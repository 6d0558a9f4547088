"""Linear layers on oneDNN-packed weights (layers/utils.py): the same outputs as F.linear."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_checkpoints import MakeCheckpoint, compose_for

from vllm_hydra.model_executor.layers.linear import QKVParallelLinear, RowParallelLinear
from vllm_hydra.model_executor.layers.utils import (
    can_pack_for_onednn,
    default_gemm,
    pack_linear_weights,
)
from vllm_hydra.model_executor.model_loader import get_model

BF16 = torch.bfloat16
pytestmark = pytest.mark.skipif(
    not can_pack_for_onednn(torch.zeros(1, dtype=BF16)), reason="oneDNN has no bf16 on this CPU"
)


def make(layer_cls: type, *args: int, bias: bool = False) -> torch.nn.Module:
    with torch.device("cpu"):
        torch.set_default_dtype(BF16)
        try:
            layer = layer_cls(*args, bias=bias)
        finally:
            torch.set_default_dtype(torch.float32)
    gen = torch.Generator().manual_seed(0)
    for p in layer.parameters():
        p.data = torch.randn(p.shape, generator=gen).to(BF16)
    return layer


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("tokens", [1, 7, 64, 300])
def test_packed_layers_match_f_linear_bit_for_bit(bias: bool, tokens: int) -> None:
    for layer in (
        make(QKVParallelLinear, 64, 16, 4, 2, bias=bias),
        make(RowParallelLinear, 96, 64, bias=bias),
    ):
        weight, b = (
            layer.weight.detach().clone(),
            None if layer.bias is None else layer.bias.clone(),
        )
        assert pack_linear_weights(layer) == 1
        assert layer.gemm is not default_gemm and layer.weight.numel() == 0  # the copy is gone
        wide = torch.randn(tokens, weight.shape[1] + 5).to(BF16)
        x = wide[:, : weight.shape[1]]  # strided rows, as a split of a fused output gives
        assert torch.equal(layer(x), F.linear(x, weight, b))


def test_float32_layers_keep_f_linear() -> None:
    layer = RowParallelLinear(16, 8)
    assert pack_linear_weights(layer) == 0 and layer.gemm is default_gemm


@pytest.mark.parametrize("tied", [True, False])
def test_bf16_model_packs_and_keeps_a_tied_embedding(
    make_checkpoint: MakeCheckpoint, tied: bool
) -> None:
    path, hf_model = make_checkpoint("llama", tie_word_embeddings=tied)
    model = get_model(compose_for(path, "model.dtype=bfloat16"))
    layers = [m for m in model.modules() if hasattr(m, "gemm")]
    assert layers and all(m.gemm is not default_gemm for m in layers)
    embed = model.model.embed_tokens.weight
    assert (model.lm_head.weight is embed) == tied
    assert embed.numel() > 0  # the lookup table stays whatever the head does
    ids = torch.tensor([[1, 5, 9, 2]])
    hidden = hf_model.to(BF16).model(ids).last_hidden_state[0, -1:]
    expected = hf_model.lm_head(hidden)
    assert torch.equal(model.compute_logits(hidden), expected.float())


def test_compiled_models_pack_too(make_checkpoint: MakeCheckpoint) -> None:
    """Inductor packs nothing without freezing: a compiled model keeps the packed GEMMs, as an
    operator it traces as one call (tests/compilation/test_torch_compile.py runs it)."""
    path, _ = make_checkpoint("llama")
    config = compose_for(path, "model.dtype=bfloat16", "compilation=torch_compile")
    model = get_model(config)
    layers = [m for m in model.modules() if hasattr(m, "gemm")]
    assert layers and all(m.gemm is not default_gemm for m in layers)
