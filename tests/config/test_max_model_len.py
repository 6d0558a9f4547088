"""model.max_model_len: unset (the model's limit) or auto (what the KV cache holds)."""

from __future__ import annotations

from vllm_hydra.config import compose_config, plan_memory


def test_unset_is_the_models_limit(write_checkpoint) -> None:
    config = compose_config([f"model.path={write_checkpoint()}", "device=cpu"])
    assert config.model.max_model_len == config.arch.max_model_len_limit == 2048
    assert config.max_model_len_reason.startswith("unset: the model's limit")


def test_auto_fits_a_small_kv_cache(write_checkpoint) -> None:
    # 0.001 GiB of 32 KiB blocks (4 layers x 2 KV heads x 64 dims x K,V x bf16 x 16 tokens):
    # 32 blocks, 31 usable after the null block: 496 tokens.
    overrides = ["device=cpu", "model.dtype=bfloat16", "cache.kv_cache_memory_gib=0.001"]
    config = compose_config(
        [f"model.path={write_checkpoint()}", "model.max_model_len=auto", *overrides]
    )
    plan = plan_memory(config)
    assert plan.kv_bytes_per_block == 4 * 2 * 64 * 2 * 2 * 16
    assert config.model.max_model_len == plan.kv_cache_tokens == 31 * 16
    assert plan.max_concurrency == 1.0
    assert "auto: the KV cache holds 496 tokens (cache.kv_cache_memory_gib)" in (
        config.max_model_len_reason
    )


def test_auto_is_capped_by_the_model(write_checkpoint) -> None:
    config = compose_config(
        [f"model.path={write_checkpoint()}", "device=cpu", "model.max_model_len=-1"]
    )
    assert config.model.max_model_len == 2048
    assert config.max_model_len_reason.startswith("auto: the model's limit")


def test_auto_on_a_24_gib_gpu() -> None:
    """Llama 3 8B on a 24 GiB GPU at utilization 0.9: the KV cache holds less than 8K tokens
    per request only with a long prefill budget; auto keeps within what it holds."""
    config = compose_config(
        [
            "model=llama3",
            "device=cuda",
            "device.memory_gib=24",
            "dry_run=true",
            "model.max_model_len=auto",
            "cache.memory_utilization=0.7",
        ]
    )
    plan = plan_memory(config)
    assert config.model.max_model_len == min(8192, plan.kv_cache_tokens)
