"""The serving stage: the CLI entry point's helpers, the OpenAI-compatible server, offline LLM."""
