"""Weight loaders of the tensor-parallel linears: each rank keeps the right slice.

Ranks other than 0 of a larger group are simulated by installing that group's (world size,
rank) before building a layer; loading needs no collective, so no process group is required.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vllm_hydra.distributed import parallel_state
from vllm_hydra.distributed.parallel_state import TensorParallelGroup
from vllm_hydra.model_executor.layers.linear import (
    ColumnParallelLinear,
    MergedColumnParallelLinear,
    QKVParallelLinear,
    RowParallelLinear,
)
from vllm_hydra.model_executor.utils import WeightShapeError

HIDDEN, HEAD = 8, 2


@pytest.fixture
def as_rank(monkeypatch: pytest.MonkeyPatch):
    def install(world_size: int, rank: int) -> None:
        monkeypatch.setattr(parallel_state, "_TP_GROUP", TensorParallelGroup(world_size, rank))

    return install


def qkv_weights(num_heads: int, num_kv_heads: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "q": torch.randn(num_heads * HEAD, HIDDEN, generator=gen),
        "k": torch.randn(num_kv_heads * HEAD, HIDDEN, generator=gen),
        "v": torch.randn(num_kv_heads * HEAD, HIDDEN, generator=gen),
    }


def load_qkv(layer: QKVParallelLinear, weights: dict[str, torch.Tensor]) -> None:
    for shard_id, w in weights.items():
        layer.weight.weight_loader(layer.weight, w, shard_id)


def test_qkv_at_tp1_equals_three_projections() -> None:
    layer = QKVParallelLinear(HIDDEN, HEAD, 4, 2)
    w = qkv_weights(4, 2)
    load_qkv(layer, w)
    x = torch.randn(3, HIDDEN)
    q, k, v = layer(x).split([layer.q_size, layer.kv_size, layer.kv_size], dim=-1)
    for got, shard_id in zip((q, k, v), "qkv", strict=True):
        torch.testing.assert_close(got, F.linear(x, w[shard_id]))


def test_fused_qkv_checkpoint_loads_like_parts() -> None:
    w = qkv_weights(4, 2)
    parts, fused = QKVParallelLinear(HIDDEN, HEAD, 4, 2), QKVParallelLinear(HIDDEN, HEAD, 4, 2)
    load_qkv(parts, w)
    fused.weight.weight_loader(fused.weight, torch.cat([w["q"], w["k"], w["v"]]))
    torch.testing.assert_close(parts.weight, fused.weight)


def test_qkv_rank_slices_split_and_replicated_kv_heads(as_rank) -> None:
    w = qkv_weights(4, 2)
    as_rank(2, 1)  # two KV heads over two ranks: rank 1 has q heads 2-3 and KV head 1
    layer = QKVParallelLinear(HIDDEN, HEAD, 4, 2)
    load_qkv(layer, w)
    assert (layer.num_heads, layer.num_kv_heads) == (2, 1)
    expected = torch.cat([w["q"][4:8], w["k"][2:4], w["v"][2:4]])
    torch.testing.assert_close(layer.weight, expected)
    as_rank(4, 1)  # four ranks, two KV heads: ranks 0-1 share KV head 0
    layer = QKVParallelLinear(HIDDEN, HEAD, 4, 2)
    load_qkv(layer, w)
    assert layer.num_kv_head_replicas == 2
    torch.testing.assert_close(layer.weight, torch.cat([w["q"][2:4], w["k"][0:2], w["v"][0:2]]))


def test_merged_column_rank_slices(as_rank) -> None:
    gate, up = torch.randn(6, HIDDEN), torch.randn(6, HIDDEN)
    as_rank(2, 1)
    layer = MergedColumnParallelLinear(HIDDEN, [6, 6])
    layer.weight.weight_loader(layer.weight, gate, 0)
    layer.weight.weight_loader(layer.weight, up, 1)
    torch.testing.assert_close(layer.weight, torch.cat([gate[3:], up[3:]]))


def test_row_and_column_rank_slices(as_rank) -> None:
    w, b = torch.randn(4, 6), torch.randn(4)
    as_rank(2, 1)
    row = RowParallelLinear(6, 4, bias=True)
    row.weight.weight_loader(row.weight, w)
    row.bias.weight_loader(row.bias, b)
    torch.testing.assert_close(row.weight, w[:, 3:])
    torch.testing.assert_close(row.bias, b)  # added once after the all-reduce: whole
    col = ColumnParallelLinear(6, 4, bias=True)  # [out, in] = [4, 6]: rank 1 has rows 2-3
    col.weight.weight_loader(col.weight, w)
    col.bias.weight_loader(col.bias, b)
    torch.testing.assert_close(col.weight, w[2:])
    torch.testing.assert_close(col.bias, b[2:])


def test_wrong_shapes_raise_weight_shape_error() -> None:
    layer = QKVParallelLinear(HIDDEN, HEAD, 4, 2)
    with pytest.raises(WeightShapeError, match=r"expected shape \[4, 8\], got \[6, 8\]"):
        layer.weight.weight_loader(layer.weight, torch.zeros(6, HIDDEN), "k")
    merged = MergedColumnParallelLinear(HIDDEN, [6, 6])
    with pytest.raises(WeightShapeError):
        merged.weight.weight_loader(merged.weight, torch.zeros(6, HIDDEN + 1), 1)


def test_indivisible_heads_are_refused(as_rank) -> None:
    as_rank(3, 0)
    with pytest.raises(ValueError, match="num_attention_heads=4 is not divisible"):
        QKVParallelLinear(HIDDEN, HEAD, 4, 2)
