"""Fixtures of the model tests: tiny random checkpoints written with save_pretrained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tiny_checkpoints import MakeCheckpoint, build_hf_model


@pytest.fixture
def make_checkpoint(tmp_path: Path) -> MakeCheckpoint:
    """make_checkpoint(family, name="ckpt", max_shard_size=None, **changes) -> (dir, hf_model)."""

    def make(
        family: str, name: str = "ckpt", max_shard_size: str | None = None, **changes: Any
    ) -> tuple[Path, Any]:
        model = build_hf_model(family, **changes)
        path = tmp_path / name
        kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
        model.save_pretrained(path, **kwargs)
        return path, model

    return make
