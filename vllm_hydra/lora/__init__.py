"""LoRA adapters: many fine-tunes of one base model served at once, mixed in one batch.

`LoRARequest` names a request's adapter; `peft_helper` and `lora_model` read PEFT adapters;
`layers` wrap the decoder's parallel linears; `model_manager` owns the device slots (LRU),
`worker_manager` the host cache and each step's token -> slot mapping; `ops/` computes
shrink/expand (torch anywhere, Triton on CUDA).
"""

from vllm_hydra.lora.request import LoRARequest

__all__ = ["LoRARequest"]
