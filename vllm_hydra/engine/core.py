"""`EngineCore`: the scheduler and the executor in one loop (vLLM's v1/engine/core.py).

`step()` schedules, executes and updates once. The KV cache is sized before the scheduler is
built: the executor reports the bytes it can spare per rank, and that many blocks are allocated.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from vllm_hydra.config.checks import check_kv_cache_fits
from vllm_hydra.config.errors import ConfigError
from vllm_hydra.config.memory_plan import plan_memory
from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.core.request import Request, RequestStatus
from vllm_hydra.core.scheduler import Scheduler
from vllm_hydra.engine.messages import EngineCoreOutputs, EngineCoreRequest
from vllm_hydra.executor.abstract import Executor

logger = logging.getLogger(__name__)


class EngineCore:
    def __init__(self, vllm_config: VllmConfig, executor_class: type[Executor] | None = None):
        self.config = vllm_config
        executor_class = executor_class or Executor.get_class(vllm_config)
        self.model_executor = executor_class(vllm_config)
        self.num_gpu_blocks = self._initialize_kv_caches()
        self.scheduler = Scheduler(vllm_config, self.num_gpu_blocks)

    def _initialize_kv_caches(self) -> int:
        start = time.perf_counter()
        per_block = self.model_executor.get_kv_cache_bytes_per_block()
        override = self.config.cache.num_blocks_override
        available = (
            override * per_block if override else self.model_executor.determine_available_memory()
        )
        num_blocks = override or max(available, 0) // per_block
        plan = dataclasses.replace(
            plan_memory(self.config), kv_budget_bytes=available, num_blocks=num_blocks
        )
        problems = check_kv_cache_fits(self.config, plan)
        if problems:
            raise ConfigError(problems)
        self.model_executor.initialize_from_config(num_blocks)
        logger.info(
            "KV cache: %d blocks, %d tokens; maximum concurrency for %d tokens per request: "
            "%.2fx (%.1f s)",
            num_blocks,
            plan.kv_cache_tokens,
            plan.max_model_len,
            plan.max_concurrency,
            time.perf_counter() - start,
        )
        return num_blocks

    def add_request(self, request: EngineCoreRequest) -> None:
        self.scheduler.add_request(Request.from_engine_core_request(request))

    def abort_requests(self, request_ids: list[str]) -> None:
        self.scheduler.finish_requests(request_ids, RequestStatus.FINISHED_ABORTED)

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished_requests()

    def step(self) -> EngineCoreOutputs:
        """Schedule, run and update once; the outputs of every request that moved."""
        if not self.scheduler.has_unfinished_requests():
            return EngineCoreOutputs(timestamp=time.monotonic())
        scheduler_output = self.scheduler.schedule()
        model_output = self.model_executor.execute_model(scheduler_output)
        outputs = self.scheduler.update_from_output(scheduler_output, model_output)
        return EngineCoreOutputs(outputs=outputs, timestamp=time.monotonic())

    def shutdown(self) -> None:
        self.model_executor.shutdown()
