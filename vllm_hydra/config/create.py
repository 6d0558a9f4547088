"""`create_vllm_config`: the Hydra counterpart of vLLM's `EngineArgs.create_engine_config()`.

It takes what Hydra composed, resolves every `auto` and unset value (device, dtype,
max_model_len, token budget, KV cache size, executor and attention backends) from the model's
config.json and the machine, and runs every validation rule before any weight is read.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, ValidationError

from vllm_hydra.config.attention import AttentionBackendName
from vllm_hydra.config.cache import (
    CPU_KV_CACHE_HOST_FRACTION,
    DEFAULT_CPU_KV_CACHE_GIB,
    DEFAULT_GPU_MEMORY_UTILIZATION,
    CacheConfig,
    CacheDType,
)
from vllm_hydra.config.checks import (
    CONFIG_RULES,
    MACHINE_RULES,
    WARNING_RULES,
    CheckContext,
    check_field_ranges,
    check_kv_cache_fits,
)
from vllm_hydra.config.compilation import CompilationConfig, CompilationMode
from vllm_hydra.config.device import DeviceConfig, DeviceType
from vllm_hydra.config.dtype import resolve_dtype
from vllm_hydra.config.errors import ConfigError
from vllm_hydra.config.max_model_len import (
    auto_fit_max_model_len,
    initial_max_model_len,
    is_auto,
)
from vllm_hydra.config.memory_plan import GIB, plan_memory
from vllm_hydra.config.model import ModelConfig, ModelDType
from vllm_hydra.config.model_arch import (
    ModelArchConfig,
    apply_hf_overrides,
    arch_from_hf_config,
    hf_override_warnings,
    known_arch_file,
    read_hf_config,
)
from vllm_hydra.config.model_files import resolve_model_dir
from vllm_hydra.config.parallel import DistributedBackend, ParallelConfig
from vllm_hydra.config.quantization import QuantizationMethod, resolve_quantization
from vllm_hydra.config.scheduler import DEFAULT_MAX_NUM_BATCHED_TOKENS, SchedulerConfig
from vllm_hydra.config.schema_keys import composed_key_problems
from vllm_hydra.config.sizes import parse_sizes
from vllm_hydra.config.speculative import SpeculativeConfig
from vllm_hydra.config.vllm import EngineSections, ServeConfig, VllmConfig

logger = logging.getLogger(__name__)


def create_vllm_config(
    cfg: DictConfig | EngineSections, *, dry_run: bool | None = None
) -> VllmConfig:
    """Resolve and validate a composed config. Raises ConfigError naming every problem found.

    `dry_run` (default: the config's own `dry_run`) plans for a device that may be absent.
    A general plugin that fails raises PluginLoadError.
    """
    from vllm_hydra.plugins import load_general_plugins

    load_general_plugins()  # the frontend's call: a plugin's architectures are checked too
    sections = _to_sections(cfg)
    if dry_run is None:
        dry_run = isinstance(sections, ServeConfig) and sections.dry_run
    sections, problems = parse_sizes(sections)
    problems += check_field_ranges(sections)
    ctx = _machine_context(dry_run)
    try:
        config = _resolve(sections, ctx)
    except ConfigError as e:
        raise ConfigError(problems + e.problems) from e
    if is_auto(sections.model.max_model_len) and not problems:
        config = auto_fit_max_model_len(config, sections.scheduler, _resolve_scheduler)
    # A field already out of range (tp=0, max_num_seqs=0) can make a later rule divide by
    # zero; its own message stands, and the rest are still reported in this one pass.
    tolerate = bool(problems)
    problems += _apply(CONFIG_RULES, tolerate, config)
    problems += _apply(MACHINE_RULES, tolerate, config, ctx)
    problems += _apply([_kv_cache_rule], tolerate, config)
    _raise_if(problems)
    for warning in _apply(WARNING_RULES, False, config):
        logger.warning(warning)
    return config


def _apply(rules: Iterable[Callable[..., list[str]]], tolerate: bool, *args: Any) -> list[str]:
    problems = []
    for rule in rules:
        try:
            problems += rule(*args)
        except ConfigError:
            raise
        except (ArithmeticError, ValueError):
            if not tolerate:
                raise
    return problems


def _kv_cache_rule(config: VllmConfig) -> list[str]:
    return check_kv_cache_fits(config, plan_memory(config))


def _to_sections(cfg: DictConfig | EngineSections) -> EngineSections:
    if isinstance(cfg, EngineSections):
        return cfg
    if "hydra" in cfg:  # a config composed with return_hydra_config=True
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    root = OmegaConf.get_type(cfg)
    if not dataclasses.is_dataclass(root):  # a plain YAML, e.g. a run dir's .hydra/config.yaml
        root = ServeConfig
    _raise_if(composed_key_problems(root, cfg))
    try:
        if not dataclasses.is_dataclass(OmegaConf.get_type(cfg)):
            from vllm_hydra.config.store import schema_node

            cfg = OmegaConf.merge(schema_node(ServeConfig), cfg)
        return OmegaConf.to_object(cfg)  # type: ignore[return-value]
    except InterpolationResolutionError as e:
        raise ConfigError(_interpolation_message(e)) from e
    except ValidationError as e:  # a value of the wrong type in a plain YAML
        raise ConfigError(f"{e.full_key}: {e.msg.splitlines()[0]}") from e


def _interpolation_message(e: InterpolationResolutionError) -> str:
    """An `${oc.env:NAME}` without a default, and NAME unset, is the usual cause."""
    return (
        f"{e.full_key}: {e.msg.splitlines()[0]}. Set what it refers to (export the "
        f"environment variable), or give the interpolation a default, e.g. ${{oc.env:NAME,null}}."
    )


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
    dtype, dtype_reason = resolve_dtype(s.model.dtype, arch.checkpoint_dtype, device.type)
    method = resolve_quantization(s.model.quantization, arch.quantization_config, arch.source)
    max_model_len, max_model_len_reason = initial_max_model_len(s.model.max_model_len, arch)
    model = replace(
        s.model,
        quantization=None if method is None else QuantizationMethod[method],
        dtype=dtype,
        max_model_len=max_model_len,
    )
    speculative, draft_arch, draft_dir = _resolve_speculative(s, model)
    return VllmConfig(
        model=model,
        device=device,
        cache=_resolve_cache(s.cache, model, device.type, s.parallel),
        parallel=_resolve_parallel(s.parallel),
        scheduler=_resolve_scheduler(s.scheduler, model.max_model_len or 0),
        lora=s.lora,
        attention=replace(s.attention, backend=_resolve_attention(s, device.type)),
        load=s.load,
        compilation=_resolve_compilation(s),
        observability=s.observability,
        speculative=speculative,
        structured_outputs=s.structured_outputs,
        server=s.server,
        model_arch=arch,
        model_dir=str(model_dir) if model_dir else None,
        dtype_reason=dtype_reason,
        max_model_len_reason=max_model_len_reason,
        draft_model_arch=draft_arch,
        draft_model_dir=str(draft_dir) if draft_dir else None,
    )


def _resolve_speculative(
    s: EngineSections, model: ModelConfig
) -> tuple[SpeculativeConfig, ModelArchConfig | None, Path | None]:
    """draft_model: read the draft's config.json; its dtype auto is the target's, its
    max_model_len unset is the target's (capped by the draft's limit), its tp unset the
    target's. The checks in checks.py then compare it with the target."""
    spec = s.speculative
    if not spec.method.uses_draft_model or not spec.model:
        return spec, None, None
    draft_dir = resolve_model_dir(spec.model, None, s.load.download_dir)
    if draft_dir is not None and (draft_dir / "config.json").is_file():
        config_file, source = draft_dir / "config.json", str(draft_dir / "config.json")
    elif draft_dir is None and known_arch_file(spec.model).is_file():
        config_file, source = known_arch_file(spec.model), f"committed facts for {spec.model}"
    else:
        raise ConfigError(
            f"speculative.model={spec.model} is not a checkpoint directory (no config.json) "
            f"nor a hub id in the Hugging Face cache. Point speculative.model at the draft "
            f"model's directory (config.json, tokenizer files, *.safetensors)."
        )
    draft_arch = _arch_from(config_file, source, {})
    dtype = model.dtype if spec.dtype is ModelDType.auto else spec.dtype
    max_len = spec.max_model_len or min(model.max_model_len or 0, draft_arch.max_model_len_limit)
    resolved = replace(
        spec,
        dtype=dtype,
        max_model_len=max_len,
        draft_tensor_parallel_size=spec.draft_tensor_parallel_size or s.parallel.tp,
    )
    return resolved, draft_arch, draft_dir


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
        return _arch_from(config_file, str(config_file), model.hf_overrides), model_dir
    known = known_arch_file(model.path)
    if known.is_file():
        return _arch_from(known, f"committed facts for {model.path}", model.hf_overrides), None
    where = s.load.download_dir or "the default cache"
    raise ConfigError(
        f"model.path={model.path} is neither a local directory nor a hub id in the "
        f"Hugging Face cache ({where}). Point model.path at a local checkpoint directory "
        f"(config.json, tokenizer files, *.safetensors)."
    )


def _arch_from(config_file: Path, source: str, overrides: dict[str, Any]) -> ModelArchConfig:
    hf = read_hf_config(config_file)
    for warning in hf_override_warnings(hf, overrides):
        logger.warning(warning)
    return arch_from_hf_config(apply_hf_overrides(hf, overrides), source)


def _resolve_device(device: DeviceConfig, ctx: CheckContext) -> DeviceConfig:
    kind = device.type
    if kind is DeviceType.auto:
        kind = DeviceType.cuda if ctx.cuda_device_count > 0 else DeviceType.cpu
    memory = device.memory_gib
    if kind is DeviceType.cuda and memory is None and ctx.cuda_device_count > 0:
        import torch

        memory = torch.cuda.get_device_properties(0).total_memory / GIB
    return DeviceConfig(type=kind, memory_gib=memory)


def _resolve_cache(
    cache: CacheConfig, model: ModelConfig, device: DeviceType, parallel: ParallelConfig
) -> CacheConfig:
    cache_dtype = cache.cache_dtype
    if cache_dtype is CacheDType.auto:
        cache_dtype = CacheDType(model.dtype.value)
    kv_gib = cache.kv_cache_memory_gib
    if kv_gib is None and device is DeviceType.cpu and cache.num_blocks_override is None:
        kv_gib = default_cpu_kv_cache_gib(parallel, psutil.virtual_memory().total)
    utilization = cache.memory_utilization
    if utilization is None and device is DeviceType.cuda:
        utilization = DEFAULT_GPU_MEMORY_UTILIZATION
    return replace(
        cache, cache_dtype=cache_dtype, kv_cache_memory_gib=kv_gib, memory_utilization=utilization
    )


def default_cpu_kv_cache_gib(parallel: ParallelConfig, host_bytes: int) -> float:
    """Each rank's KV cache when unset: DEFAULT_CPU_KV_CACHE_GIB, less where all the ranks on
    this host (tp x pp x dp over the nodes) would together take more than
    CPU_KV_CACHE_HOST_FRACTION of its memory; the rest is for weights and activations."""
    ranks = max(1, parallel.world_size * parallel.dp // parallel.nnodes)
    share = host_bytes * CPU_KV_CACHE_HOST_FRACTION / ranks / GIB
    return round(min(DEFAULT_CPU_KV_CACHE_GIB, share), 2)


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
