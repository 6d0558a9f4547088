"""The configuration stage: section schemas, `VllmConfig`, and `create_vllm_config`.

Only this package, serve.py and scripts import Hydra or OmegaConf; everything downstream sees
the frozen dataclasses.
"""

from vllm_hydra.config.attention import AttentionBackendName, AttentionConfig
from vllm_hydra.config.cache import CacheConfig, CacheDType
from vllm_hydra.config.compilation import CompilationConfig, CompilationMode
from vllm_hydra.config.compose import compose_config, compose_serve_config
from vllm_hydra.config.create import create_vllm_config
from vllm_hydra.config.device import DeviceConfig, DeviceType
from vllm_hydra.config.errors import ConfigError
from vllm_hydra.config.load import LoadConfig, LoadFormat
from vllm_hydra.config.lora import LoRAConfig
from vllm_hydra.config.memory_plan import MemoryPlan, plan_memory
from vllm_hydra.config.model import ModelConfig, ModelDType
from vllm_hydra.config.model_arch import ModelArchConfig
from vllm_hydra.config.observability import ObservabilityConfig
from vllm_hydra.config.parallel import DistributedBackend, ParallelConfig
from vllm_hydra.config.scheduler import SchedulerConfig, SchedulerPolicy
from vllm_hydra.config.server import ServerConfig, ToolCallParser
from vllm_hydra.config.speculative import SpeculativeConfig, SpeculativeMethod
from vllm_hydra.config.structured_outputs import (
    StructuredOutputsBackend,
    StructuredOutputsConfig,
)
from vllm_hydra.config.support import check_supported, unsupported_features
from vllm_hydra.config.vllm import ServeConfig, VllmConfig

__all__ = [
    "AttentionBackendName",
    "AttentionConfig",
    "CacheConfig",
    "CacheDType",
    "CompilationConfig",
    "CompilationMode",
    "ConfigError",
    "DeviceConfig",
    "DeviceType",
    "DistributedBackend",
    "LoRAConfig",
    "LoadConfig",
    "LoadFormat",
    "MemoryPlan",
    "ModelArchConfig",
    "ModelConfig",
    "ModelDType",
    "ObservabilityConfig",
    "ParallelConfig",
    "SchedulerConfig",
    "SchedulerPolicy",
    "ServeConfig",
    "ServerConfig",
    "SpeculativeConfig",
    "SpeculativeMethod",
    "StructuredOutputsBackend",
    "StructuredOutputsConfig",
    "ToolCallParser",
    "VllmConfig",
    "check_supported",
    "compose_config",
    "compose_serve_config",
    "create_vllm_config",
    "plan_memory",
    "unsupported_features",
]
