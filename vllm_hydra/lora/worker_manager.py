"""`WorkerLoRAManager`: the worker's adapters: a host LRU cache of `max_cpu_loras` loaded
adapters in front of the device slots, and each step's token -> slot mapping.

An adapter is read from its directory the first time a step needs it (or when `add_adapter`
preloads it); evicted from the host cache, it is read again when next needed.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.lora.lora_model import LoRAModel
from vllm_hydra.lora.model_manager import LoRAModelManager
from vllm_hydra.lora.punica_wrapper import NO_LORA, PunicaWrapper
from vllm_hydra.lora.request import LoRARequest

logger = logging.getLogger(__name__)

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def lora_torch_dtype(config: VllmConfig) -> torch.dtype:
    """lora.lora_dtype, `auto` being the model's dtype."""
    name = config.lora.lora_dtype.value
    return TORCH_DTYPES[config.model.dtype.value if name == "auto" else name]


class WorkerLoRAManager:
    def __init__(self, model: nn.Module, vllm_config: VllmConfig, device: torch.device) -> None:
        lora = vllm_config.lora
        self.arch = vllm_config.arch
        self.max_lora_rank = lora.max_lora_rank
        self.capacity = lora.cpu_cache_size
        self.dtype = lora_torch_dtype(vllm_config)
        use_triton = device.type == "cuda"
        self.punica = PunicaWrapper(device, use_triton=use_triton)
        self.model_manager = LoRAModelManager(
            model, lora.max_loras, lora.max_lora_rank, self.dtype, self.punica
        )
        # Adapter id -> its weights on the host, least recently used first.
        self.host_cache: OrderedDict[int, LoRAModel] = OrderedDict()
        self.num_disk_loads = 0  # adapters read from disk since start (tests, logs)

    def add_adapter(self, request: LoRARequest) -> bool:
        """Read the adapter into the host cache now (a runtime load); raises LoRAAdapterError."""
        self._get(request)
        return True

    def remove_adapter(self, lora_int_id: int) -> bool:
        self.model_manager.deactivate(lora_int_id)
        return self.host_cache.pop(lora_int_id, None) is not None

    def _get(self, request: LoRARequest) -> LoRAModel:
        lora = self.host_cache.get(request.lora_int_id)
        if lora is not None:
            self.host_cache.move_to_end(request.lora_int_id)
            return lora
        lora = LoRAModel.from_local_checkpoint(
            request.lora_path, request.lora_int_id, self.arch, self.max_lora_rank, self.dtype
        )
        self.num_disk_loads += 1
        logger.info("LoRA adapter %s loaded from %s", request.lora_name, request.lora_path)
        self.host_cache[request.lora_int_id] = lora
        while len(self.host_cache) > self.capacity:
            self.host_cache.popitem(last=False)
        return lora

    def set_active_adapters(
        self, row_requests: Sequence[LoRARequest | None], num_scheduled: np.ndarray
    ) -> None:
        """Put this step's adapters in slots and map every token to its row's slot."""
        needed = {r.lora_int_id for r in row_requests if r is not None}
        row_slots = np.full(len(row_requests), NO_LORA, dtype=np.int32)
        for row, request in enumerate(row_requests):
            if request is not None:
                row_slots[row] = self.model_manager.activate(self._get(request), needed)
        self.punica.update_metadata(np.repeat(row_slots, num_scheduled))
