"""The OpenAI-compatible HTTP API: protocol models, errors and the serving classes."""
