"""The CUDA memory plan's reserves and the free-memory check, by arithmetic on a faked GPU."""

from __future__ import annotations

from vllm_hydra.config import compose_config, plan_memory
from vllm_hydra.config.device_memory import (
    CUDA_CONTEXT_BYTES,
    CUDAGRAPH_POOL_BYTES,
    NCCL_BYTES,
    NON_TORCH_BYTES,
    DeviceMemory,
    check_free_memory,
    kv_budget_after_profiling,
)
from vllm_hydra.config.memory_plan import GIB

LLAMA3_24G = ["model=llama3", "device=cuda", "dry_run=true", "device.memory_gib=24"]


def test_a_24_gib_plan_reserves_context_non_torch_and_graphs() -> None:
    config = compose_config([*LLAMA3_24G, "compilation=cudagraph", "attention=triton"])
    plan = plan_memory(config)
    r = plan.reserves
    assert (r.cuda_context, r.non_torch, r.cudagraph_pool) == (
        CUDA_CONTEXT_BYTES,
        NON_TORCH_BYTES,
        CUDAGRAPH_POOL_BYTES,
    )
    share = int(24 * GIB * 0.9)
    assert plan.kv_budget_bytes == share - plan.weight_bytes - plan.activation_bytes - r.total
    assert "CUDA graph pool (reserve)" in plan.describe()


def test_nccl_buffers_with_more_than_one_rank() -> None:
    plan = plan_memory(compose_config([*LLAMA3_24G, "parallel.tp=2"]))
    assert plan.reserves.non_torch == NON_TORCH_BYTES + NCCL_BYTES
    assert plan.reserves.cudagraph_pool == 0  # compilation=none


def test_the_cpu_plan_reserves_nothing(write_checkpoint) -> None:
    plan = plan_memory(compose_config([f"model.path={write_checkpoint()}", "device=cpu"]))
    assert plan.reserves.total == 0 and "reserve" not in plan.describe()


def test_a_gpu_shared_with_another_process_is_refused_with_the_numbers() -> None:
    config = compose_config([*LLAMA3_24G[:3]])  # 0.9 of the whole device
    total = 24 * GIB
    problems = check_free_memory(config, DeviceMemory(free_bytes=20 * GIB, total_bytes=total))
    assert problems == [
        "cache.memory_utilization=0.9 asks for 21.60 GiB of cuda:0 (24.00 GiB planned), but "
        "only 20.00 GiB of its 24.00 GiB is free: other processes hold 4.00 GiB. Use "
        "cache.memory_utilization<=0.83, or stop the other processes (nvidia-smi lists them)."
    ]
    assert check_free_memory(config, DeviceMemory(22 * GIB, total)) == []


def test_a_smaller_planned_share_fits_beside_another_process() -> None:
    config = compose_config(LLAMA3_24G)  # device.memory_gib=24 of a faked 80 GiB card
    assert check_free_memory(config, DeviceMemory(free_bytes=40 * GIB, total_bytes=80 * GIB)) == []


def test_the_kv_budget_after_profiling() -> None:
    config = compose_config(LLAMA3_24G)
    peak, non_torch = 15 * GIB, 1 * GIB
    budget = kv_budget_after_profiling(config, 80 * GIB, peak, non_torch)
    assert budget == int(24 * GIB * 0.9) - peak - non_torch - CUDA_CONTEXT_BYTES
    # A measured non-torch growth below the plan's reserve counts as the reserve.
    low = kv_budget_after_profiling(config, 80 * GIB, peak, 0)
    assert low == int(24 * GIB * 0.9) - peak - NON_TORCH_BYTES - CUDA_CONTEXT_BYTES
