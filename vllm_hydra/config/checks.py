"""Validation rules, one function each, run by `create_vllm_config` before any weight is read.

Every message names the full key, the value, the limit and a fix, in the form
`parallel.tp=4 does not divide model.num_attention_heads=6 (model=tiny). Use parallel.tp in {1, 2}.`
A rule returns its problems (empty when the config passes it); `create_vllm_config` gathers
them all so a user fixes every mistake in one pass.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from vllm_hydra.config.attention import AttentionBackendName
from vllm_hydra.config.cache import FP8_CACHE_DTYPES
from vllm_hydra.config.chat_template import check_chat_template
from vllm_hydra.config.compilation import CompilationMode
from vllm_hydra.config.device import DeviceType
from vllm_hydra.config.load import LoadFormat
from vllm_hydra.config.lora import SUPPORTED_LORA_RANKS
from vllm_hydra.config.memory_plan import GIB, MemoryPlan
from vllm_hydra.config.model_files import looks_like_hub_id, resolve_model_dir, weight_files
from vllm_hydra.config.parallel import DistributedBackend
from vllm_hydra.config.quantization import check_group_split, checkpoint_group_size
from vllm_hydra.config.server import check_tool_calling
from vllm_hydra.config.sizes import MAX_MODEL_LEN_AUTO
from vllm_hydra.config.speculative import SpeculativeMethod
from vllm_hydra.config.structured_outputs import check_structured_outputs
from vllm_hydra.config.vllm import EngineSections, VllmConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckContext:
    """What the rules may know about the machine. A dry run may target an absent device."""

    dry_run: bool
    cuda_device_count: int
    cpu_count: int


def _at_least(key: str, value: float | None, low: float, note: str = "") -> list[str]:
    """`value >= low`; None (unset) passes."""
    if value is None or value >= low:
        return []
    return [f"{key}={value} is out of range: it must be >= {low}{note}."]


def _above(key: str, value: float | None, low: float, high: float | None = None) -> list[str]:
    """`low < value (<= high)`; None (unset) passes."""
    if value is None or (value > low and (high is None or value <= high)):
        return []
    limit = f"in ({low}, {high}]" if high is not None else f"> {low}"
    return [f"{key}={value} is out of range: it must be {limit}."]


def _port(key: str, value: int | None, low: int) -> list[str]:
    if value is None or low <= value <= 65535:
        return []
    return [f"{key}={value} is out of range: it must be in [{low}, 65535]."]


# ---- single fields (run on the raw sections, before anything is derived) ----


def _unless_auto(max_model_len: int | None) -> int | None:
    return None if max_model_len == MAX_MODEL_LEN_AUTO else max_model_len


def check_field_ranges(s: EngineSections) -> list[str]:
    m, c, p, sc, sv = s.model, s.cache, s.parallel, s.scheduler, s.server
    return [
        *_at_least("model.max_model_len", _unless_auto(m.max_model_len), 1, " or auto"),
        *_at_least("model.seed", m.seed, 0),
        *_above("cache.memory_utilization", c.memory_utilization, 0, 1),
        *_above("cache.kv_cache_memory_gib", c.kv_cache_memory_gib, 0),
        *_at_least("cache.num_blocks_override", c.num_blocks_override, 1),
        *_above("device.memory_gib", s.device.memory_gib, 0),
        *_at_least("parallel.tp", p.tp, 1),
        *_at_least("parallel.pp", p.pp, 1),
        *_at_least("parallel.dp", p.dp, 1),
        *_at_least("parallel.nnodes", p.nnodes, 1),
        *_port("parallel.master_port", p.master_port, 1),
        *_at_least("scheduler.max_num_seqs", sc.max_num_seqs, 1),
        *_at_least("scheduler.max_num_batched_tokens", sc.max_num_batched_tokens, 1),
        *_at_least(
            "scheduler.long_prefill_token_threshold",
            sc.long_prefill_token_threshold,
            0,
            " (0: no limit)",
        ),
        *_above("observability.stats_interval_s", s.observability.stats_interval_s, 0),
        *_port("server.port", sv.port, 0),
        *_at_least("server.shutdown_timeout_s", sv.shutdown_timeout_s, 0),
        *_at_least("server.max_queued_requests", sv.max_queued_requests, 1, " or null"),
        *check_memory_utilization_headroom(s),
        *_at_least("server.max_request_body_bytes", sv.max_request_body_bytes, 1, " or null"),
        *check_root_path(sv.root_path),
        *check_block_size(s),
        *check_capture_sizes(s),
        *check_compile_cache_dir(s),
    ]


def check_root_path(root_path: str | None) -> list[str]:
    """A prefix such as /llm: a leading slash, no trailing one, nothing a URL path can't hold."""
    if root_path is None or re.fullmatch(r"(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+", root_path):
        return []
    return [
        f"server.root_path={root_path!r} is not a path prefix: it must start with '/', not end "
        f"with one, and hold only URL path characters. Use e.g. server.root_path=/llm, or null."
    ]


def check_memory_utilization_headroom(s: EngineSections) -> list[str]:
    value = s.cache.memory_utilization
    if value is None or value < 1.0:
        return []
    return [
        f"cache.memory_utilization={value} leaves nothing for the CUDA context, non-torch "
        f"allocations (NCCL, cuBLAS workspaces) or other processes on the GPU, so the engine "
        f"would run out of memory. Use cache.memory_utilization<=0.95 (the default is 0.9)."
    ]


def check_compile_cache_dir(s: EngineSections) -> list[str]:
    c = s.compilation
    if c.cache_dir is None or c.mode is CompilationMode.torch_compile:
        return []
    return [
        f"compilation.cache_dir={c.cache_dir} has no effect with compilation.mode="
        f"{c.mode.value}: only torch.compile keeps a cache. Use compilation=torch_compile or "
        f"leave compilation.cache_dir null."
    ]


def check_block_size(s: EngineSections) -> list[str]:
    size = s.cache.block_size
    if size >= 1 and size & (size - 1) == 0 and size <= 256:
        return []
    return [f"cache.block_size={size} is not a power of two in [1, 256]. Use cache.block_size=16."]


def check_capture_sizes(s: EngineSections) -> list[str]:
    sizes = s.compilation.cudagraph_capture_sizes
    if sizes is None:
        return []
    if s.compilation.mode is not CompilationMode.cudagraph:
        return [
            f"compilation.cudagraph_capture_sizes={sizes} has no effect with "
            f"compilation.mode={s.compilation.mode.value}. Use compilation=cudagraph or leave "
            f"the sizes null."
        ]
    bad = [n for n in sizes if n < 1]
    if not bad:
        return []
    return [f"compilation.cudagraph_capture_sizes={sizes} holds {bad}: every size must be >= 1."]


# ---- model and parallelism ----


def valid_tp_sizes(config: VllmConfig) -> list[int]:
    """tp values that split heads, KV heads and the MLP evenly for this model."""
    arch = config.arch
    heads, kv, inter = arch.num_attention_heads, arch.num_key_value_heads, arch.intermediate_size
    return [
        tp
        for tp in range(1, heads + 1)
        if heads % tp == 0 and inter % tp == 0 and (kv % tp == 0 or tp % kv == 0)
    ]


def check_tp_divides_heads(c: VllmConfig) -> list[str]:
    heads, tp = c.arch.num_attention_heads, c.parallel.tp
    if heads % tp == 0:
        return []
    return [
        f"parallel.tp={tp} does not divide model.num_attention_heads={heads} "
        f"(model={c.model.name}). Use parallel.tp in {_set(valid_tp_sizes(c))}."
    ]


def check_tp_splits_kv_heads(c: VllmConfig) -> list[str]:
    kv, tp = c.arch.num_key_value_heads, c.parallel.tp
    if kv % tp == 0 or tp % kv == 0 or check_tp_divides_heads(c):
        return []
    return [
        f"parallel.tp={tp} neither divides nor is a multiple of model.num_key_value_heads={kv} "
        f"(model={c.model.name}), so KV heads cannot be split or replicated evenly. "
        f"Use parallel.tp in {_set(valid_tp_sizes(c))}."
    ]


def check_tp_divides_mlp(c: VllmConfig) -> list[str]:
    inter, tp = c.arch.intermediate_size, c.parallel.tp
    if inter % tp == 0 or check_tp_divides_heads(c) or check_tp_splits_kv_heads(c):
        return []
    return [
        f"parallel.tp={tp} does not divide model.intermediate_size={inter} "
        f"(model={c.model.name}). Use parallel.tp in {_set(valid_tp_sizes(c))}."
    ]


def check_pp_within_layers(c: VllmConfig) -> list[str]:
    layers, pp = c.arch.num_hidden_layers, c.parallel.pp
    if pp <= layers:
        return []
    return [
        f"parallel.pp={pp} exceeds model.num_hidden_layers={layers} (model={c.model.name}): "
        f"every stage needs a layer. Use parallel.pp<={layers}."
    ]


def check_max_model_len(c: VllmConfig) -> list[str]:
    limit, value = c.arch.max_model_len_limit, c.model.max_model_len or 0
    if value <= limit:
        return []
    return [
        f"model.max_model_len={value} exceeds the model's limit {limit} "
        f"({c.arch.max_len_key} in {c.arch.source}). Use model.max_model_len<={limit}."
    ]


def check_sliding_window(c: VllmConfig) -> list[str]:
    """Mistral's window (every layer) is built; Qwen's per-layer windows are not."""
    window = c.arch.sliding_window
    if window is None or c.arch.architecture == "MistralForCausalLM":
        return []
    return [
        f"model.path: {c.arch.source} enables sliding-window attention on some layers "
        f"(use_sliding_window=true, sliding_window={window}), which is not implemented for "
        f"{c.arch.architecture}. Use a checkpoint without it, or "
        f"+model.hf_overrides.use_sliding_window=false if its context stays within the window."
    ]


def check_revision_needs_hub_id(c: VllmConfig) -> list[str]:
    if c.model.revision is None or not Path(c.model.path).expanduser().is_dir():
        return []
    return [
        f"model.revision={c.model.revision} applies to hub ids, but model.path={c.model.path} "
        f"is a local directory. Remove model.revision."
    ]


def check_trust_remote_code(c: VllmConfig) -> list[str]:
    if not c.model.trust_remote_code:
        return []
    return [
        "model.trust_remote_code=true: this engine never runs model code shipped with a "
        "checkpoint; it serves the architectures in its model registry (built in, or added by "
        "a plugin, see README 'Plugins'). Use model.trust_remote_code=false."
    ]


def check_tokenizer_present(c: VllmConfig, ctx: CheckContext) -> list[str]:
    """A tokenizer directory that is not there fails now, not when the engine starts."""
    tok = c.model.tokenizer
    if tok is None or c.model.skip_tokenizer_init:
        return []
    if resolve_model_dir(tok, c.model.revision, c.load.download_dir) is not None:
        return []
    if looks_like_hub_id(tok) and ctx.dry_run:
        return []  # a hub id is planned offline, like model.path
    return [
        f"model.tokenizer={tok} is neither a local directory nor a hub id in the Hugging Face "
        f"cache. Point model.tokenizer at a directory with tokenizer files, or leave it null "
        f"to use model.path's."
    ]


# ---- scheduler ----


def check_batched_tokens_cover_model_len(c: VllmConfig) -> list[str]:
    tokens, mml = c.scheduler.max_num_batched_tokens or 0, c.model.max_model_len or 0
    if c.scheduler.enable_chunked_prefill or tokens >= mml:
        return []
    return [
        f"scheduler.max_num_batched_tokens={tokens} is smaller than model.max_model_len={mml} "
        f"with scheduler.enable_chunked_prefill=false, so longer prompts could never be "
        f"scheduled. Use scheduler.max_num_batched_tokens>={mml}, "
        f"scheduler.enable_chunked_prefill=true, or model.max_model_len<={tokens}."
    ]


def check_batched_tokens_cover_num_seqs(c: VllmConfig) -> list[str]:
    tokens, seqs = c.scheduler.max_num_batched_tokens or 0, c.scheduler.max_num_seqs
    if tokens >= seqs:
        return []
    return [
        f"scheduler.max_num_batched_tokens={tokens} is smaller than "
        f"scheduler.max_num_seqs={seqs}: a step could not give each running request a token. "
        f"Use scheduler.max_num_batched_tokens>={seqs} or scheduler.max_num_seqs<={tokens}."
    ]


def check_long_prefill_threshold(c: VllmConfig) -> list[str]:
    value, mml = c.scheduler.long_prefill_token_threshold, c.model.max_model_len or 0
    if value <= mml:
        return []
    return [
        f"scheduler.long_prefill_token_threshold={value} exceeds model.max_model_len={mml}. "
        f"Use a value in [0, {mml}]."
    ]


# ---- executor and device ----


def check_backend_world_size(c: VllmConfig) -> list[str]:
    world = c.parallel.world_size
    if c.parallel.backend is not DistributedBackend.uni or world == 1:
        return []
    return [
        f"parallel.backend=uni runs one worker, but parallel.tp x parallel.pp = {world}. "
        f"Use parallel.backend=mp (or auto)."
    ]


def check_master_port_per_engine(c: VllmConfig) -> list[str]:
    """Each dp engine's workers form their own torch.distributed world, on their own port."""
    p = c.parallel
    if p.master_port is None or p.dp == 1 or p.world_size == 1:
        return []
    return [
        f"parallel.master_port={p.master_port} with parallel.dp={p.dp}: each of the {p.dp} "
        f"engines' tp x pp = {p.world_size} workers needs its own port. "
        f"Leave parallel.master_port=null (a free port per engine)."
    ]


def check_nnodes_backend(c: VllmConfig) -> list[str]:
    if c.parallel.nnodes == 1 or c.parallel.backend is DistributedBackend.ray:
        return []
    return [
        f"parallel.nnodes={c.parallel.nnodes} needs workers on other machines. "
        f"Use parallel.backend=ray."
    ]


def check_device_present(c: VllmConfig, ctx: CheckContext) -> list[str]:
    if ctx.dry_run or c.device.type is not DeviceType.cuda or ctx.cuda_device_count > 0:
        return []
    return [
        "device=cuda, but torch sees no CUDA device (torch.cuda.is_available() is False). "
        "Use device=cpu or device=auto, or add dry_run=true to plan for a GPU machine."
    ]


def check_world_size_fits_devices(c: VllmConfig, ctx: CheckContext) -> list[str]:
    needed = c.parallel.world_size * c.parallel.dp
    if c.device.type is DeviceType.cpu:
        if needed > ctx.cpu_count:
            logger.warning(
                "parallel.tp x pp x dp = %d processes share %d CPU cores; it works, slowly.",
                needed,
                ctx.cpu_count,
            )
        return []
    if ctx.dry_run or c.parallel.nnodes > 1 or needed <= ctx.cuda_device_count:
        return []
    return [
        f"parallel.tp x parallel.pp x parallel.dp = {needed} GPUs, but {ctx.cuda_device_count} "
        f"CUDA device(s) are visible. Use fewer ranks, or parallel.backend=ray "
        f"with parallel.nnodes>1 to span machines."
    ]


def check_device_memory(c: VllmConfig, ctx: CheckContext) -> list[str]:
    if ctx.dry_run or c.device.type is not DeviceType.cuda or c.device.memory_gib is None:
        return []
    import torch

    total = torch.cuda.get_device_properties(0).total_memory / GIB
    if c.device.memory_gib <= total:
        return []
    return [
        f"device.memory_gib={c.device.memory_gib} exceeds the GPU's {total:.2f} GiB. "
        f"Use device.memory_gib<={total:.2f} or leave it unset."
    ]


def check_device_memory_needs_cuda(c: VllmConfig) -> list[str]:
    if c.device.type is DeviceType.cuda or c.device.memory_gib is None:
        return []
    return [
        f"device.memory_gib={c.device.memory_gib} applies to GPUs, but device=cpu. "
        f"Size the CPU KV cache with cache.kv_cache_memory_gib instead."
    ]


def check_memory_utilization_needs_cuda(c: VllmConfig) -> list[str]:
    if c.device.type is DeviceType.cuda or c.cache.memory_utilization is None:
        return []
    return [
        f"cache.memory_utilization={c.cache.memory_utilization} applies to GPUs, but "
        f"device=cpu. Size the CPU KV cache with cache.kv_cache_memory_gib instead."
    ]


def check_cudagraph_needs_cuda(c: VllmConfig) -> list[str]:
    if c.compilation.mode is not CompilationMode.cudagraph or c.device.type is DeviceType.cuda:
        return []
    return [
        f"compilation.mode=cudagraph needs CUDA, but device={c.device.type.value}: CUDA graphs "
        f"record and replay GPU kernel launches, and CPUs have no equivalent. "
        f"Use compilation.mode=torch_compile or compilation.mode=none."
    ]


def check_cudagraph_needs_triton(c: VllmConfig) -> list[str]:
    mode, backend = c.compilation.mode, c.attention.backend
    if mode is not CompilationMode.cudagraph or backend is not AttentionBackendName.torch:
        return []
    return [
        "compilation.mode=cudagraph needs attention.backend=triton, but attention.backend=torch: "
        "the torch backend sizes its decode work from host-side lengths every step, which a "
        "replayed graph cannot follow. Use attention.backend=triton (or auto on CUDA)."
    ]


def check_triton_backend_device(c: VllmConfig) -> list[str]:
    on_cpu = c.device.type is DeviceType.cpu
    if c.attention.backend is not AttentionBackendName.triton or not on_cpu:
        return []
    if os.environ.get("TRITON_INTERPRET") == "1":
        return []
    return [
        "attention.backend=triton on device=cpu needs TRITON_INTERPRET=1 in the environment: "
        "Triton compiles its kernels for GPUs, and on a CPU only the Triton interpreter (slow, "
        "for testing) runs them. Use attention.backend=torch (or auto) on CPU, or set "
        "TRITON_INTERPRET=1 before starting to test the kernels."
    ]


# ---- lora and speculative decoding ----


def check_lora(c: VllmConfig) -> list[str]:
    lora, problems = c.lora, []
    if lora.max_lora_rank not in SUPPORTED_LORA_RANKS:
        problems.append(
            f"lora.max_lora_rank={lora.max_lora_rank} is not a supported rank. "
            f"Use one of {_set(SUPPORTED_LORA_RANKS)}."
        )
    if lora.max_loras < 1:
        problems.append(f"lora.max_loras={lora.max_loras} is out of range: it must be >= 1.")
    if lora.max_cpu_loras is not None and lora.max_cpu_loras < lora.max_loras:
        problems.append(
            f"lora.max_cpu_loras={lora.max_cpu_loras} is smaller than "
            f"lora.max_loras={lora.max_loras}. Use lora.max_cpu_loras>={lora.max_loras}."
        )
    if lora.adapters and not lora.enabled:
        problems.append("lora.adapters is set but lora.enabled=false. Use lora=enabled.")
    return problems + check_lora_adapters_present(c)


def check_lora_adapters_present(c: VllmConfig) -> list[str]:
    """Every adapter is a PEFT directory this engine can serve (its adapter_config.json:
    files, rank, target modules), and no adapter takes the base model's name."""
    from vllm_hydra.lora.peft_helper import LoRAAdapterError, PEFTHelper

    problems = []
    for name, path in c.lora.adapters.items():
        if name == c.served_model_name:
            problems.append(
                f"lora.adapters.{name}: the name is the served model's "
                f"(server.served_model_name={c.served_model_name}). Give the adapter another name."
            )
        try:
            PEFTHelper.from_local_dir(path, c.lora.max_lora_rank)
        except LoRAAdapterError as e:
            problems.append(f"lora.adapters.{name}={path}: {e}")
    return problems


def check_speculative(c: VllmConfig) -> list[str]:
    spec = c.speculative
    if spec.method is SpeculativeMethod.none:
        return _speculative_unused(c)
    problems = []
    if spec.num_speculative_tokens < 1:
        problems.append(
            f"speculative.num_speculative_tokens={spec.num_speculative_tokens} must be >= 1 "
            f"with speculative.method={spec.method.value}."
        )
    if spec.disable_by_batch_size is not None and spec.disable_by_batch_size < 1:
        problems.append(
            f"speculative.disable_by_batch_size={spec.disable_by_batch_size} must be >= 1 "
            f"(or null: always speculate)."
        )
    if spec.method is SpeculativeMethod.ngram:
        return problems + _check_ngram(c)
    return problems + check_draft_model(c)


def _speculative_unused(c: VllmConfig) -> list[str]:
    spec = c.speculative
    set_keys = [
        f"speculative.{key}={value}"
        for key, value, unset in (
            ("num_speculative_tokens", spec.num_speculative_tokens, 0),
            ("model", spec.model, None),
            ("disable_by_batch_size", spec.disable_by_batch_size, None),
        )
        if value != unset
    ]
    return [
        f"{key} has no effect with speculative.method=none. Use speculative=ngram or "
        f"speculative=draft_model."
        for key in set_keys
    ]


def _check_ngram(c: VllmConfig) -> list[str]:
    spec, problems = c.speculative, []
    if not 1 <= spec.prompt_lookup_min <= spec.prompt_lookup_max:
        problems.append(
            f"speculative.prompt_lookup_min={spec.prompt_lookup_min} and "
            f"speculative.prompt_lookup_max={spec.prompt_lookup_max} must satisfy "
            f"1 <= prompt_lookup_min <= prompt_lookup_max."
        )
    if spec.model is not None:
        problems.append(
            f"speculative.model={spec.model} has no effect with speculative.method=ngram "
            f"(it proposes from the request's own tokens). Use speculative=draft_model."
        )
    return problems


def check_draft_model(c: VllmConfig) -> list[str]:
    """The draft shares the target's block tables and vocabulary: same tokenizer, same
    vocab_size, a context at least as long as it is asked to cover, tp 1 or the target's."""
    spec, draft = c.speculative, c.draft_model_arch
    if spec.model is None or draft is None:
        return [
            "speculative.method=draft_model needs speculative.model: the directory of a "
            "smaller checkpoint with the target's tokenizer. Set speculative.model=<path>."
        ]
    problems = []
    if draft.vocab_size != c.arch.vocab_size:
        problems.append(
            f"speculative.model={spec.model} has vocab_size={draft.vocab_size}, the target "
            f"(model={c.model.name}) has {c.arch.vocab_size}. A draft model must share the "
            f"target's vocabulary; use a draft trained with the target's tokenizer."
        )
    if spec.draft_tensor_parallel_size not in (1, c.parallel.tp):
        problems.append(
            f"speculative.draft_tensor_parallel_size={spec.draft_tensor_parallel_size} must "
            f"be 1 or parallel.tp={c.parallel.tp}."
        )
    limit = draft.max_model_len_limit
    if spec.max_model_len is not None and spec.max_model_len > limit:
        problems.append(
            f"speculative.max_model_len={spec.max_model_len} exceeds the draft model's limit "
            f"{limit} ({draft.max_len_key} in {draft.source}). Use "
            f"speculative.max_model_len<={limit}."
        )
    return problems + _check_draft_tokenizer(c)


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def _check_draft_tokenizer(c: VllmConfig) -> list[str]:
    """Both tokenizers' vocabularies (token -> id) must be equal, where both are on disk
    (a draft without tokenizer files is checked by vocab_size alone)."""
    target_dir = c.model.tokenizer or c.model_dir
    dirs = [Path(d) for d in (target_dir, c.draft_model_dir) if d is not None]
    has_files = [any((d / f).is_file() for f in _TOKENIZER_FILES) for d in dirs]
    if len(dirs) < 2 or not all(has_files) or c.model.skip_tokenizer_init:
        return []
    from transformers import AutoTokenizer

    try:
        target = AutoTokenizer.from_pretrained(dirs[0]).get_vocab()
        draft = AutoTokenizer.from_pretrained(dirs[1]).get_vocab()
    except (OSError, ValueError) as e:
        return [
            f"speculative.model={c.speculative.model}: its tokenizer could not be read "
            f"({type(e).__name__}: {str(e).splitlines()[0]}). A draft model needs the "
            f"target's tokenizer files beside its config.json."
        ]
    if target == draft:
        return []
    differ = sum(1 for token, i in draft.items() if target.get(token) != i)
    return [
        f"speculative.model={c.speculative.model}: its tokenizer differs from the target's "
        f"({differ} of {len(draft)} tokens map to other ids). A draft model must use the "
        f"target's tokenizer."
    ]


# ---- files and memory ----


def check_weights_present(c: VllmConfig, ctx: CheckContext) -> list[str]:
    if ctx.dry_run or c.load.format is LoadFormat.dummy:
        return []
    if c.model_dir is None:
        return [
            f"model.path={c.model.path} is not on this machine (only its architecture facts "
            f"are). Download the checkpoint and set model.path=<its directory>, or use "
            f"load.format=dummy for random weights."
        ]
    if weight_files(Path(c.model_dir)):
        return []
    return [
        f"model.path={c.model.path}: {c.model_dir} holds no *.safetensors weights. "
        f"Convert the checkpoint to safetensors, or use load.format=dummy for random weights."
    ]


def check_port_free(c: VllmConfig, ctx: CheckContext) -> list[str]:
    """A busy port fails here, before any weight loads (binding the same way the server does)."""
    sv = c.server
    if ctx.dry_run or sv.port == 0:
        return []
    family = socket.AF_INET6 if ":" in sv.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((sv.host, sv.port))
        except OSError as e:
            return [
                f"server.port={sv.port} on server.host={sv.host} cannot be bound ({e.strerror}): "
                f"another process is listening there. Stop it, or use another server.port "
                f"(server.port=0 picks a free one)."
            ]
    return []


# ---- warnings: settings that run, but that vLLM warns about ----


def warn_float16_on_bfloat16_checkpoint(c: VllmConfig) -> list[str]:
    if c.model.dtype.value != "float16" or c.arch.checkpoint_dtype != "bfloat16":
        return []
    return [
        "model.dtype=float16 on a bfloat16 checkpoint: float16 overflows above 65504 where "
        "bfloat16 does not, so activations may turn into inf/NaN. Use model.dtype=bfloat16 "
        "(or auto)."
    ]


# The modules the `tracing` extra installs (OpenTelemetry's SDK and its OTLP/HTTP exporter).
TRACING_MODULES = ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http")


def check_tracing_installed(c: VllmConfig, ctx: CheckContext) -> list[str]:
    endpoint = c.observability.otlp_traces_endpoint
    if endpoint is None or ctx.dry_run:
        return []
    missing = [m for m in TRACING_MODULES if not _module_installed(m)]
    if not missing:
        return []
    return [
        f"observability.otlp_traces_endpoint={endpoint} needs OpenTelemetry, which is not "
        f"installed (missing {', '.join(missing)}). Install the tracing extra "
        f"(pip install -e '.[tracing]'), or leave observability.otlp_traces_endpoint=null."
    ]


def check_ray_installed(c: VllmConfig, ctx: CheckContext) -> list[str]:
    if c.parallel.backend is not DistributedBackend.ray or ctx.dry_run:
        return []
    if _module_installed("ray"):
        return []
    return [
        "parallel.backend=ray needs Ray, which is not installed. Install the ray extra "
        "(pip install 'vllm-hydra[ray]'), or use parallel.backend=mp on one machine."
    ]


def _module_installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def check_kv_cache_fits(c: VllmConfig, plan: MemoryPlan) -> list[str]:
    """vLLM's start-up check: the KV cache must hold one request of max_model_len tokens."""
    if plan.usable_blocks >= plan.blocks_per_request:
        return []
    if plan.kv_budget_bytes <= 0:
        return [_no_kv_memory(c, plan)]
    fit_len = plan.kv_cache_tokens
    needed_gib = plan.blocks_per_request * plan.kv_bytes_per_block / GIB
    return [
        f"{plan.budget_key}: the KV cache holds {plan.usable_blocks} usable blocks "
        f"({fit_len} tokens, {plan.kv_budget_bytes / GIB:.3f} GiB), fewer than one request of "
        f"model.max_model_len={plan.max_model_len} needs ({plan.blocks_per_request} blocks, "
        f"{needed_gib:.3f} GiB). {_kv_fix(plan, needed_gib)}, or model.max_model_len<={fit_len} "
        f"(the largest that fits)."
    ]


def _no_kv_memory(c: VllmConfig, plan: MemoryPlan) -> str:
    r = plan.reserves
    parts = f"weights {_gib(plan.weight_bytes)} + activations {_gib(plan.activation_bytes)}"
    if plan.lora_bytes:
        parts += f" + LoRA slots {_gib(plan.lora_bytes)}"
    if r.total:
        parts += f" + reserves {_gib(r.total)} (CUDA context, non-torch, graph pool)"
    return (
        f"No memory left for the KV cache: {parts} = {_gib(plan.non_kv_bytes)} per device, "
        f"more than cache.memory_utilization={c.cache.memory_utilization} x "
        f"{_gib(plan.device_memory_bytes or 0)}. Use a larger parallel.tp (or pp), a quantized "
        f"model, a larger GPU, or raise cache.memory_utilization (at most 0.95)."
    )


def _gib(num_bytes: int) -> str:
    return f"{num_bytes / GIB:.2f} GiB"


def _kv_fix(plan: MemoryPlan, needed_gib: float) -> str:
    if plan.budget_key == "cache.num_blocks_override":
        return f"Use cache.num_blocks_override>={plan.blocks_per_request + 1}"
    if plan.budget_key == "cache.kv_cache_memory_gib":
        return f"Use cache.kv_cache_memory_gib>={needed_gib:.3f}"
    return "Raise cache.memory_utilization"


def _set(values: Iterable[object]) -> str:
    return "{" + ", ".join(str(v) for v in values) + "}"


def check_kv_scales_need_fp8_cache(config: VllmConfig) -> list[str]:
    """k_scale / v_scale exist only for an fp8 cache: the key would do nothing otherwise."""
    cache = config.cache
    if not cache.calculate_kv_scales or cache.cache_dtype in FP8_CACHE_DTYPES:
        return []
    return [
        f"cache.calculate_kv_scales=true needs an fp8 KV cache, but cache.cache_dtype="
        f"{cache.cache_dtype.value} keeps K/V unscaled. Use cache.cache_dtype=fp8 or "
        f"cache.calculate_kv_scales=false."
    ]


# The cross-section rules, in the order their messages are reported.
def check_quant_groups_split(config: VllmConfig) -> list[str]:
    """A group-quantized checkpoint keeps whole groups on each rank of every linear input."""
    arch, tp = config.arch, config.parallel.tp
    if arch.quantization_config is None or config.quantization_method is None:
        return []
    q = arch.num_attention_heads * arch.head_dim
    inputs = {"model.hidden_size": arch.hidden_size}
    # Row-parallel layers (o_proj, down_proj) split their input across ranks.
    sharded = {
        "attention q size (o_proj input)": q,
        "model.intermediate_size": arch.intermediate_size,
    }
    group = checkpoint_group_size(arch.quantization_config)
    return check_group_split(group, inputs, 1, arch.source) + check_group_split(
        group, sharded, tp, arch.source
    )


CONFIG_RULES: tuple[Callable[[VllmConfig], list[str]], ...] = (
    check_quant_groups_split,
    check_tp_divides_heads,
    check_tp_splits_kv_heads,
    check_tp_divides_mlp,
    check_pp_within_layers,
    check_max_model_len,
    check_sliding_window,
    check_revision_needs_hub_id,
    check_batched_tokens_cover_model_len,
    check_batched_tokens_cover_num_seqs,
    check_long_prefill_threshold,
    check_backend_world_size,
    check_nnodes_backend,
    check_master_port_per_engine,
    check_device_memory_needs_cuda,
    check_memory_utilization_needs_cuda,
    check_cudagraph_needs_cuda,
    check_cudagraph_needs_triton,
    check_triton_backend_device,
    check_lora,
    check_speculative,
    check_trust_remote_code,
    check_structured_outputs,
    check_chat_template,
    check_tool_calling,
    check_kv_scales_need_fp8_cache,
)

# Rules that depend on the machine (skipped or relaxed for dry runs).
MACHINE_RULES: tuple[Callable[[VllmConfig, CheckContext], list[str]], ...] = (
    check_device_present,
    check_world_size_fits_devices,
    check_device_memory,
    check_weights_present,
    check_tracing_installed,
    check_ray_installed,
    check_tokenizer_present,
    check_port_free,
)

# Settings that run but deserve a word; logged, never refused.
WARNING_RULES: tuple[Callable[[VllmConfig], list[str]], ...] = (
    warn_float16_on_bfloat16_checkpoint,
)
