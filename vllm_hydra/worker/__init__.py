"""Workers: one per rank, each owning a device, the model and its KV cache."""
