"""`OpenAIServingModels`: the model names this server answers to (the base model and its LoRA
adapters), GET /v1/models, and the runtime adapter load/unload endpoints."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import TypeVar

from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.entrypoints.openai.errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
)
from vllm_hydra.entrypoints.openai.lora_protocol import (
    LoadLoRAAdapterRequest,
    UnloadLoRAAdapterRequest,
)
from vllm_hydra.entrypoints.openai.protocol import ModelCard, ModelList
from vllm_hydra.lora.request import LoRARequest
from vllm_hydra.sampling_params import SamplingParamsError

T = TypeVar("T")

# Checks an adapter against the model (reads its weights); raises SamplingParamsError.
LoRAChecker = Callable[[LoRARequest], None]


class OpenAIServingModels:
    def __init__(self, vllm_config: VllmConfig) -> None:
        self.served_model_name = vllm_config.served_model_name
        self.model_path = str(vllm_config.model.path)
        self.max_model_len = vllm_config.model.max_model_len
        lora = vllm_config.lora
        self.lora_enabled = lora.enabled
        self.allow_runtime_updates = lora.enabled and lora.allow_runtime_updates
        # Ids are never reused, so a worker never mistakes a new adapter for an old one.
        self._lora_ids = itertools.count(1)
        self.lora_requests: dict[str, LoRARequest] = {
            name: LoRARequest(name, next(self._lora_ids), path)
            for name, path in lora.adapters.items()
        }
        # Adapter name -> its requests in flight (an adapter in use cannot be unloaded).
        self.in_flight: Counter[str] = Counter()

    def model_name(self, model: str | None) -> str:
        """The `model` a response names: the adapter the request ran, else the base model
        (vLLM answers with the adapter's name)."""
        return (
            model if model is not None and model in self.lora_requests else self.served_model_name
        )

    def check_model(self, model: str | None) -> LoRARequest | None:
        """The adapter `model` names (None: the base model); a 404 for a model this server
        does not serve. None as `model` means the served one."""
        if model is None or model == self.served_model_name:
            return None
        lora_request = self.lora_requests.get(model)
        if lora_request is None:
            raise NotFoundError(
                f"The model `{model}` does not exist.", param="model", code="model_not_found"
            )
        return lora_request

    def show_available_models(self) -> ModelList:
        base = ModelCard(
            id=self.served_model_name, root=self.model_path, max_model_len=self.max_model_len
        )
        adapters = [
            ModelCard(
                id=name,
                root=lora.lora_path,
                parent=self.served_model_name,
                max_model_len=self.max_model_len,
            )
            for name, lora in self.lora_requests.items()
        ]
        return ModelList(data=[base, *adapters])

    async def track(self, lora_name: str, outputs: AsyncIterator[T]) -> AsyncIterator[T]:
        """Pass `outputs` on, counting the request in flight for its adapter meanwhile."""
        self.in_flight[lora_name] += 1
        try:
            async with aclosing(outputs):  # type: ignore[type-var]
                async for output in outputs:
                    yield output
        finally:
            self.in_flight[lora_name] -= 1

    # ---- runtime updates ----

    async def load_lora_adapter(
        self, request: LoadLoRAAdapterRequest, check: LoRAChecker
    ) -> LoRARequest:
        """Serve the adapter under its name once `check` accepts it (a 4xx otherwise)."""
        self._check_runtime_updates()
        name = request.lora_name
        if name == self.served_model_name or name in self.lora_requests:
            raise BadRequestError(
                f"The model `{name}` is already served; unload it first or pick another name.",
                param="lora_name",
                code="lora_adapter_exists",
            )
        lora_request = LoRARequest(name, next(self._lora_ids), request.lora_path)
        try:
            await asyncio.to_thread(check, lora_request)
        except SamplingParamsError as e:
            kind = getattr(e.__cause__, "kind", "invalid_lora_adapter")
            raise BadRequestError(str(e), param="lora_path", code=kind) from e
        self.lora_requests[name] = lora_request
        return lora_request

    def unload_lora_adapter(self, request: UnloadLoRAAdapterRequest) -> LoRARequest:
        """Stop serving the adapter (a 4xx if unknown or in use); the adapter removed."""
        self._check_runtime_updates()
        name = request.lora_name
        lora_request = self.lora_requests.get(name)
        if lora_request is None or request.lora_int_id not in (None, lora_request.lora_int_id):
            raise NotFoundError(
                f"The LoRA adapter `{name}` cannot be found.",
                param="lora_name",
                code="lora_adapter_not_found",
            )
        if self.in_flight[name]:
            raise ConflictError(
                f"The LoRA adapter `{name}` has {self.in_flight[name]} requests in flight; "
                f"unload it once they finish.",
                param="lora_name",
                code="lora_adapter_busy",
            )
        return self.lora_requests.pop(name)

    def _check_runtime_updates(self) -> None:
        if self.allow_runtime_updates:
            return
        how = "" if self.lora_enabled else "lora=enabled "
        raise PermissionDeniedError(
            f"Loading and unloading LoRA adapters at run time is off: start the server with "
            f"{how}lora.allow_runtime_updates=true.",
            code="lora_runtime_updates_disabled",
        )
