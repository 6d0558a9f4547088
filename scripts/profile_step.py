"""Where a decode step's time goes: GEMMs, attention, elementwise kernels, sampler, host overhead.

    python scripts/profile_step.py model=bench-125m load=dummy            # batch 64, 20 steps
    python scripts/profile_step.py --batch 32 --steps 50 model=bench-125m load=dummy

Builds an in-process `EngineCore` from the composed config (the same overrides as serve.py),
adds `--batch` requests of `--prompt-len` random tokens, steps until every one is decoding,
then times `--steps` decode steps with a timer around each part (the parts are wrapped in this
script; the engine has no timers of its own). Host overhead is the step minus the model's math
(its forward and the LM head) and the sampler's: scheduling, the runner's input preparation,
attention metadata, sampling metadata, output handling. Prints a markdown table, ms per step.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from vllm_hydra.attention import layer as attention_layer
from vllm_hydra.config.compose import compose_config
from vllm_hydra.core.scheduler import Scheduler
from vllm_hydra.engine.core import EngineCore
from vllm_hydra.engine.messages import EngineCoreRequest
from vllm_hydra.model_executor.layers.activation import SiluAndMul
from vllm_hydra.model_executor.layers.layernorm import RMSNorm
from vllm_hydra.model_executor.layers.rotary_embedding import RotaryEmbedding
from vllm_hydra.sample.sampler import Sampler
from vllm_hydra.sampling_params import SamplingParams
from vllm_hydra.worker import model_runner as model_runner_module
from vllm_hydra.worker.input_batch import InputBatch
from vllm_hydra.worker.model_runner import ModelRunner

# part -> (owner, attribute): each call's wall time is added to the part.
TIMED = {
    "step": (EngineCore, "step"),
    "forward": (ModelRunner, "_forward"),
    "lm_head": (ModelRunner, "_compute_logits"),
    "sampler": (Sampler, "forward"),
    "attention": (attention_layer, "_run_attention"),
    "rms_norm": (RMSNorm, "forward"),
    "silu_and_mul": (SiluAndMul, "forward"),
    "rotary": (RotaryEmbedding, "forward"),
    "schedule": (Scheduler, "schedule"),
    "update_from_output": (Scheduler, "update_from_output"),
    "update_states": (ModelRunner, "_update_states"),
    "prepare_inputs": (model_runner_module, "prepare_inputs"),
    "sampling_metadata": (InputBatch, "sampling_metadata"),
}


class Timers:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.on = False

    def wrap(self, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.on:
                return fn(*args, **kwargs)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - start

        return timed

    @contextlib.contextmanager
    def patched(self, engine: EngineCore) -> Iterator[None]:
        saved = [(owner, name, getattr(owner, name)) for owner, name in TIMED.values()]
        for part, (owner, name) in TIMED.items():
            setattr(owner, name, self.wrap(part, getattr(owner, name)))
        runner = engine.model_executor.worker.model_runner  # type: ignore[attr-defined]
        builder = runner.attn_metadata_builder
        builder.build = self.wrap("attn_metadata", builder.build)
        for module in runner.model.modules():
            if "gemm" in vars(module) or hasattr(type(module), "gemm"):
                module.gemm = self.wrap("gemm", module.gemm)
        try:
            yield
        finally:
            for owner, name, fn in saved:
                setattr(owner, name, fn)


def _requests(batch: int, prompt_len: int, vocab: int) -> list[EngineCoreRequest]:
    rng = np.random.default_rng(0)
    params = SamplingParams(temperature=0.0, max_tokens=4096, ignore_eos=True)
    return [
        EngineCoreRequest(
            f"r{i}", rng.integers(3, vocab, prompt_len).tolist(), params, None, time.time()
        )
        for i in range(batch)
    ]


def _decoding(engine: EngineCore, batch: int) -> bool:
    running = engine.scheduler.running
    return len(running) == batch and all(
        r.num_computed_tokens >= r.num_prompt_tokens for r in running
    )


def profile(engine: EngineCore, batch: int, prompt_len: int, steps: int) -> dict[str, float]:
    """ms per decode step of each part, over `steps` steps at `batch` decoding requests."""
    for request in _requests(batch, prompt_len, engine.config.arch.vocab_size):
        engine.add_request(request)
    while not _decoding(engine, batch):
        engine.step()
    for _ in range(3):  # first decode steps: one-time costs (allocations, compiled graphs)
        engine.step()
    timers = Timers()
    with timers.patched(engine):
        timers.on = True
        for _ in range(steps):
            engine.step()
        timers.on = False
    return {part: 1000 * s / steps for part, s in timers.seconds.items()}


def table(ms: dict[str, float]) -> str:
    def get(part: str) -> float:
        return ms.get(part, 0.0)

    elementwise = get("rms_norm") + get("silu_and_mul") + get("rotary")
    forward_gemm = get("gemm")  # the LM head's too: it runs inside _compute_logits
    model = get("forward") + get("lm_head")
    host = get("step") - model - get("sampler")
    host_parts = [
        "schedule",
        "update_from_output",
        "update_states",
        "prepare_inputs",
        "attn_metadata",
        "sampling_metadata",
    ]
    rows = [
        ("GEMMs (all linear layers and the LM head)", forward_gemm),
        ("attention (incl. the K/V cache write)", get("attention")),
        ("elementwise: RMSNorm, SiLU-and-mul, rotary", elementwise),
        (
            "rest of the model (embedding, views, graph glue)",
            model - forward_gemm - get("attention") - elementwise,
        ),
        ("sampler", get("sampler")),
        ("host overhead", host),
        *((f"  of which {p}", get(p)) for p in host_parts),
        ("  of which other (outputs, stats, Python)", host - sum(get(p) for p in host_parts)),
        ("step", get("step")),
    ]
    step = get("step")
    lines = ["| part | ms per step | share |", "|---|---:|---:|"]
    lines += [f"| {name} | {value:.2f} | {100 * value / step:.1f}% |" for name, value in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for serve.py")
    args = parser.parse_args()
    config = compose_config(args.overrides)
    engine = EngineCore(config)
    try:
        ms = profile(engine, args.batch, args.prompt_len, args.steps)
    finally:
        engine.shutdown()
    print(
        f"{config.model.name}, dtype {config.model.dtype.value}, batch {args.batch}, "
        f"prompt {args.prompt_len}, {args.steps} decode steps"
    )
    print(table(ms))


if __name__ == "__main__":
    main()
