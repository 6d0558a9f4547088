"""`create_vllm_config`: the Hydra counterpart of vLLM's `EngineArgs.create_engine_config()`.

It takes what Hydra composed, resolves every `auto` and unset value (device, dtype,
max_model_len, token budget, KV cache size, executor and attention backends) from the model's
config.json and the machine, and runs every validation rule before any weight is read.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vllm_hydra.config.attention import AttentionBackendName
from vllm_hydra.config.cache import (
    DEFAULT_CPU_KV_CACHE_GIB,
    DEFAULT_GPU_MEMORY_UTILIZATION,
    CacheConfig,
    CacheDType,
)
from vllm_hydra.config.checks import (
    CONFIG_RULES,
    MACHINE_RULES,
    CheckContext,
    check_field_ranges,
    check_kv_cache_fits,
)
from vllm_hydra.config.compilation import CompilationConfig, CompilationMode
from vllm_hydra.config.device import DeviceConfig, DeviceType
from vllm_hydra.config.errors import ConfigError
from vllm_hydra.config.memory_plan import GIB, plan_memory
from vllm_hydra.config.model import ModelConfig, ModelDType
from vllm_hydra.config.model_arch import (
    ModelArchConfig,
    arch_from_hf_config,
    known_arch_file,
    read_hf_config,
)
from vllm_hydra.config.model_files import resolve_model_dir
from vllm_hydra.config.parallel import DistributedBackend, ParallelConfig
from vllm_hydra.config.quantization import QuantizationMethod, resolve_quantization
from vllm_hydra.config.scheduler import DEFAULT_MAX_NUM_BATCHED_TOKENS, SchedulerConfig
from vllm_hydra.config.vllm import EngineSections, ServeConfig, VllmConfig


def create_vllm_config(
    cfg: DictConfig | EngineSections, *, dry_run: bool | None = None
) -> VllmConfig:
    """Resolve and validate a composed config. Raises ConfigError naming every problem found.

    `dry_run` (default: the config's own `dry_run`) plans for a device that may be absent.
    """
    sections = _to_sections(cfg)
    if dry_run is None:
        dry_run = isinstance(sections, ServeConfig) and sections.dry_run
    _raise_if(check_field_ranges(sections))
    ctx = _machine_context(dry_run)
    config = _resolve(sections, ctx)
    _raise_if([p for rule in CONFIG_RULES for p in rule(config)])
    _raise_if([p for rule in MACHINE_RULES for p in rule(config, ctx)])
    _raise_if(check_kv_cache_fits(config, plan_memory(config)))
    return config


def _to_sections(cfg: DictConfig | EngineSections) -> EngineSections:
    if isinstance(cfg, EngineSections):
        return cfg
    if "hydra" in cfg:  # a config composed with return_hydra_config=True
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def _raise_if(problems: list[str]) -> None:
    if problems:
        raise ConfigError(problems)


def _machine_context(dry_run: bool) -> CheckContext:
    import torch

    cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return CheckContext(
        dry_run=dry_run, cuda_device_count=cuda_count, cpu_count=os.cpu_count() or 1
    )


def _resolve(s: EngineSections, ctx: CheckContext) -> VllmConfig:
    arch, model_dir = load_model_arch(s)
    device = _resolve_device(s.device, ctx)
    model = _resolve_model(s.model, arch, device.type)
    return VllmConfig(
        model=model,
        device=device,
        cache=_resolve_cache(s.cache, model, device.type),
        parallel=_resolve_parallel(s.parallel),
        scheduler=_resolve_scheduler(s.scheduler, model.max_model_len or 0),
        lora=s.lora,
        attention=replace(s.attention, backend=_resolve_attention(s, device.type)),
        load=s.load,
        compilation=_resolve_compilation(s),
        observability=s.observability,
        speculative=s.speculative,
        server=s.server,
        model_arch=arch,
        model_dir=str(model_dir) if model_dir else None,
    )


def load_model_arch(s: EngineSections) -> tuple[ModelArchConfig, Path | None]:
    """The model's architecture facts and its checkpoint directory (None: facts only)."""
    model = s.model
    if not model.path:
        raise ConfigError(
            "model.path is empty. Set model.path to a local checkpoint directory, "
            "or pick a model option such as model=tiny."
        )
    model_dir = resolve_model_dir(model.path, model.revision, s.load.download_dir)
    if model_dir is not None:
        config_file = model_dir / "config.json"
        if not config_file.is_file():
            raise ConfigError(
                f"model.path={model.path}: {model_dir} has no config.json. A checkpoint "
                f"directory holds config.json, tokenizer files and *.safetensors weights."
            )
        hf = read_hf_config(config_file, model.hf_overrides)
        return arch_from_hf_config(hf, str(config_file)), model_dir
    known = known_arch_file(model.path)
    if known.is_file():
        hf = read_hf_config(known, model.hf_overrides)
        return arch_from_hf_config(hf, f"committed facts for {model.path}"), None
    where = s.load.download_dir or "the default cache"
    raise ConfigError(
        f"model.path={model.path} is neither a local directory nor a hub id in the "
        f"Hugging Face cache ({where}). Point model.path at a local checkpoint directory "
        f"(config.json, tokenizer files, *.safetensors)."
    )


def _resolve_device(device: DeviceConfig, ctx: CheckContext) -> DeviceConfig:
    kind = device.type
    if kind is DeviceType.auto:
        kind = DeviceType.cuda if ctx.cuda_device_count > 0 else DeviceType.cpu
    memory = device.memory_gib
    if kind is DeviceType.cuda and memory is None and ctx.cuda_device_count > 0:
        import torch

        memory = torch.cuda.get_device_properties(0).total_memory / GIB
    return DeviceConfig(type=kind, memory_gib=memory)


def _resolve_model(model: ModelConfig, arch: ModelArchConfig, device: DeviceType) -> ModelConfig:
    method = resolve_quantization(model.quantization, arch.quantization_config, arch.source)
    return replace(
        model,
        quantization=None if method is None else QuantizationMethod[method],
        dtype=_resolve_dtype(model.dtype, arch.checkpoint_dtype, device),
        max_model_len=model.max_model_len or arch.max_model_len_limit,
    )


def _resolve_dtype(dtype: ModelDType, checkpoint_dtype: str, device: DeviceType) -> ModelDType:
    if dtype is not ModelDType.auto:
        return dtype
    if device is DeviceType.cuda and checkpoint_dtype in ("bfloat16", "float16"):
        return ModelDType(checkpoint_dtype)
    return ModelDType.bfloat16


def _resolve_cache(cache: CacheConfig, model: ModelConfig, device: DeviceType) -> CacheConfig:
    cache_dtype = cache.cache_dtype
    if cache_dtype is CacheDType.auto:
        cache_dtype = CacheDType(model.dtype.value)
    kv_gib = cache.kv_cache_memory_gib
    if kv_gib is None and device is DeviceType.cpu and cache.num_blocks_override is None:
        kv_gib = DEFAULT_CPU_KV_CACHE_GIB
    utilization = cache.memory_utilization
    if utilization is None and device is DeviceType.cuda:
        utilization = DEFAULT_GPU_MEMORY_UTILIZATION
    return replace(
        cache, cache_dtype=cache_dtype, kv_cache_memory_gib=kv_gib, memory_utilization=utilization
    )


def _resolve_parallel(parallel: ParallelConfig) -> ParallelConfig:
    if parallel.backend is not DistributedBackend.auto:
        return parallel
    single = parallel.world_size == 1
    return replace(parallel, backend=DistributedBackend.uni if single else DistributedBackend.mp)


def _resolve_scheduler(scheduler: SchedulerConfig, max_model_len: int) -> SchedulerConfig:
    if scheduler.max_num_batched_tokens is not None:
        return scheduler
    tokens = DEFAULT_MAX_NUM_BATCHED_TOKENS
    if not scheduler.enable_chunked_prefill:
        tokens = max(tokens, max_model_len)
    tokens = min(tokens, scheduler.max_num_seqs * max_model_len)
    return replace(scheduler, max_num_batched_tokens=tokens)


def _resolve_attention(s: EngineSections, device: DeviceType) -> AttentionBackendName:
    """auto -> the Triton kernels on CUDA, the torch backend on CPU (where Triton runs only
    in its interpreter, for testing)."""
    if s.attention.backend is not AttentionBackendName.auto:
        return s.attention.backend
    if device is DeviceType.cuda:
        return AttentionBackendName.triton
    return AttentionBackendName.torch


def _resolve_compilation(s: EngineSections) -> CompilationConfig:
    """cudagraph with no sizes: capture 1, 2, 4 and multiples of 8 up to max_num_seqs."""
    c = s.compilation
    if c.mode is not CompilationMode.cudagraph or c.cudagraph_capture_sizes is not None:
        return c
    sizes = [1, 2, 4, *range(8, s.scheduler.max_num_seqs + 1, 8)]
    sizes = sorted({n for n in sizes if n <= s.scheduler.max_num_seqs} | {s.scheduler.max_num_seqs})
    return replace(c, cudagraph_capture_sizes=sizes)
