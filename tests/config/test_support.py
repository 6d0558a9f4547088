"""Valid settings the engine cannot honour yet are refused by a real run, never ignored."""

from __future__ import annotations

import pytest

from vllm_hydra.config import ConfigError, check_supported, compose_config, unsupported_features


def test_the_default_config_is_fully_supported() -> None:
    assert unsupported_features(compose_config([])) == []


def test_speculative_decoding_is_supported() -> None:
    assert unsupported_features(compose_config(["speculative=ngram"])) == []


def test_tensor_and_pipeline_parallelism_are_supported() -> None:
    config = compose_config(["dry_run=true", "parallel.tp=2", "parallel.pp=2"])
    assert unsupported_features(config) == []
    ray = compose_config(["dry_run=true", "parallel.backend=ray", "parallel.nnodes=2"])
    assert unsupported_features(ray) == []


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["parallel.tp=2", "compilation=torch_compile"], "compiling a sharded model"),
        (["lora=enabled", "compilation=torch_compile"], "compiled graphs do not follow"),
        (["speculative=ngram", "parallel.pp=2"], "speculative decoding across pipeline"),
        (
            ["speculative=ngram", "speculative.num_speculative_tokens=2", "parallel.tp=2"],
            None,
        ),
        (
            [
                "speculative=draft_model",
                "speculative.model=${asset:tiny-llama}",
                "parallel.tp=2",
                "speculative.draft_tensor_parallel_size=1",
            ],
            "a draft model on one rank of a sharded target",
        ),
        (["speculative=draft_model", "speculative.model=${asset:tiny-llama}"], None),
    ],
)
def test_real_runs_refuse_what_is_not_built(overrides: list[str], expected: str | None) -> None:
    config = compose_config(["dry_run=true", *overrides])
    if expected is None:  # supported
        check_supported(config)
        return
    with pytest.raises(ConfigError) as info:
        check_supported(config)
    assert expected in str(info.value)


def test_triton_attention_is_supported_and_auto_picks_it_on_cuda() -> None:
    config = compose_config(["dry_run=true", "device=cuda"])
    assert config.attention.backend.value == "triton"
    assert unsupported_features(config) == []


def test_compilation_modes_are_supported() -> None:
    assert unsupported_features(compose_config(["compilation=torch_compile"])) == []
    config = compose_config(["dry_run=true", "device=cuda", "compilation=cudagraph"])
    assert unsupported_features(config) == []
    assert config.compilation.cudagraph_capture_sizes == [1, 2, 4, *range(8, 129, 8)]
