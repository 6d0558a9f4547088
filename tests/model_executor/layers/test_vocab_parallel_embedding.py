"""Vocabulary-split embedding: padding, per-rank rows, and the tied LM head."""

from __future__ import annotations

import pytest
import torch

from vllm_hydra.distributed import parallel_state
from vllm_hydra.distributed.parallel_state import TensorParallelGroup
from vllm_hydra.model_executor.layers.logits_processor import LogitsProcessor
from vllm_hydra.model_executor.layers.vocab_parallel_embedding import (
    ParallelLMHead,
    VocabParallelEmbedding,
)
from vllm_hydra.model_executor.utils import WeightShapeError


def test_tp1_lookup_and_tied_logits() -> None:
    weight = torch.randn(5, 3)
    embed = VocabParallelEmbedding(5, 3)
    embed.weight.weight_loader(embed.weight, weight)
    ids = torch.tensor([4, 0, 2])
    torch.testing.assert_close(embed(ids), weight[ids])
    head = ParallelLMHead(5, 3).tie_weights(embed)
    hidden = torch.randn(2, 3).bfloat16()
    logits = LogitsProcessor(5)(head, hidden.float())
    assert logits.dtype == torch.float32 and logits.shape == (2, 5)
    torch.testing.assert_close(logits, hidden.float() @ weight.T)


def test_rank_rows_are_padded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel_state, "_TP_GROUP", TensorParallelGroup(2, 1))
    weight = torch.randn(5, 3)
    embed = VocabParallelEmbedding(5, 3)  # padded to 6: rank 1 holds rows 3, 4 and a pad row
    embed.weight.weight_loader(embed.weight, weight)
    assert embed.weight.shape == (3, 3)
    torch.testing.assert_close(embed.weight[:2], weight[3:])
    assert not embed.weight[2].any()


def test_wrong_vocab_size_is_refused() -> None:
    embed = VocabParallelEmbedding(5, 3)
    with pytest.raises(WeightShapeError, match=r"expected shape \[5, 3\], got \[6, 3\]"):
        embed.weight.weight_loader(embed.weight, torch.zeros(6, 3))
