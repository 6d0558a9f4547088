"""Hydra plugins that vllm_hydra ships (found by Hydra under the hydra_plugins namespace)."""
