"""Triton kernels for paged attention: the cache write and the unified attention kernel."""
