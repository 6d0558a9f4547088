"""get_model on real safetensors checkpoints: sharded ones, and ones that do not fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_checkpoints import MakeCheckpoint, compose_for

from vllm_hydra.model_executor.model_loader import ModelLoadError, get_model

WEIGHTS = "model.safetensors"


def rewrite_weights(path: Path, change: dict[str, torch.Tensor | None]) -> None:
    """Rewrite model.safetensors with tensors replaced, added, or (None) removed."""
    tensors = load_file(path / WEIGHTS)
    for name, tensor in change.items():
        if tensor is None:
            del tensors[name]
        else:
            tensors[name] = tensor
    save_file(tensors, str(path / WEIGHTS), metadata={"format": "pt"})


def test_sharded_checkpoint_loads_like_the_single_file(make_checkpoint: MakeCheckpoint) -> None:
    single, _ = make_checkpoint("qwen2", name="single")
    sharded, _ = make_checkpoint("qwen2", name="sharded", max_shard_size="40KB")
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    assert not (sharded / WEIGHTS).exists()
    a = get_model(compose_for(single)).state_dict()
    b = get_model(compose_for(sharded)).state_dict()
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=0, rtol=0, msg=name)


def test_missing_tensors_are_listed_by_checkpoint_name(make_checkpoint: MakeCheckpoint) -> None:
    path, _ = make_checkpoint("llama", tie_word_embeddings=False)
    rewrite_weights(path, {"model.layers.1.self_attn.k_proj.weight": None, "lm_head.weight": None})
    with pytest.raises(ModelLoadError) as err:
        get_model(compose_for(path))
    message = str(err.value)
    assert str(path) in message and WEIGHTS in message
    assert "missing tensors (2)" in message
    assert "model.layers.1.self_attn.k_proj.weight" in message and "lm_head.weight" in message
    assert "q_proj" not in message  # the fused q/k/v parameter is reported by its missing part


def test_unexpected_and_mis_shaped_tensors_name_their_file(
    make_checkpoint: MakeCheckpoint,
) -> None:
    path, _ = make_checkpoint("qwen3")
    rewrite_weights(
        path,
        {
            "model.layers.7.mlp.up_proj.weight": torch.zeros(128, 64),
            "model.layers.0.mlp.down_proj.weight": torch.zeros(64, 100),
            "model.layers.0.self_attn.q_norm.weight": torch.zeros(17),
        },
    )
    with pytest.raises(ModelLoadError) as err:
        get_model(compose_for(path))
    message = str(err.value)
    assert "unexpected tensors (1): model.layers.7.mlp.up_proj.weight (in model.safetensors)" in (
        message
    )
    assert "mis-shaped tensors (2)" in message
    down = "model.layers.0.mlp.down_proj.weight (in model.safetensors): expected shape [64, 128]"
    assert f"{down}, got [64, 100]" in message
    assert "got [17]" in message
    assert "missing" not in message


def test_truncated_file_names_the_file(make_checkpoint: MakeCheckpoint) -> None:
    path, _ = make_checkpoint("mistral")
    data = (path / WEIGHTS).read_bytes()
    (path / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"cannot read .*model\.safetensors.*truncated"):
        get_model(compose_for(path))


def test_missing_shard_is_named(make_checkpoint: MakeCheckpoint) -> None:
    path, _ = make_checkpoint("llama", max_shard_size="40KB")
    shard = sorted(path.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(ModelLoadError, match=f"names shards that do not exist: .*{shard.name}"):
        get_model(compose_for(path, "load.format=safetensors"))


def test_tied_checkpoint_that_stores_lm_head_loads(make_checkpoint: MakeCheckpoint) -> None:
    path, hf_model = make_checkpoint("llama", tie_word_embeddings=True)
    embed = hf_model.model.embed_tokens.weight.detach().clone()
    rewrite_weights(path, {"lm_head.weight": embed})
    model = get_model(compose_for(path))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    torch.testing.assert_close(model.lm_head.weight, embed)
