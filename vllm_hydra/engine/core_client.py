"""Clients of the engine core. `InprocClient` runs it in the caller's process; the
multi-process clients (ZMQ) arrive with the serving pipeline."""

from __future__ import annotations

from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.engine.core import EngineCore
from vllm_hydra.engine.messages import EngineCoreOutputs, EngineCoreRequest


class InprocClient:
    """The engine core in this process: `get_output()` runs one step."""

    def __init__(self, vllm_config: VllmConfig) -> None:
        self.engine_core = EngineCore(vllm_config)

    def add_request(self, request: EngineCoreRequest) -> None:
        self.engine_core.add_request(request)

    def abort_requests(self, request_ids: list[str]) -> None:
        if request_ids:
            self.engine_core.abort_requests(request_ids)

    def get_output(self) -> EngineCoreOutputs:
        return self.engine_core.step()

    def shutdown(self) -> None:
        self.engine_core.shutdown()
