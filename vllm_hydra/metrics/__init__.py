"""Prometheus metrics (vLLM's `vllm:` names), periodic stats logging and request tracing."""
