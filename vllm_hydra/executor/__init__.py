"""Executors: how the engine core reaches its workers (in-process, processes, Ray)."""

from vllm_hydra.executor.abstract import Executor

__all__ = ["Executor"]
