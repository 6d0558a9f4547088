"""Valid settings the engine cannot honour yet. A real run refuses them before loading anything.

The config stage accepts these values (they are valid, and a dry run plans them), but an engine
that started with them would silently ignore them. Each entry says so and names the issue that
builds it; the entry goes when that feature lands.
"""

from __future__ import annotations

from collections.abc import Callable

from vllm_hydra.config.compilation import CompilationMode
from vllm_hydra.config.errors import ConfigError
from vllm_hydra.config.speculative import SpeculativeMethod
from vllm_hydra.config.vllm import VllmConfig

# (is the setting in use?, what to tell the user)
_NOT_BUILT: tuple[tuple[Callable[[VllmConfig], bool], str], ...] = (
    (
        lambda c: c.compilation.mode is not CompilationMode.none and c.parallel.world_size > 1,
        "compilation.mode with parallel.tp/parallel.pp > 1: compiling a sharded model or "
        "capturing its graphs is not built yet. Use compilation=none with tp/pp > 1.",
    ),
    (
        lambda c: c.lora.enabled and c.compilation.mode is not CompilationMode.none,
        "lora.enabled=true with compilation.mode other than none: the LoRA layers gather "
        "per-adapter token groups each step, which compiled graphs do not follow yet. Use "
        "compilation=none with lora=enabled.",
    ),
    (
        lambda c: c.speculative.enabled and c.parallel.pp > 1,
        "speculative.method with parallel.pp > 1: speculative decoding across pipeline "
        "stages is not built yet. Use speculative=none with pp > 1, or parallel.pp=1.",
    ),
    (
        lambda c: (
            c.speculative.method is SpeculativeMethod.draft_model
            and c.speculative.draft_tensor_parallel_size == 1
            and c.parallel.tp > 1
        ),
        "speculative.draft_tensor_parallel_size=1 with parallel.tp > 1: a draft model on one "
        "rank of a sharded target is not built yet. Use "
        "speculative.draft_tensor_parallel_size=null (the target's tp).",
    ),
)


def unsupported_features(config: VllmConfig) -> list[str]:
    """What in this config the engine would not honour, one message per feature."""
    return [message for in_use, message in _NOT_BUILT if in_use(config)]


def check_supported(config: VllmConfig) -> None:
    """Raise ConfigError if a real run would ignore part of the config."""
    problems = unsupported_features(config)
    if problems:
        raise ConfigError(problems)
