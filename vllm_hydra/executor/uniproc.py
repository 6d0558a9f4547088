"""`UniProcExecutor`: one worker, in the engine core's own process."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from vllm_hydra.core.sched_output import SchedulerOutput
from vllm_hydra.executor.abstract import Executor
from vllm_hydra.outputs import ModelRunnerOutput
from vllm_hydra.worker.worker import Worker


class UniProcExecutor(Executor):
    def _init_executor(self) -> None:
        self.worker = Worker(self.config)
        self.worker.init_device()
        self.worker.load_model()

    def collective_rpc(self, method: str, *args: Any) -> list[Any]:
        return [getattr(self.worker, method)(*args)]

    def determine_available_memory(self) -> int:
        return self.worker.determine_available_memory()

    def get_kv_cache_bytes_per_block(self) -> int:
        return self.worker.get_kv_cache_bytes_per_block()

    def initialize_from_config(self, num_blocks: int) -> None:
        self.worker.initialize_from_config(num_blocks)

    def execute_model(
        self, scheduler_output: SchedulerOutput, non_block: bool = False
    ) -> ModelRunnerOutput | Future[ModelRunnerOutput]:
        output = self.worker.execute_model(scheduler_output)
        if not non_block:
            return output
        future: Future[ModelRunnerOutput] = Future()
        future.set_result(output)
        return future

    def shutdown(self) -> None:
        """The worker lives in this process: nothing to stop."""
