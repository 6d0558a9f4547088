"""The CUDA graph runner's static buffers and padded replay, checked on CPU.

A captured graph replays the kernels it recorded over the same buffers; here a stand-in replays
by running the forward again over those buffers (the Triton backend under the interpreter), so
what is tested is everything but the capture itself: padding a decode batch to the next size
(requests with no query tokens and cache slot -1), copying the step into the buffers, reading
the real rows back, and falling back to eager for prefills and for batches past the largest size.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tests.model_factory import write_random_checkpoint
from tests.triton_interpreter import requires_interpreter
from vllm_hydra import LLM, SamplingParams
from vllm_hydra.compilation.cuda_graph import CUDAGraphRunner, Replay

pytestmark = requires_interpreter


class EagerReplayRunner(CUDAGraphRunner):
    """Replays by re-running the forward over the static buffers; counts replays by size."""

    replayed: list[int]

    def _record(self, size: int) -> Replay:
        self.replayed = getattr(self, "replayed", [])

        def replay() -> None:
            self.outputs[size] = self._forward(size)
            self.replayed.append(size)

        self.outputs[size] = self._forward(size)
        return replay


def _generate(llm: LLM, lengths: tuple[int, ...]) -> list[list[int]]:
    gen = torch.Generator().manual_seed(7)
    prompts = [torch.randint(3, 4096, (n,), generator=gen).tolist() for n in lengths]
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    return [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]


def test_padded_replay_matches_eager(tmp_path: Path) -> None:
    checkpoint = write_random_checkpoint("llama", tmp_path / "llama")
    llm = LLM(
        [
            f"model.path={checkpoint}",
            "model.dtype=float32",
            "device=cpu",
            "model.max_model_len=64",
            "cache.num_blocks_override=64",  # small: the interpreter rewrites it per launch
            "attention.backend=triton",
            "scheduler.max_num_seqs=8",
        ]
    )
    lengths = (5, 12, 20, 3, 9, 30)  # decode steps of six requests
    expected = _generate(llm, lengths)
    runner = llm.engine_core.engine_core.model_executor.worker.model_runner

    def use_graphs(sizes: list[int]) -> EagerReplayRunner:
        graphs = EagerReplayRunner(
            runner.model,
            runner.kv_caches,
            sizes,
            64,
            runner.input_buffers,
            runner.input_batch.block_table,
        )
        graphs.capture()
        runner.cudagraph_runner = graphs
        return graphs

    graphs = use_graphs([1, 2, 4, 8])
    assert _generate(llm, lengths) == expected
    assert set(graphs.replayed) == {8}  # six decodes padded to 8; prefills ran eagerly
    graphs = use_graphs([1, 2, 4])
    assert _generate(llm, lengths) == expected
    assert graphs.replayed == []  # six is past the largest size: eager
