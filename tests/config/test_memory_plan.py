"""The memory plan's arithmetic, checked against hand-computed figures."""

from __future__ import annotations

from vllm_hydra.config import compose_config, plan_memory
from vllm_hydra.config.memory_plan import GIB


def test_llama3_8b_across_four_gpus() -> None:
    config = compose_config(["model=llama3", "device=cuda", "dry_run=true", "parallel.tp=4"])
    plan = plan_memory(config)
    assert config.arch.num_params() == 8_030_261_248  # Meta-Llama-3-8B's published count
    # 32 layers x (8 KV heads / 4 ranks) x 128 dims x K and V x 2 bytes
    assert plan.kv_bytes_per_token == 32 * 2 * 128 * 2 * 2 == 32_768
    assert plan.kv_bytes_per_block == 16 * 32_768
    assert plan.weight_bytes == 8_030_261_248 * 2 // 4
    assert plan.assumed_device_memory and plan.device_memory_bytes == 80 * GIB
    budget = int(80 * GIB * 0.9) - plan.weight_bytes - plan.activation_bytes - plan.reserves.total
    assert plan.kv_budget_bytes == budget
    assert plan.num_blocks == budget // plan.kv_bytes_per_block
    assert plan.max_concurrency == (plan.num_blocks - 1) / (8192 / 16)  # less the null block


def test_kv_heads_are_replicated_beyond_their_count() -> None:
    config = compose_config(["model=llama3", "device=cuda", "dry_run=true", "parallel.tp=16"])
    assert plan_memory(config).kv_bytes_per_token == 32 * 1 * 128 * 2 * 2


def test_pipeline_stages_split_the_layers() -> None:
    config = compose_config(["model=llama3", "device=cuda", "dry_run=true", "parallel.pp=3"])
    assert plan_memory(config).kv_bytes_per_token == 11 * 8 * 128 * 2 * 2  # ceil(32 / 3) layers


def test_cpu_plan_uses_the_explicit_kv_size(write_checkpoint) -> None:
    ckpt = write_checkpoint()
    overrides = ["device=cpu", "model.dtype=bfloat16", "cache.kv_cache_memory_gib=1"]
    config = compose_config([f"model.path={ckpt}", *overrides])
    plan = plan_memory(config)
    assert plan.device_memory_bytes is None
    assert plan.kv_bytes_per_token == 4 * 2 * 64 * 2 * 2
    assert plan.num_blocks == GIB // (16 * 2048)
    assert plan.budget_key == "cache.kv_cache_memory_gib"
    assert "KV cache blocks" in plan.describe()


def test_num_blocks_override_wins(write_checkpoint) -> None:
    ckpt = write_checkpoint()
    config = compose_config([f"model.path={ckpt}", "device=cpu", "cache.num_blocks_override=200"])
    plan = plan_memory(config)
    assert plan.num_blocks == 200
    assert plan.budget_key == "cache.num_blocks_override"


def test_every_dp_engine_has_its_own_kv_cache(write_checkpoint) -> None:
    ckpt = write_checkpoint()
    overrides = [f"model.path={ckpt}", "device=cpu", "cache.kv_cache_memory_gib=1"]
    single = plan_memory(compose_config(overrides))
    plan = plan_memory(compose_config([*overrides, "parallel.dp=2"]))
    assert plan.kv_budget_bytes == single.kv_budget_bytes == GIB  # the budget is per engine
    assert plan.num_blocks == single.num_blocks
    row = "data-parallel engines (parallel.dp=2)"
    assert row in plan.describe() and row not in single.describe()
    assert f"2 x the above: 2.00 GiB KV cache, {2 * plan.kv_cache_tokens:,} tokens" in (
        plan.describe()
    )


def test_lora_slots_are_planned_and_taken_from_the_kv_budget() -> None:
    base = ["model=llama3", "device=cuda", "dry_run=true", "parallel.tp=4"]
    without = plan_memory(compose_config(base))
    config = compose_config([*base, "lora=enabled", "lora.max_loras=4", "lora.max_lora_rank=16"])
    plan = plan_memory(config)
    # Per layer and rank, (A in + B out) of q, k, v, o, gate, up, down (B of q/k/v/gate/up and
    # A of o/down split 4 ways) x rank 16 x 4 slots x 2 bytes, x 32 layers.
    per_layer = (4096 + 1024) + 2 * (4096 + 256) + (1024 + 4096) + 2 * (4096 + 3584) + 3584 + 4096
    assert plan.lora_bytes == per_layer * 16 * 4 * 2 * 32 == 171_966_464
    assert plan.kv_budget_bytes == without.kv_budget_bytes - plan.lora_bytes
    assert "LoRA adapter slots per rank" in plan.describe()


def test_llama3_70b_awq_fits_one_80gb_gpu() -> None:
    """Issue 17: a dry run of Llama 3 70B in AWQ int4 (group 128) plans it on one 80 GB GPU,
    where the bf16 checkpoint needs four (test_checks.py)."""
    config = compose_config(["model=llama3-70b-awq", "device=cuda", "dry_run=true"])
    assert config.quantization_method == "awq"
    plan = plan_memory(config)
    h, inter, layers, vocab = 8192, 28672, 80, 128_256
    q, kv = 64 * 128, 8 * 128
    linear = h * (q + 2 * kv) + q * h + 3 * h * inter  # qkv, o, gate_up, down
    # (outputs, inputs) of each packed projection: one fp16 scale and zero point per 128 inputs.
    shapes = [(q + 2 * kv, h), (h, q), (2 * inter, h), (h, inter)]
    groups = sum(out * (inp // 128) for out, inp in shapes)
    norms = 2 * h
    per_layer = linear // 2 + groups * 2 * 2 + norms * 2
    expected = layers * per_layer + 2 * vocab * h * 2 + h * 2  # embedding, LM head, final norm
    assert abs(plan.weight_bytes - expected) <= layers * 2  # the plan spreads the final norm
    assert 37 * GIB < plan.weight_bytes < 38 * GIB
    assert plan.num_blocks > 0 and plan.max_concurrency >= 1  # room for full-length requests
    assert "weights per rank                               37.78 GiB" in plan.describe()
