"""`Executor`: the engine core's handle on its workers, chosen by `parallel.backend`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from vllm_hydra.config.parallel import DistributedBackend
from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.core.sched_output import SchedulerOutput
from vllm_hydra.outputs import ModelRunnerOutput


class Executor(ABC):
    def __init__(self, vllm_config: VllmConfig) -> None:
        self.config = vllm_config
        self._init_executor()

    @staticmethod
    def get_class(vllm_config: VllmConfig) -> type[Executor]:
        backend = vllm_config.parallel.backend
        if backend is DistributedBackend.uni:
            from vllm_hydra.executor.uniproc import UniProcExecutor

            return UniProcExecutor
        if backend is DistributedBackend.mp:
            from vllm_hydra.executor.multiproc import MultiprocExecutor

            return MultiprocExecutor
        if backend is DistributedBackend.ray:
            from vllm_hydra.executor.ray import RayExecutor

            return RayExecutor
        raise ValueError(f"parallel.backend={backend.value} must be resolved first")

    @abstractmethod
    def _init_executor(self) -> None:
        """Start the workers, load the model."""

    @abstractmethod
    def determine_available_memory(self) -> int:
        """KV cache bytes per rank (the minimum over ranks)."""

    @abstractmethod
    def get_kv_cache_bytes_per_block(self) -> int: ...

    @abstractmethod
    def initialize_from_config(self, num_blocks: int) -> None:
        """Allocate `num_blocks` KV blocks on every rank."""

    @abstractmethod
    def execute_model(
        self, scheduler_output: SchedulerOutput, non_block: bool = False
    ) -> ModelRunnerOutput | Future[ModelRunnerOutput]:
        """Run one step; with `non_block` return a Future at once (for the batch queue)."""

    @property
    def max_concurrent_batches(self) -> int:
        """Steps that may be in flight at once: the EngineCore's batch queue size."""
        return 1

    def register_failure_callback(self, callback: Callable[[], None]) -> None:  # noqa: B027
        """Call `callback` (from any thread) once the workers fail; in-process workers cannot
        fail apart from the engine, so the default never calls it."""

    @abstractmethod
    def collective_rpc(self, method: str, *args: Any) -> list[Any]:
        """Call `method` on every rank's Worker; one result per rank, in rank order."""

    def add_lora(self, lora_name: str, lora_int_id: int, lora_path: str) -> bool:
        """Read an adapter into every rank's host cache (a runtime load)."""
        return all(self.collective_rpc("add_lora", lora_name, lora_int_id, lora_path))

    def remove_lora(self, lora_int_id: int) -> bool:
        """Drop an adapter from every rank's slots and host cache (a runtime unload)."""
        return all(self.collective_rpc("remove_lora", lora_int_id))

    @abstractmethod
    def shutdown(self) -> None:
        """Stop the workers."""
