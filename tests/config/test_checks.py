"""One test per validation rule: each bad config fails before any weight is read, with a
message that names the key, the value, the limit and a fix."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest

from vllm_hydra.config import ConfigError, DeviceType, ToolCallParser, checks, compose_config
from vllm_hydra.config.checks import (
    CheckContext,
    check_device_memory,
    check_world_size_fits_devices,
)


def _error(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        compose_config(overrides)
    return str(info.value)


@pytest.fixture
def ckpt(write_checkpoint) -> Path:
    return write_checkpoint()


def _with(ckpt: Path, *overrides: str) -> list[str]:
    return [f"model.path={ckpt}", "device=cpu", *overrides]


# ---- single fields ----


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.max_model_len=0", "model.max_model_len=0 is out of range: it must be >= 1"),
        ("cache.memory_utilization=1.5", "cache.memory_utilization=1.5 is out of range"),
        ("cache.kv_cache_memory_gib=0", "cache.kv_cache_memory_gib=0.0 is out of range"),
        ("cache.num_blocks_override=0", "cache.num_blocks_override=0 is out of range"),
        ("parallel.tp=0", "parallel.tp=0 is out of range: it must be >= 1"),
        ("parallel.dp=-1", "parallel.dp=-1 is out of range"),
        ("parallel.master_port=70000", "parallel.master_port=70000 is out of range"),
        ("scheduler.max_num_seqs=0", "scheduler.max_num_seqs=0 is out of range"),
        ("scheduler.max_num_batched_tokens=0", "scheduler.max_num_batched_tokens=0 is out"),
        ("scheduler.long_prefill_token_threshold=-1", "long_prefill_token_threshold=-1"),
        ("observability.stats_interval_s=0", "observability.stats_interval_s=0.0 is out"),
        ("server.port=-1", "server.port=-1 is out of range"),
        ("server.shutdown_timeout_s=-1", "server.shutdown_timeout_s=-1.0 is out of range"),
        ("server.max_queued_requests=0", "server.max_queued_requests=0 is out of range"),
        ("device.memory_gib=0", "device.memory_gib=0.0 is out of range"),
    ],
)
def test_field_ranges(ckpt: Path, override: str, expected: str) -> None:
    assert expected in _error(_with(ckpt, override))


def test_range_errors_are_reported_together(ckpt: Path) -> None:
    message = _error(_with(ckpt, "parallel.tp=0", "server.port=-1"))
    assert message.startswith("2 config errors:")
    assert "parallel.tp=0" in message and "server.port=-1" in message


def test_block_size_must_be_a_power_of_two(ckpt: Path) -> None:
    message = _error(_with(ckpt, "cache.block_size=24"))
    assert "cache.block_size=24 is not a power of two in [1, 256]" in message
    assert "cache.block_size=16" in message


def test_capture_sizes_must_be_positive(ckpt: Path) -> None:
    overrides = ["compilation=cudagraph", "compilation.cudagraph_capture_sizes=[1,0]"]
    message = _error([f"model.path={ckpt}", "device=cuda", "dry_run=true", *overrides])
    assert "compilation.cudagraph_capture_sizes=[1, 0] holds [0]" in message


def test_compile_cache_dir_needs_torch_compile(ckpt: Path) -> None:
    message = _error(_with(ckpt, "compilation.cache_dir=/tmp/x"))
    assert "compilation.cache_dir=/tmp/x has no effect with compilation.mode=none" in message


def test_capture_sizes_need_cudagraph_mode(ckpt: Path) -> None:
    message = _error(_with(ckpt, "compilation.cudagraph_capture_sizes=[1,2]"))
    assert "has no effect with compilation.mode=none" in message


def test_memory_utilization_applies_to_gpus_only(ckpt: Path) -> None:
    message = _error(_with(ckpt, "cache.memory_utilization=0.5"))
    assert "cache.memory_utilization=0.5 applies to GPUs, but device=cpu" in message
    gpu = compose_config(_with(ckpt, "device=cuda", "dry_run=true"))
    assert gpu.cache.memory_utilization == 0.9


def test_device_memory_applies_to_gpus_only(ckpt: Path) -> None:
    message = _error(_with(ckpt, "device.memory_gib=16"))
    assert "device.memory_gib=16.0 applies to GPUs, but device=cpu" in message


# ---- model and parallelism ----


def test_tp_must_divide_attention_heads(ckpt: Path) -> None:
    message = _error(_with(ckpt, "parallel.tp=4", "model.name=tiny"))
    assert message == (
        "parallel.tp=4 does not divide model.num_attention_heads=6 (model=tiny). "
        "Use parallel.tp in {1, 2}."
    )


def test_tp_must_split_or_replicate_kv_heads(write_checkpoint) -> None:
    ckpt = write_checkpoint(num_attention_heads=12, num_key_value_heads=8, hidden_size=384)
    message = _error(_with(ckpt, "parallel.tp=3"))
    assert "parallel.tp=3 neither divides nor is a multiple of" in message
    assert "model.num_key_value_heads=8" in message
    assert "Use parallel.tp in {1, 2, 4}" in message


def test_tp_must_divide_the_mlp(write_checkpoint) -> None:
    ckpt = write_checkpoint(intermediate_size=1004, num_attention_heads=8, num_key_value_heads=8)
    message = _error(_with(ckpt, "parallel.tp=8"))
    assert "parallel.tp=8 does not divide model.intermediate_size=1004" in message
    assert "Use parallel.tp in {1, 2, 4}" in message


def test_pp_needs_a_layer_per_stage(ckpt: Path) -> None:
    message = _error(_with(ckpt, "parallel.pp=5"))
    assert "parallel.pp=5 exceeds model.num_hidden_layers=4" in message
    assert "Use parallel.pp<=4" in message


def test_max_model_len_within_the_models_limit(ckpt: Path) -> None:
    message = _error(_with(ckpt, "model.max_model_len=4096"))
    assert "model.max_model_len=4096 exceeds the model's limit 2048" in message
    assert "max_position_embeddings" in message and "Use model.max_model_len<=2048" in message


def test_sliding_window_only_where_it_is_built(write_checkpoint) -> None:
    qwen = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"}
    ckpt = write_checkpoint("qwen", sliding_window=1024, use_sliding_window=True, **qwen)
    message = _error(_with(ckpt))
    assert "sliding-window attention on some layers" in message
    assert "+model.hf_overrides.use_sliding_window=false" in message
    assert compose_config(_with(ckpt, "+model.hf_overrides.use_sliding_window=false"))
    mistral = {"architectures": ["MistralForCausalLM"], "model_type": "mistral"}
    windowed = compose_config(_with(write_checkpoint("m", sliding_window=1024, **mistral)))
    assert windowed.arch.sliding_window == 1024
    llama = compose_config(_with(write_checkpoint("l", sliding_window=1024)))
    assert llama.arch.sliding_window is None  # Llama ignores the key, as transformers does


def test_revision_applies_to_hub_ids_only(ckpt: Path) -> None:
    message = _error(_with(ckpt, "model.revision=main"))
    assert "model.revision=main applies to hub ids" in message
    assert "Remove model.revision" in message


def test_unsupported_architecture_is_named(write_checkpoint) -> None:
    ckpt = write_checkpoint(architectures=["GPT2LMHeadModel"])
    message = _error(_with(ckpt))
    assert "architectures=['GPT2LMHeadModel']" in message
    assert "LlamaForCausalLM" in message


def test_unsupported_activation_and_rope(write_checkpoint) -> None:
    assert "hidden_act=gelu" in _error(_with(write_checkpoint("a", hidden_act="gelu")))
    yarn = {"rope_theta": 1e4, "rope_type": "yarn", "factor": 4.0}
    assert "rope_type=yarn" in _error(_with(write_checkpoint("b", rope_parameters=yarn)))


def test_missing_model_path_and_config(tmp_path: Path) -> None:
    assert "model.path is empty" in _error(["model.path="])
    missing = _error([f"model.path={tmp_path / 'nope'}"])
    assert "is neither a local directory nor a hub id" in missing
    assert "no config.json" in _error([f"model.path={tmp_path}"])


# ---- scheduler ----


def test_batched_tokens_cover_max_model_len_without_chunking(ckpt: Path) -> None:
    message = _error(
        _with(
            ckpt,
            "scheduler.enable_chunked_prefill=false",
            "scheduler.max_num_batched_tokens=1024",
        )
    )
    assert "scheduler.max_num_batched_tokens=1024 is smaller than model.max_model_len=2048" in (
        message
    )
    assert "Use scheduler.max_num_batched_tokens>=2048" in message


def test_batched_tokens_cover_max_num_seqs(ckpt: Path) -> None:
    message = _error(_with(ckpt, "scheduler.max_num_batched_tokens=64"))
    assert "scheduler.max_num_batched_tokens=64 is smaller than scheduler.max_num_seqs=128" in (
        message
    )


def test_long_prefill_threshold_within_max_model_len(ckpt: Path) -> None:
    overrides = _with(ckpt, "model.max_model_len=512", "scheduler.long_prefill_token_threshold=600")
    message = _error(overrides)
    assert "scheduler.long_prefill_token_threshold=600 exceeds model.max_model_len=512" in message


# ---- executor and device ----


def test_fixed_master_port_with_several_parallel_engines_is_refused(ckpt: Path) -> None:
    overrides = _with(ckpt, "parallel.dp=2", "parallel.tp=2", "parallel.master_port=29500")
    message = _error(overrides)
    assert "parallel.master_port=29500 with parallel.dp=2" in message
    assert "parallel.master_port=null" in message


def test_uni_backend_runs_one_worker(ckpt: Path) -> None:
    message = _error(_with(ckpt, "parallel.backend=uni", "parallel.tp=2"))
    assert "parallel.backend=uni runs one worker, but parallel.tp x parallel.pp = 2" in message


def test_more_than_one_node_needs_ray(ckpt: Path) -> None:
    assert "Use parallel.backend=ray" in _error(_with(ckpt, "parallel.nnodes=2"))


def test_cuda_must_be_present_for_a_real_run(ckpt: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    message = _error([f"model.path={ckpt}", "device=cuda"])
    assert "device=cuda, but torch sees no CUDA device" in message
    assert compose_config([f"model.path={ckpt}", "device=cuda", "dry_run=true"])


def test_world_size_against_devices(ckpt: Path, caplog: pytest.LogCaptureFixture) -> None:
    gpu = compose_config([f"model.path={ckpt}", "device=cuda", "dry_run=true", "parallel.tp=2"])
    one_gpu = CheckContext(dry_run=False, cuda_device_count=1, cpu_count=2)
    (message,) = check_world_size_fits_devices(gpu, one_gpu)
    assert "= 2 GPUs, but 1 CUDA device(s) are visible" in message
    cpu_device = replace(gpu.device, type=DeviceType.cpu)
    cpu = replace(gpu, device=cpu_device, parallel=replace(gpu.parallel, dp=2))
    with caplog.at_level(logging.WARNING):
        assert check_world_size_fits_devices(cpu, one_gpu) == []
    assert "share 2 CPU cores" in caplog.text


def test_device_memory_within_the_gpu(ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    class Props:
        total_memory = 16 << 30

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda _: Props())
    config = compose_config(_with(ckpt, "device=cuda", "device.memory_gib=80", "dry_run=true"))
    ctx = CheckContext(dry_run=False, cuda_device_count=1, cpu_count=2)
    (message,) = check_device_memory(config, ctx)
    assert "device.memory_gib=80.0 exceeds the GPU's 16.00 GiB" in message


def test_cudagraph_needs_cuda(ckpt: Path) -> None:
    message = _error(_with(ckpt, "compilation=cudagraph"))
    assert "compilation.mode=cudagraph needs CUDA, but device=cpu: CUDA graphs record" in message


def test_cudagraph_needs_the_triton_backend(ckpt: Path) -> None:
    overrides = ["device=cuda", "dry_run=true", "compilation=cudagraph", "attention=torch"]
    message = _error(_with(ckpt, *overrides))
    assert "compilation.mode=cudagraph needs attention.backend=triton" in message


def test_triton_on_cpu_needs_the_interpreter(ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert "TRITON_INTERPRET=1" in _error(_with(ckpt, "attention=triton"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert compose_config(_with(ckpt, "attention=triton")).attention.backend.value == "triton"


# ---- lora and speculative decoding ----


def test_lora_rules(ckpt: Path) -> None:
    assert "lora.max_lora_rank=24 is not a supported rank" in _error(
        _with(ckpt, "lora=enabled", "lora.max_lora_rank=24")
    )
    assert "lora.max_cpu_loras=1 is smaller than lora.max_loras=2" in _error(
        _with(ckpt, "lora=enabled", "lora.max_loras=2", "lora.max_cpu_loras=1")
    )
    assert "lora.adapters is set but lora.enabled=false" in _error(
        _with(ckpt, "+lora.adapters.sql=/tmp/sql")
    )


def test_speculative_rules(ckpt: Path) -> None:
    assert "speculative.num_speculative_tokens=0 must be >= 1" in _error(
        _with(ckpt, "speculative=ngram", "speculative.num_speculative_tokens=0")
    )
    assert "1 <= prompt_lookup_min <= prompt_lookup_max" in _error(
        _with(ckpt, "speculative=ngram", "speculative.prompt_lookup_min=5")
    )
    assert "has no effect with speculative.method=none" in _error(
        _with(ckpt, "speculative.num_speculative_tokens=2")
    )
    assert "speculative.model=/x has no effect with speculative.method=ngram" in _error(
        _with(ckpt, "speculative=ngram", "speculative.model=/x")
    )
    assert "speculative.disable_by_batch_size=0 must be >= 1" in _error(
        _with(ckpt, "speculative=ngram", "speculative.disable_by_batch_size=0")
    )


def test_draft_model_rules(ckpt: Path, write_checkpoint) -> None:
    assert "speculative.method=draft_model needs speculative.model" in _error(
        _with(ckpt, "speculative=draft_model", "speculative.model=null")
    )
    assert "speculative.model=/nonexistent is not a checkpoint directory" in _error(
        _with(ckpt, "speculative=draft_model", "speculative.model=/nonexistent")
    )
    other_vocab = write_checkpoint("draft", vocab_size=512)
    message = _error(_with(ckpt, "speculative=draft_model", f"speculative.model={other_vocab}"))
    assert f"speculative.model={other_vocab} has vocab_size=512, the target" in message
    draft = write_checkpoint("draft2", num_hidden_layers=1, max_position_embeddings=256)
    base = _with(ckpt, "speculative=draft_model", f"speculative.model={draft}")
    config = compose_config(base)
    assert config.draft_model_arch is not None and config.draft_model_arch.num_hidden_layers == 1
    # Unset values resolve from the target (the length capped by the draft's limit).
    assert config.speculative.max_model_len == 256
    assert config.speculative.dtype == config.model.dtype
    assert config.speculative.draft_tensor_parallel_size == 1
    assert "speculative.max_model_len=512 exceeds the draft model's limit 256" in _error(
        [*base, "speculative.max_model_len=512"]
    )
    assert "speculative.draft_tensor_parallel_size=3 must be 1 or parallel.tp=2" in _error(
        [*base, "parallel.tp=2", "speculative.draft_tensor_parallel_size=3", "dry_run=true"]
    )


def test_draft_model_tokenizer_must_be_the_targets(tmp_path: Path) -> None:
    """Same vocab_size, different token -> id maps: refused before any weight loads."""
    import json
    import shutil

    from tests.model_factory import TINY_LLAMA

    draft = tmp_path / "draft"
    shutil.copytree(TINY_LLAMA, draft)
    tokenizer = json.loads((draft / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    a, b = list(vocab)[100:102]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (draft / "tokenizer.json").write_text(json.dumps(tokenizer))
    message = _error(["speculative=draft_model", f"speculative.model={draft}", "device=cpu"])
    assert "its tokenizer differs from the target's (2 of 4096 tokens" in message
    ok = compose_config(["speculative=draft_model"])  # the default: the tiny model itself
    assert ok.draft_model_dir == str(TINY_LLAMA)


# ---- files and memory ----


def test_weights_must_be_on_disk_for_a_real_run(write_checkpoint) -> None:
    ckpt = write_checkpoint(weights=False)
    assert "holds no *.safetensors weights" in _error(_with(ckpt))
    assert compose_config(_with(ckpt, "load.format=dummy"))
    assert compose_config(_with(ckpt, "dry_run=true"))


def test_hub_id_without_weights_needs_dummy_or_a_directory() -> None:
    message = _error(["model=llama3", "device=cpu", "cache.kv_cache_memory_gib=8"])
    assert "model.path=meta-llama/Meta-Llama-3-8B-Instruct is not on this machine" in message
    assert "load.format=dummy" in message


def test_kv_cache_must_hold_one_full_request(ckpt: Path) -> None:
    # 4 layers x 2 KV heads x 64 dims x 2 (K, V) x 2 bytes = 2048 B per token.
    message = _error(_with(ckpt, "cache.kv_cache_memory_gib=0.001"))
    # 32 blocks of 16 tokens, one of them the reserved null block.
    assert "cache.kv_cache_memory_gib: the KV cache holds 31 usable blocks (496 tokens" in message
    assert "fewer than one request of model.max_model_len=2048 needs (128 blocks" in message
    assert "Use cache.kv_cache_memory_gib>=0.004, or model.max_model_len<=496" in message
    assert compose_config(_with(ckpt, "cache.kv_cache_memory_gib=0.001", "model.max_model_len=496"))


def test_num_blocks_override_must_hold_one_request(ckpt: Path) -> None:
    message = _error(_with(ckpt, "cache.num_blocks_override=10"))
    assert "Use cache.num_blocks_override>=129, or model.max_model_len<=144" in message


def test_gpu_without_room_for_the_kv_cache() -> None:
    message = _error(["model=llama3-70b", "device=cuda", "dry_run=true"])
    assert message.startswith("No memory left for the KV cache")
    assert "cache.memory_utilization=0.9 x 80.00 GiB" in message
    assert compose_config(["model=llama3-70b", "device=cuda", "dry_run=true", "parallel.tp=4"])


def test_tracing_needs_the_tracing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = "observability.otlp_traces_endpoint=http://127.0.0.1:4318/v1/traces"
    # As if OpenTelemetry were not installed: the rule looks for modules that are not there.
    monkeypatch.setattr(checks, "TRACING_MODULES", ("opentelemetry_absent.sdk.trace",))
    message = _error([endpoint])
    assert "observability.otlp_traces_endpoint=http://127.0.0.1:4318/v1/traces" in message
    assert "tracing extra" in message and "opentelemetry_absent.sdk.trace" in message
    compose_config(["dry_run=true", endpoint])  # a dry run loads nothing: no refusal


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (
            ["server.enable_auto_tool_choice=true"],
            ["server.enable_auto_tool_choice=true", "server.tool_call_parser", "hermes"],
        ),
        (
            ["server.tool_call_parser=hermes"],
            ["server.tool_call_parser=hermes", "no effect", "enable_auto_tool_choice=true"],
        ),
    ],
)
def test_tool_call_keys_only_work_together(
    ckpt: Path, overrides: list[str], words: list[str]
) -> None:
    message = _error(_with(ckpt, *overrides))
    assert all(word in message for word in words), message


def test_tool_call_keys_together_are_accepted(ckpt: Path) -> None:
    config = compose_config(
        _with(ckpt, "server.enable_auto_tool_choice=true", "server.tool_call_parser=llama3_json")
    )
    assert config.server.tool_call_parser is ToolCallParser.llama3_json
