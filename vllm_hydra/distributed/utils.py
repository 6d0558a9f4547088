"""Helpers for setting up a distributed world: layer split across stages, free ports."""

from __future__ import annotations

import socket


def get_pp_indices(num_hidden_layers: int, pp_rank: int, pp_size: int) -> tuple[int, int]:
    """Layers [start, end) of stage `pp_rank` (vLLM's split).

    Uneven splits are allowed: the remainder goes one layer each to the stages just before the
    last, which also carries the final norm and the LM head.
    """
    partitions = [num_hidden_layers // pp_size] * pp_size
    for i in range(2, num_hidden_layers % pp_size + 2):
        partitions[-i] += 1
    start = sum(partitions[:pp_rank])
    return start, start + partitions[pp_rank]


def get_open_port(host: str = "127.0.0.1") -> int:
    """A TCP port free now on `host` (the OS picks it; never a fixed default)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def get_distributed_init_method(host: str, port: int) -> str:
    return f"tcp://{host}:{port}"
