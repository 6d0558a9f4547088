"""`cache.cache_dtype=fp8` and `cache.calculate_kv_scales` at the config stage."""

from __future__ import annotations

import pytest

from vllm_hydra.config import ConfigError, compose_config


@pytest.mark.parametrize("spelling", ["fp8", "fp8_e4m3"])
def test_fp8_cache_resolves_and_is_planned_at_one_byte(spelling: str) -> None:
    config = compose_config([f"cache.cache_dtype={spelling}", "cache.calculate_kv_scales=true"])
    assert config.cache.cache_dtype.value == spelling
    assert config.cache_dtype_bytes == 1


def test_calculate_kv_scales_needs_an_fp8_cache() -> None:
    with pytest.raises(ConfigError) as info:
        compose_config(["cache.cache_dtype=bfloat16", "cache.calculate_kv_scales=true"])
    message = str(info.value)
    assert "cache.calculate_kv_scales=true needs an fp8 KV cache" in message
    assert "cache.cache_dtype=bfloat16" in message and "Use cache.cache_dtype=fp8" in message


def test_an_fp8_format_the_engine_lacks_is_refused_with_the_choices() -> None:
    with pytest.raises(Exception) as info:
        compose_config(["cache.cache_dtype=fp8_e5m2"])
    message = f"{info.value} {info.value.__cause__}"
    assert "cache.cache_dtype" in message and "fp8, fp8_e4m3" in message
