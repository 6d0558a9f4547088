"""`VllmConfig`: every section, resolved and validated, frozen; and `ServeConfig`, the Hydra root.

`ServeConfig` is what Hydra composes (sections as the user wrote them, `auto` and unset values
included). `create_vllm_config` turns it into a `VllmConfig` whose sections hold concrete values
(dtype, max_model_len, device, token budget, executor and attention backends) plus the model's
architecture facts. Everything after that stage sees only this plain, picklable object.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vllm_hydra.config.attention import AttentionConfig
from vllm_hydra.config.cache import CACHE_DTYPE_BYTES, CacheConfig
from vllm_hydra.config.compilation import CompilationConfig
from vllm_hydra.config.device import DeviceConfig
from vllm_hydra.config.load import LoadConfig
from vllm_hydra.config.lora import LoRAConfig
from vllm_hydra.config.model import ModelConfig
from vllm_hydra.config.model_arch import DTYPE_BYTES, ModelArchConfig
from vllm_hydra.config.observability import ObservabilityConfig
from vllm_hydra.config.parallel import ParallelConfig
from vllm_hydra.config.scheduler import SchedulerConfig
from vllm_hydra.config.server import ServerConfig
from vllm_hydra.config.speculative import SpeculativeConfig
from vllm_hydra.config.structured_outputs import StructuredOutputsConfig


@dataclass(frozen=True)
class EngineSections:
    """The sections shared by the Hydra root and the resolved config."""

    model: ModelConfig = field(default_factory=ModelConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    load: LoadConfig = field(default_factory=LoadConfig)
    compilation: CompilationConfig = field(default_factory=CompilationConfig)
    observability: ObservabilityConfig = field(default_factory=ObservabilityConfig)
    speculative: SpeculativeConfig = field(default_factory=SpeculativeConfig)
    structured_outputs: StructuredOutputsConfig = field(default_factory=StructuredOutputsConfig)
    server: ServerConfig = field(default_factory=ServerConfig)


@dataclass(frozen=True)
class ServeConfig(EngineSections):
    """The root of `conf/serve.yaml`: the sections plus entry-point switches."""

    # Validate and print the memory plan, then exit without loading weights.
    dry_run: bool = False


@dataclass(frozen=True)
class VllmConfig(EngineSections):
    """The resolved, validated configuration of one engine. Built by `create_vllm_config`."""

    model_arch: ModelArchConfig | None = None
    # The checkpoint directory on disk; None when planned from committed facts only.
    model_dir: str | None = None
    # Why model.dtype resolved as it did (printed by the dry run).
    dtype_reason: str = ""
    # Why model.max_model_len resolved as it did (unset, set, or auto-fitted to the KV cache).
    max_model_len_reason: str = ""
    # speculative.method=draft_model: the draft's architecture facts and checkpoint directory.
    draft_model_arch: ModelArchConfig | None = None
    draft_model_dir: str | None = None

    @property
    def arch(self) -> ModelArchConfig:
        assert self.model_arch is not None, "VllmConfig is built by create_vllm_config"
        return self.model_arch

    @property
    def served_model_name(self) -> str:
        return self.server.served_model_name or self.model.name

    @property
    def quantization_method(self) -> str | None:
        """The quantization method that runs ("awq", "fp8", ...), None: unquantized."""
        return None if self.model.quantization is None else self.model.quantization.value

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.model.dtype.value]

    @property
    def cache_dtype_bytes(self) -> int:
        return CACHE_DTYPE_BYTES[self.cache.cache_dtype.value]
