"""Layer split across pipeline stages, and free ports."""

from __future__ import annotations

import socket

import pytest

from vllm_hydra.distributed.utils import get_open_port, get_pp_indices


@pytest.mark.parametrize(
    ("layers", "pp", "expected"),
    [
        (4, 2, [(0, 2), (2, 4)]),
        (3, 2, [(0, 2), (2, 3)]),  # the remainder goes before the last stage
        (5, 3, [(0, 2), (2, 4), (4, 5)]),
        (32, 1, [(0, 32)]),
    ],
)
def test_get_pp_indices_covers_every_layer_once(
    layers: int, pp: int, expected: list[tuple[int, int]]
) -> None:
    assert [get_pp_indices(layers, rank, pp) for rank in range(pp)] == expected


def test_get_open_port_can_be_bound() -> None:
    port = get_open_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
