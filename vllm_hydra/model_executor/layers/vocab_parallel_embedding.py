"""Token embedding and LM head split over the vocabulary across tensor-parallel ranks.

The vocabulary is padded up to a multiple of the tensor-parallel size so every rank holds an
equal slice; padded rows stay zero and the logits processor drops their columns.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vllm_hydra.distributed.parallel_state import (
    get_tensor_model_parallel_rank,
    get_tensor_model_parallel_world_size,
    tensor_model_parallel_all_reduce,
)
from vllm_hydra.model_executor.layers.utils import Gemm, default_gemm
from vllm_hydra.model_executor.utils import WeightShapeError, copy_weight, set_weight_attrs


def pad_vocab_size(vocab_size: int, multiple: int) -> int:
    return -(-vocab_size // multiple) * multiple


class VocabParallelEmbedding(nn.Module):
    """Embedding whose rows [rank * n, (rank + 1) * n) live on `rank`; lookups are all-reduced."""

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.tp_size = get_tensor_model_parallel_world_size()
        self.tp_rank = get_tensor_model_parallel_rank()
        self.org_vocab_size = num_embeddings
        self.num_embeddings_padded = pad_vocab_size(num_embeddings, self.tp_size)
        self.num_embeddings_per_partition = self.num_embeddings_padded // self.tp_size
        self.vocab_start_index = self.tp_rank * self.num_embeddings_per_partition
        self.embedding_dim = embedding_dim
        self.weight = nn.Parameter(
            torch.empty(self.num_embeddings_per_partition, embedding_dim), requires_grad=False
        )
        set_weight_attrs(self.weight, {"weight_loader": self.weight_loader})

    def weight_loader(self, param: nn.Parameter, loaded_weight: torch.Tensor) -> None:
        expected = (self.org_vocab_size, self.embedding_dim)
        if tuple(loaded_weight.shape) != expected:
            raise WeightShapeError(expected, tuple(loaded_weight.shape))
        start = self.vocab_start_index
        end = min(start + self.num_embeddings_per_partition, self.org_vocab_size)
        param.data.zero_()  # the padded rows past the real vocabulary
        copy_weight(param.data[: end - start], loaded_weight[start:end])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.tp_size == 1:
            return F.embedding(input_ids, self.weight)
        local_ids = input_ids - self.vocab_start_index
        in_shard = (local_ids >= 0) & (local_ids < self.num_embeddings_per_partition)
        out = F.embedding(local_ids.clamp(0, self.num_embeddings_per_partition - 1), self.weight)
        out = out * in_shard.unsqueeze(-1).to(out.dtype)  # other ranks contribute those rows
        return tensor_model_parallel_all_reduce(out)

    def extra_repr(self) -> str:
        return (
            f"num_embeddings={self.org_vocab_size}, embedding_dim={self.embedding_dim}, "
            f"tp_size={self.tp_size}"
        )


class ParallelLMHead(VocabParallelEmbedding):
    """The output projection, vocabulary-split like the embedding (its weight may be tied);
    the logits processor runs it through `gemm`, as the linear layers."""

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__(num_embeddings, embedding_dim)
        self.gemm: Gemm = default_gemm

    def tie_weights(self, embed_tokens: VocabParallelEmbedding) -> ParallelLMHead:
        """Share the embedding's weight (tie_word_embeddings)."""
        self.weight = embed_tokens.weight
        return self

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("ParallelLMHead holds weights only; use LogitsProcessor for logits")
