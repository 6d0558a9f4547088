"""Human-readable sizes: token counts (32k, 32K) and bytes (512MiB, 4GB), or a refusal."""

from __future__ import annotations

import pytest

from vllm_hydra.config import ConfigError, compose_config
from vllm_hydra.config.sizes import (
    MAX_MODEL_LEN_AUTO,
    SizeError,
    parse_bytes,
    parse_max_model_len,
    parse_token_count,
)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        (2048, 2048),
        ("2048", 2048),
        ("32k", 32_000),
        ("32K", 32_768),
        ("1.5k", 1500),
        ("1M", 1 << 20),
    ],
)
def test_token_counts(text: object, tokens: int) -> None:
    assert parse_token_count("k", text) == tokens


@pytest.mark.parametrize("text", ["abc", "1.3K", "32kb", "", True, 1.5])
def test_what_is_not_a_token_count(text: object) -> None:
    with pytest.raises(SizeError, match=r"k=.* is not a token count.*k=32k \(32,000\)"):
        parse_token_count("k", text)


@pytest.mark.parametrize(
    ("text", "unit", "value"),
    [
        (4, 1 << 30, 4),
        ("512MiB", 1 << 30, 0.5),
        ("4GB", 1, 4_000_000_000),
        ("1G", 1, 1 << 30),
        ("32 MiB", 1, 32 << 20),
        ("100", 1, 100),
    ],
)
def test_byte_sizes(text: object, unit: int, value: float) -> None:
    assert parse_bytes("b", text, unit) == value


def test_what_is_not_a_byte_size() -> None:
    with pytest.raises(SizeError, match=r"b='4 parsecs' is not a size.*b=512MiB"):
        parse_bytes("b", "4 parsecs")


def test_max_model_len_takes_auto() -> None:
    assert parse_max_model_len("model.max_model_len", "auto") == MAX_MODEL_LEN_AUTO
    assert parse_max_model_len("model.max_model_len", -1) == MAX_MODEL_LEN_AUTO
    with pytest.raises(SizeError, match=r"model\.max_model_len=auto for what the KV cache holds"):
        parse_max_model_len("model.max_model_len", "long")


def test_sizes_through_the_config(write_checkpoint) -> None:
    config = compose_config(
        [
            f"model.path={write_checkpoint()}",
            "model.max_model_len=1K",
            "scheduler.max_num_batched_tokens=4k",
            "cache.kv_cache_memory_gib=64MiB",
            "server.max_request_body_bytes=1MiB",
        ]
    )
    assert config.model.max_model_len == 1024
    assert config.scheduler.max_num_batched_tokens == 4000
    assert config.cache.kv_cache_memory_gib == 1 / 16
    assert config.server.max_request_body_bytes == 1 << 20


def test_every_bad_size_is_reported_at_once(write_checkpoint) -> None:
    with pytest.raises(ConfigError) as e:
        compose_config(
            [
                f"model.path={write_checkpoint()}",
                "model.max_model_len=lots",
                "cache.kv_cache_memory_gib=12XB",
                "scheduler.max_num_seqs=0",
            ]
        )
    message = str(e.value)
    assert "3 config errors" in message
    assert "model.max_model_len='lots' is not a token count" in message
    assert "cache.kv_cache_memory_gib='12XB' is not a size" in message
