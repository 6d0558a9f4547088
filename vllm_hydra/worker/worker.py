"""`Worker`: one rank's device, model and KV cache (vLLM's gpu_worker, device-agnostic)."""

from __future__ import annotations

import logging

import torch

from vllm_hydra.config.device import DeviceType
from vllm_hydra.config.device_memory import (
    DeviceMemory,
    check_free_memory,
    kv_budget_after_profiling,
    planned_device_bytes,
)
from vllm_hydra.config.errors import ConfigError
from vllm_hydra.config.memory_plan import GIB
from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.core.sched_output import SchedulerOutput
from vllm_hydra.distributed.parallel_state import (
    init_distributed_environment,
    initialize_model_parallel,
)
from vllm_hydra.lora.request import LoRARequest
from vllm_hydra.outputs import ModelRunnerOutput
from vllm_hydra.worker.model_runner import ModelRunner

logger = logging.getLogger(__name__)


class Worker:
    """One rank. `rank` is global within its engine (pp_rank * tp + tp_rank); `local_rank`
    picks the CUDA device; `distributed_init_method` (tcp://host:port) joins the others."""

    def __init__(
        self,
        vllm_config: VllmConfig,
        rank: int = 0,
        local_rank: int = 0,
        distributed_init_method: str | None = None,
    ) -> None:
        from vllm_hydra.plugins import load_general_plugins

        load_general_plugins()  # worker processes build the model, so they need its class
        self.config = vllm_config
        self.rank = rank
        self.local_rank = local_rank
        self.distributed_init_method = distributed_init_method
        self.device = torch.device("cpu")
        self.model_runner: ModelRunner | None = None
        # CUDA: device memory in use before this rank loaded anything (others' and its context).
        self._baseline_used: int | None = None

    def init_device(self) -> None:
        if self.config.device.type is DeviceType.cuda:
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
            self._check_free_memory()
        # Every rank seeds alike, so tensor-parallel ranks sample the same tokens.
        torch.manual_seed(self.config.model.seed)
        self.init_distributed_environment()
        self.model_runner = ModelRunner(self.config, self.device)

    def _check_free_memory(self) -> None:
        """Before any weight loads: the engine's share of the GPU must be free (vLLM's
        request_memory); the baseline also lets the profiling run measure non-torch growth."""
        free, total = torch.cuda.mem_get_info(self.device)
        self._baseline_used = total - free
        memory = DeviceMemory(free, total, name=str(self.device))
        problems = check_free_memory(self.config, memory)
        if problems:
            raise ConfigError(problems)

    def init_distributed_environment(self) -> None:
        """Join the engine's workers (gloo on CPU, nccl on CUDA) and build the tp/pp groups."""
        parallel = self.config.parallel
        if parallel.world_size > 1:
            assert self.distributed_init_method is not None, "the executor passes one"
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            init_distributed_environment(
                parallel.world_size, self.rank, self.distributed_init_method, backend
            )
        initialize_model_parallel(parallel.tp, parallel.pp, self.rank)

    def load_model(self) -> None:
        self._runner().load_model()

    def determine_available_memory(self) -> int:
        """Bytes this rank can give the KV cache.

        An explicit `cache.kv_cache_memory_gib` (the CPU default) is taken as it is. On CUDA
        otherwise: a profiling forward over the full token budget measures the torch peak and
        the non-torch growth, and the KV cache gets `memory_utilization` of the device less
        those, the CUDA context and the graph pool (config/device_memory.py).
        """
        explicit = self.config.cache.kv_cache_memory_gib
        if explicit is not None or self.device.type != "cuda":
            return int((explicit or 0) * GIB)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        self._runner().profile_run()
        peak = torch.cuda.max_memory_allocated(self.device)
        free, total = torch.cuda.mem_get_info(self.device)
        baseline = total - free if self._baseline_used is None else self._baseline_used
        grown = (total - free) - baseline
        non_torch = max(grown - torch.cuda.memory_reserved(self.device), 0)
        available = kv_budget_after_profiling(self.config, total, peak, non_torch)
        logger.info(
            "Memory: %.2f GiB planned, torch peak %.2f GiB, non-torch %.2f GiB after "
            "profiling, %.2f GiB for the KV cache",
            planned_device_bytes(self.config, total) / GIB,
            peak / GIB,
            non_torch / GIB,
            available / GIB,
        )
        return available

    def get_kv_cache_bytes_per_block(self) -> int:
        return self._runner().kv_cache_bytes_per_block()

    def initialize_from_config(self, num_blocks: int) -> None:
        self._runner().initialize_kv_cache(num_blocks)
        self.compile_or_warm_up_model()

    def compile_or_warm_up_model(self) -> None:
        """torch.compile's first compile or the CUDA graph capture, before serving."""
        self._runner().compile_or_warm_up_model()

    def execute_model(self, scheduler_output: SchedulerOutput) -> ModelRunnerOutput:
        return self._runner().execute_model(scheduler_output)

    def add_lora(self, lora_name: str, lora_int_id: int, lora_path: str) -> bool:
        return self._runner().add_lora(LoRARequest(lora_name, lora_int_id, lora_path))

    def remove_lora(self, lora_int_id: int) -> bool:
        return self._runner().remove_lora(lora_int_id)

    def _runner(self) -> ModelRunner:
        assert self.model_runner is not None, "init_device() runs first"
        return self.model_runner
