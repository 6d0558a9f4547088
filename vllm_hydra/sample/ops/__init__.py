"""Batched tensor operations on logits that the sampler composes."""
