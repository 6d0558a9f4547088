"""Attention backends: each pairs a KV cache layout with an implementation."""
