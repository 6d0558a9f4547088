"""The engine core's bookkeeping (vLLM's v1/core): requests, the paged KV cache's blocks and the
scheduler that hands out one token budget per step. Pure Python: no tensors, no device.
"""
