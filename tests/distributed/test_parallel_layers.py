"""The tensor-parallel layers for real: two processes in a gloo group, each holding its slice,
give the single-process result after their all-reduce / all-gather."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from vllm_hydra.distributed.parallel_state import (
    destroy_model_parallel,
    init_distributed_environment,
    initialize_model_parallel,
)
from vllm_hydra.distributed.utils import get_distributed_init_method, get_open_port
from vllm_hydra.model_executor.layers.linear import ColumnParallelLinear, RowParallelLinear
from vllm_hydra.model_executor.layers.logits_processor import LogitsProcessor
from vllm_hydra.model_executor.layers.vocab_parallel_embedding import (
    ParallelLMHead,
    VocabParallelEmbedding,
)

VOCAB, HIDDEN, INTER = 11, 8, 12  # an odd vocabulary: the last rank's slice is padded


def _full_weights() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        name: torch.randn(*shape, generator=gen)
        for name, shape in {
            "embed": (VOCAB, HIDDEN),
            "up": (INTER, HIDDEN),
            "down": (HIDDEN, INTER),
            "down_bias": (HIDDEN,),
        }.items()
    }


def _forward(w: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """Embedding -> column-parallel up (gathered) -> row-parallel down -> logits."""
    embed = VocabParallelEmbedding(VOCAB, HIDDEN)
    embed.weight.weight_loader(embed.weight, w["embed"])
    up = ColumnParallelLinear(HIDDEN, INTER, gather_output=False)
    up.weight.weight_loader(up.weight, w["up"])
    down = RowParallelLinear(INTER, HIDDEN, bias=True)
    down.weight.weight_loader(down.weight, w["down"])
    down.bias.weight_loader(down.bias, w["down_bias"])
    head = ParallelLMHead(VOCAB, HIDDEN).tie_weights(embed)
    hidden = down(F.silu(up(embed(ids))))
    return LogitsProcessor(VOCAB)(head, hidden)


def _rank_main(rank: int, init_method: str, expected: torch.Tensor) -> None:
    init_distributed_environment(2, rank, init_method, "gloo")
    initialize_model_parallel(tp=2, pp=1, rank=rank)
    try:
        got = _forward(_full_weights(), torch.arange(VOCAB))
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        dist.barrier()
    finally:
        destroy_model_parallel()


def test_tp2_layers_match_one_process() -> None:
    initialize_model_parallel(1, 1, 0)
    expected = _forward(_full_weights(), torch.arange(VOCAB))
    init_method = get_distributed_init_method("127.0.0.1", get_open_port())
    # Raises (ProcessRaisedException) with the failing rank's traceback.
    mp.spawn(_rank_main, args=(init_method, expected), nprocs=2, join=True)
