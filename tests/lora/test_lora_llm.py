"""Offline LLM with adapters: base and adapters mixed in one batch give transformers + peft's
greedy tokens per request (fp32); max_loras=2 with five adapters round-robin evicts and
reloads; prefix caching keeps two adapters' blocks apart; tp=2 shards A and B."""

from __future__ import annotations

from pathlib import Path

from tests.lora.conftest import ENGINE_OVERRIDES, NUM_NEW_TOKENS, prompts
from vllm_hydra import LLM, SamplingParams
from vllm_hydra.config import plan_memory
from vllm_hydra.lora.request import LoRARequest

GREEDY = SamplingParams(temperature=0.0, max_tokens=NUM_NEW_TOKENS, ignore_eos=True)


def _run(llm: LLM, jobs: list[tuple[int, str | None]], loras: dict[str, LoRARequest]):
    """Generate every (prompt index, adapter name or None) in one batch; the token ids."""
    all_prompts = prompts()
    outputs = llm.generate(
        [all_prompts[i] for i, _ in jobs],
        GREEDY,
        use_tqdm=False,
        lora_request=[loras[name] if name else None for _, name in jobs],
    )
    return [o.outputs[0].token_ids for o in outputs]


def _lora_manager(llm: LLM):
    return llm.engine_core.engine_core.model_executor.worker.model_runner.lora_manager


def test_base_and_three_adapters_in_one_batch(
    lora_base: Path, lora_requests: dict[str, LoRARequest], references: dict
) -> None:
    llm = LLM([f"model.path={lora_base}", *ENGINE_OVERRIDES, "lora.max_loras=3"])
    names = [None, "all", "attn_rs", "mlp"]
    jobs = [(i, name) for name in names for i in range(len(prompts()))]
    tokens = _run(llm, jobs, lora_requests)
    for (i, name), got in zip(jobs, tokens, strict=True):
        assert got == references[name][i], f"prompt {i}, adapter {name}"
    # The memory plan counts exactly the slots the LoRA layers hold.
    layers = _lora_manager(llm).model_manager.modules.values()
    stacked = [t for m in layers for t in (*m.lora_a_stacked, *m.lora_b_stacked)]
    assert plan_memory(llm.config).lora_bytes == sum(t.numel() * t.element_size() for t in stacked)


def test_five_adapters_round_robin_through_two_slots_and_prefix_cache(
    lora_base: Path, lora_requests: dict[str, LoRARequest], references: dict
) -> None:
    llm = LLM(
        [f"model.path={lora_base}", *ENGINE_OVERRIDES, "lora.max_loras=2", "lora.max_cpu_loras=3"]
    )
    names = list(lora_requests)
    for wave in range(2):  # the second wave needs the adapters the first evicted
        jobs = [((k + wave) % len(prompts()), name) for k, name in enumerate(names)]
        tokens = _run(llm, jobs, lora_requests)
        for (i, name), got in zip(jobs, tokens, strict=True):
            assert got == references[name][i], f"prompt {i}, adapter {name}"
    manager = _lora_manager(llm)
    assert manager.model_manager.num_slot_loads > 5  # evicted from a slot and loaded again
    assert manager.num_disk_loads > 5  # evicted from the host cache (3) and read again
    # Prefix caching (on by default): one prompt, one at a time, under two adapters and the
    # base model; each finds the blocks of its own earlier run only.
    stats = llm.engine_core.engine_core.scheduler.kv_cache_manager.prefix_cache_stats
    hits_before = stats.hits
    for name in ("all", "attn_rs", None, "all"):
        assert _run(llm, [(2, name)], lora_requests) == [references[name][2]], name
    assert stats.hits > hits_before
    # Runtime updates reach the workers: a preload reads from disk, an unload frees the slot.
    core, fourth = llm.engine_core.engine_core, lora_requests["fourth"]
    core.remove_lora(fourth.lora_int_id)
    assert fourth.lora_int_id not in manager.model_manager.active
    assert fourth.lora_int_id not in manager.host_cache
    loads = manager.num_disk_loads
    assert core.add_lora(fourth.lora_name, fourth.lora_int_id, fourth.lora_path)
    assert fourth.lora_int_id in manager.host_cache and manager.num_disk_loads == loads + 1


def test_tensor_parallel_2_shards_a_and_b(
    lora_base: Path, lora_requests: dict[str, LoRARequest], references: dict
) -> None:
    """Column-parallel layers split B (q/k/v, gate/up by part), row-parallel ones split A and
    all-reduce the rank-r sums: every rank's share adds up to the adapter's output."""
    llm = LLM([f"model.path={lora_base}", *ENGINE_OVERRIDES, "lora.max_loras=3", "parallel.tp=2"])
    try:
        jobs = [(i, name) for name in (None, "all", "attn_rs", "mlp") for i in (1, 2)]
        tokens = _run(llm, jobs, lora_requests)
    finally:
        llm.shutdown()
    for (i, name), got in zip(jobs, tokens, strict=True):
        assert got == references[name][i], f"prompt {i}, adapter {name}"
