"""Greedy tokens through the offline LLM are identical for tp=1, tp=2, pp=2 and tp=2 x pp=2
(worker processes over gloo), on Llama (3 layers: an uneven pp split) and Qwen2 (1 KV head:
replicated under tp=2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.distributed.conftest import ENGINE_OVERRIDES, Completion, generate, prompts
from vllm_hydra import LLM, SamplingParams

REPO = Path(__file__).resolve().parents[2]

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


def test_pipeline_batch_queue_survives_preemption(parallel_checkpoints: dict[str, Path]) -> None:
    """pp=2 keeps two batches in flight; with 12 KV blocks requests are preempted while an
    earlier batch that holds them is still running, and the tokens stay those of pp=1."""
    # 8 usable blocks: 128 tokens, one max_model_len request, half of what the batch needs.
    tight = ("cache.num_blocks_override=9", "cache.enable_prefix_caching=false")
    params = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
    llama = parallel_checkpoints["llama"]
    tokens, stats = {}, {}
    for name, layout in (("pp1", ()), ("pp2", ("parallel.pp=2",))):
        llm = LLM([f"model.path={llama}", *ENGINE_OVERRIDES, *tight, *layout])
        try:
            outputs = llm.generate(prompts(), params, use_tqdm=False)
            stats[name] = llm.engine_core.call_utility("get_stats")
        finally:
            llm.engine_core.shutdown()
        tokens[name] = [o.outputs[0].token_ids for o in outputs]
    assert stats["pp2"]["num_preemptions"] > 0
    assert tokens["pp2"] == tokens["pp1"]


CLOSE_AT_EXIT = """
from vllm_hydra import LLM, SamplingParams
llm = LLM({overrides!r})
llm.generate([[5, 6, 7]], SamplingParams(max_tokens=1), use_tqdm=False)
print("generated")
"""  # no shutdown(): the interpreter's exit closes it, as a user's script does


def test_a_tp2_llm_closed_normally_logs_no_failure(parallel_checkpoints: dict[str, Path]) -> None:
    """Closed by the interpreter's exit (its finalizer, not shutdown()), an offline LLM's
    workers exit as asked: no "Executor failed: worker process ... exited with code 0/-15"."""
    overrides = [f"model.path={parallel_checkpoints['llama']}", *ENGINE_OVERRIDES, *LAYOUTS["tp2"]]
    script = CLOSE_AT_EXIT.format(overrides=overrides)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert done.returncode == 0 and "generated" in done.stdout, done.stderr
    assert "Executor failed" not in done.stderr and "exited with code" not in done.stderr
