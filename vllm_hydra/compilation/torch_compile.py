"""`compilation.mode=torch_compile`: the model forward under torch.compile, dynamic in tokens.

The whole model is one graph: each attention layer is the opaque operator
`vllm_hydra::unified_attention` (attention/layer.py), which runs the backend eagerly on the
step's metadata and KV cache from the forward context (the backends read host-side lengths and
launch their own kernels, which Dynamo must not trace). Everything around it (norms,
projections, rotary, MLP) is compiled by Inductor, once for any number of tokens: shapes are
dynamic, so a new batch size reuses the compiled code, and `RECOMPILE_LIMIT` bounds the graphs
kept per code object (past it, Dynamo falls back to eager).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

# Graphs per code object: the dynamic token count, a 1-token batch (which Dynamo specialises),
# the first layer (no residual yet) and a profiling run without metadata fit within this.
RECOMPILE_LIMIT = 8

# model(input_ids, positions, kv_caches, attn_metadata[, intermediate_tensors])
ModelForward = Callable[..., Any]


def default_cache_dir() -> Path:
    """$TORCHINDUCTOR_CACHE_DIR if the user set it, else the user cache (XDG) under vllm_hydra/.

    Importing Inductor writes its own default (a per-user dir under /tmp) into that variable,
    so that value counts as unset.
    """
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir as inductor_default

    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if chosen and chosen != inductor_default():
        return Path(chosen)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "vllm_hydra" / "torch_compile"


def set_cache_dir(cache_dir: str | None) -> Path:
    """Point Inductor's on-disk cache (compiled kernels, FX graphs) at `cache_dir`, so a
    restart reuses the compiled code. Runs in the process that compiles, before compiling."""
    path = Path(cache_dir) if cache_dir else default_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    return path


def compile_model(model: nn.Module, cache_dir: str | None) -> ModelForward:
    """The model's forward under torch.compile; call it like the model."""
    path = set_cache_dir(cache_dir)
    torch._dynamo.config.recompile_limit = RECOMPILE_LIMIT
    logger.info("torch.compile: model forward, cache in %s", path)
    # dynamic=True: the graph is traced with a symbolic token count from its first call, so
    # no size triggers a recompile. No guards on the model's modules: nothing changes their
    # attributes once loaded (attention's per-step state is read inside its operator), and
    # checking every parameter's guard each step costs what a small model's step does.
    return torch.compile(
        model,
        dynamic=True,
        fullgraph=False,
        options={"guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe},
    )
