"""The KV cache on CPU: zeroed without a memset at start-up (vllm_hydra/worker/kv_cache_alloc.py),
and its default size shared out among the host's ranks (create.default_cpu_kv_cache_gib)."""

from __future__ import annotations

import gc
import time

import psutil
import pytest
import torch

from vllm_hydra.config.cache import DEFAULT_CPU_KV_CACHE_GIB
from vllm_hydra.config.create import default_cpu_kv_cache_gib
from vllm_hydra.config.memory_plan import GIB
from vllm_hydra.config.parallel import ParallelConfig
from vllm_hydra.worker.kv_cache_alloc import allocate_kv_cache

CPU = torch.device("cpu")


def test_a_large_cache_costs_neither_time_nor_resident_memory() -> None:
    rss = psutil.Process().memory_info().rss
    start = time.perf_counter()
    cache = allocate_kv_cache((2, 32768, 16, 2, 64), torch.float32, CPU)  # 1 GiB
    elapsed = time.perf_counter() - start
    assert cache.shape == (2, 32768, 16, 2, 64) and cache.is_contiguous()
    assert elapsed < 0.5  # torch.zeros took seconds on this host
    assert psutil.Process().memory_info().rss - rss < 64 * 2**20  # no page touched yet


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_cache_reads_zero_and_outlives_its_name(dtype: torch.dtype) -> None:
    layer = allocate_kv_cache((2, 64, 16, 2, 64), dtype, CPU)[1]  # a view: the base is dropped
    gc.collect()
    assert not layer.any() and not layer.isnan().any()
    layer[3, 5] = 2.0
    assert layer.sum().item() == 2.0 * 2 * 64


@pytest.mark.parametrize(
    ("tp", "pp", "dp", "nnodes", "gib"),
    [
        (1, 1, 1, 1, DEFAULT_CPU_KV_CACHE_GIB),  # one rank: the default
        (1, 1, 2, 1, 3.0),  # dp=2 on 24 GiB: a quarter of the host, halved
        (2, 2, 2, 1, 0.75),  # eight ranks
        (2, 1, 2, 2, 3.0),  # two nodes: half of the ranks on each
    ],
)
def test_default_size_shares_a_quarter_of_the_host(
    tp: int, pp: int, dp: int, nnodes: int, gib: float
) -> None:
    parallel = ParallelConfig(tp=tp, pp=pp, dp=dp, nnodes=nnodes)
    assert default_cpu_kv_cache_gib(parallel, 24 * GIB) == gib
