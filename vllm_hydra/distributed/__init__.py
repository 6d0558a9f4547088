"""Process groups for tensor parallelism (single process until issue 5)."""
