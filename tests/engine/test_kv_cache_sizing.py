"""EngineCore sizes the KV cache from what the executor reports, before the scheduler exists."""

from __future__ import annotations

from vllm_hydra.config import compose_config
from vllm_hydra.config.memory_plan import GIB
from vllm_hydra.engine.core import EngineCore

# The tiny model: 4 layers x 2 KV heads x 64 dims x (K, V) x 4 bytes (fp32) per token.
TINY_KV_BYTES_PER_BLOCK = 4 * 2 * 64 * 2 * 4 * 16


def test_blocks_from_the_configured_memory() -> None:
    core = EngineCore(
        compose_config(
            ["model=tiny", "device=cpu", "model.dtype=float32", "cache.kv_cache_memory_gib=0.01"]
        )
    )
    expected = int(0.01 * GIB) // TINY_KV_BYTES_PER_BLOCK
    assert core.num_gpu_blocks == expected
    kv_cache = core.model_executor.worker.model_runner.kv_caches  # type: ignore[attr-defined]
    assert len(kv_cache) == 4 and kv_cache[0].shape == (2, expected, 16, 2, 64)
    assert core.scheduler.kv_cache_manager.block_pool.get_num_free_blocks() == expected - 1


def test_num_blocks_override_wins() -> None:
    core = EngineCore(compose_config(["model=tiny", "device=cpu", "cache.num_blocks_override=200"]))
    assert core.num_gpu_blocks == 200
