"""`LoRAModelManager`: wraps the model's linears in LoRA layers and owns the device slots.

`max_loras` slots hold adapters on the device. An adapter a step needs takes a free slot, or
the least recently used one that this step does not need (its weights are copied into every
LoRA layer); the scheduler never puts more than `max_loras` adapters in one step.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Collection

import torch
from torch import nn

from vllm_hydra.lora.layers import BaseLinearLayerWithLoRA, from_layer
from vllm_hydra.lora.lora_model import LoRALayerWeights, LoRAModel
from vllm_hydra.lora.punica_wrapper import PunicaWrapper

logger = logging.getLogger(__name__)

# The decoder's linears that get LoRA layers (their Hugging Face parts in packed_modules_mapping).
LORA_MODULES = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")


class LoRAModelManager:
    def __init__(
        self,
        model: nn.Module,
        max_loras: int,
        max_rank: int,
        dtype: torch.dtype,
        punica: PunicaWrapper,
    ) -> None:
        self.max_loras = max_loras
        self.punica = punica
        packed: dict[str, list[str]] = getattr(model, "packed_modules_mapping", {})
        # Hugging Face module name -> (our module name, slice index), e.g. k_proj -> (qkv_proj, 1).
        self.hf_to_packed = {
            part: (name, i) for name, parts in packed.items() for i, part in enumerate(parts)
        }
        self.modules = _wrap_modules(model, punica, max_loras, max_rank, dtype)
        # Slot -> adapter id (None: free); adapter id -> slot, least recently used first.
        self.slots: list[int | None] = [None] * max_loras
        self.active: OrderedDict[int, int] = OrderedDict()
        self.num_slot_loads = 0  # adapters copied into a slot since start (tests, logs)

    def slot_of(self, lora_int_id: int) -> int:
        return self.active[lora_int_id]

    def activate(self, lora: LoRAModel, needed: Collection[int]) -> int:
        """The slot holding `lora`, loading it first if it has none. Adapters in `needed`
        (this step's) are never evicted to make room."""
        if lora.lora_int_id in self.active:
            self.active.move_to_end(lora.lora_int_id)
            return self.active[lora.lora_int_id]
        slot = self._free_slot(needed)
        self._load_into_slot(slot, lora)
        self.slots[slot] = lora.lora_int_id
        self.active[lora.lora_int_id] = slot
        self.num_slot_loads += 1
        return slot

    def deactivate(self, lora_int_id: int) -> None:
        slot = self.active.pop(lora_int_id, None)
        if slot is None:
            return
        self.slots[slot] = None
        for module in self.modules.values():
            module.reset_lora(slot)

    def _free_slot(self, needed: Collection[int]) -> int:
        if None in self.slots:
            return self.slots.index(None)
        victim = next((i for i in self.active if i not in needed), None)
        if victim is None:
            raise RuntimeError(
                f"A step needs more than lora.max_loras={self.max_loras} adapters; the "
                f"scheduler keeps each step within it."
            )
        logger.debug("LoRA slot of adapter %d evicted (least recently used)", victim)
        slot = self.active.pop(victim)
        self.slots[slot] = None
        return slot

    def _load_into_slot(self, slot: int, lora: LoRAModel) -> None:
        per_module: dict[str, list[LoRALayerWeights | None]] = {}
        for hf_name, weights in lora.loras.items():
            prefix, part = hf_name.rsplit(".", 1)
            name, index = self.hf_to_packed.get(part, (part, 0))
            full_name = f"{prefix}.{name}"
            if full_name not in self.modules:  # a layer of another pipeline stage
                continue
            slices = per_module.setdefault(
                full_name, [None] * len(self.modules[full_name].output_slices)
            )
            slices[index] = weights
        for full_name, module in self.modules.items():
            module.set_lora(slot, per_module.get(full_name, []))


def _wrap_modules(
    model: nn.Module, punica: PunicaWrapper, max_loras: int, max_rank: int, dtype: torch.dtype
) -> dict[str, BaseLinearLayerWithLoRA]:
    """Replace each decoder linear by its LoRA layer, in place; name -> LoRA layer."""
    wrapped = {}
    for parent_name, parent in list(model.named_modules()):
        for child_name in LORA_MODULES:
            child = getattr(parent, child_name, None)
            if child is None:
                continue
            layer = from_layer(child, punica, max_loras, max_rank, dtype)
            if layer is None:
                continue
            setattr(parent, child_name, layer)
            wrapped[f"{parent_name}.{child_name}" if parent_name else child_name] = layer
    return wrapped
