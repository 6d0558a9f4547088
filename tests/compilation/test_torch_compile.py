"""compilation.mode=torch_compile gives the eager model's greedy tokens on a tiny random model,
runs the CPU kernels and the packed oneDNN GEMMs as torch operators (no fallback to the torch
paths or to an `mm` on the plain weight; attention is an operator in the one graph, so no
graph break), and the token dimension stays dynamic: batches of many sizes reuse a bounded
set of graphs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch.profiler import profile

from tests.model_factory import write_random_checkpoint
from vllm_hydra import LLM, SamplingParams
from vllm_hydra.compilation.torch_compile import RECOMPILE_LIMIT, set_cache_dir

NUM_NEW_TOKENS = 10


def _llm(checkpoint: Path, mode: str, cache_dir: Path) -> LLM:
    overrides = [
        f"model.path={checkpoint}",
        "model.dtype=bfloat16",  # the dtype the elementwise CPU kernels run in
        "device=cpu",
        "model.max_model_len=128",
        "cache.num_blocks_override=64",  # a small cache: less memory and faster steps
        "scheduler.max_num_batched_tokens=32",  # chunked prefills: many different batch sizes
        "scheduler.max_num_seqs=8",
        f"compilation={mode}",
    ]
    if mode == "torch_compile":
        overrides.append(f"compilation.cache_dir={cache_dir}")
    return LLM(overrides)


def _greedy(llm: LLM, lengths: tuple[int, ...] = (4, 9, 17, 30)) -> list[list[int]]:
    gen = torch.Generator().manual_seed(5)
    prompts = [torch.randint(3, 4096, (n,), generator=gen).tolist() for n in lengths]
    params = SamplingParams(temperature=0.0, max_tokens=NUM_NEW_TOKENS, ignore_eos=True)
    return [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]


def _num_graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


# The CPU kernels' operators, and the torch ops of the paths they replace (RMSNorm's rsqrt,
# SiLU, rotary's concatenation of the rotated halves, a GEMM on the unpacked weight).
KERNEL_OPS = {
    "vllm_hydra::unified_attention",
    "vllm_hydra::onednn_linear",
    "vllm_hydra::rms_norm",
    "vllm_hydra::fused_add_rms_norm",
    "vllm_hydra::silu_and_mul",
    "vllm_hydra::rotary_embedding",
}
TORCH_PATH_OPS = {"aten::rsqrt", "aten::silu", "aten::cat", "aten::mm", "aten::addmm"}


def _op_counts(prof: profile) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in prof.events():
        if event.name in KERNEL_OPS | TORCH_PATH_OPS:
            counts[event.name] = counts.get(event.name, 0) + 1
    return counts


def test_torch_compile_greedy_matches_eager(tmp_path: Path) -> None:
    checkpoint = write_random_checkpoint("llama", tmp_path / "llama")
    expected = _greedy(_llm(checkpoint, "none", tmp_path))
    assert len({tuple(t) for t in expected}) == len(expected), "reference outputs must vary"
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    llm = _llm(checkpoint, "torch_compile", tmp_path / "inductor")
    graphs = _num_graphs()  # compiled at start-up (the warm-up)
    assert 0 < graphs <= RECOMPILE_LIMIT * 4
    # One graph per model: attention is an operator in it (vllm_hydra::unified_attention), so
    # Dynamo breaks nowhere (no resumed frames, each with its own guards, per layer).
    breaks = torch._dynamo.utils.counters["graph_break"]
    assert not breaks, dict(breaks)
    with profile() as prof:
        assert _greedy(llm) == expected
    counts = _op_counts(prof)
    assert counts.keys() >= KERNEL_OPS, counts  # every kernel ran inside the compiled graphs
    assert not counts.keys() & TORCH_PATH_OPS, counts  # and no step fell back to torch's ops
    # Other prompt lengths, so other batch sizes: no step compiles anything new.
    _greedy(llm, lengths=(6, 11, 23))
    assert _num_graphs() == graphs
    assert any((tmp_path / "inductor").iterdir()), "the Inductor cache goes to cache_dir"


def test_cache_dir_defaults_to_the_user_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir as inductor_default

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", inductor_default())  # Inductor's own default
    expected = tmp_path / "xdg" / "vllm_hydra" / "torch_compile"
    assert set_cache_dir(None) == expected and expected.is_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(expected)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))  # the user's choice
    assert set_cache_dir(None) == tmp_path / "mine"
    assert set_cache_dir(str(tmp_path / "cfg")) == tmp_path / "cfg"  # compilation.cache_dir
