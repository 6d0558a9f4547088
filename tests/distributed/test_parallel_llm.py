"""Greedy tokens through the offline LLM are identical for tp=1, tp=2, pp=2 and tp=2 x pp=2
(worker processes over gloo), on Llama (3 layers: an uneven pp split) and Qwen2 (1 KV head:
replicated under tp=2)."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from tests.distributed.conftest import Completion, generate

LAYOUTS = {
    "tp2": ["parallel.tp=2"],
    "pp2": ["parallel.pp=2"],
    "tp2_pp2": ["parallel.tp=2", "parallel.pp=2"],
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_parallel_greedy_tokens_match_tp1(
    parallel_checkpoints: dict[str, Path],
    reference: dict[str, list[Completion]],
    kind: str,
    layout: str,
) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    assert generate(parallel_checkpoints[kind], *LAYOUTS[layout]) == reference[kind]
    leftover = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert not [p for p in leftover if "resource_tracker" not in " ".join(p.cmdline())]
