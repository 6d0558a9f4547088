"""Misconfigurations vLLM users report, each tried with `python serve.py` as a user would:
the exit status and the words the message must contain, and never a traceback."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "vllm_hydra" / "assets" / "tiny-llama"

# (id, overrides, exit status, words in the output; "!word": a word that must not appear).
# `{awq}` is a checkpoint directory whose config.json declares a quantization_config the engine
# lacks (HQQ). The busy port, the run dir that reproduces a run (tests/config/test_provenance.py)
# and the key in a real start's files (tests/entrypoints/openai/test_serve_startup.py) need
# more than one command and have their own tests.
CASES: list[tuple[str, list[str], int, list[str]]] = [
    ("mistyped profile", ["profile=h100-llama3"], 1, ["profile/h100-llama3", "h100-llama3-8b"]),
    ("missing local", ["local=nonexistent"], 2, ["local=nonexistent", "no such option"]),
    (
        "rope_scaling on a rope_parameters checkpoint",
        ["+model.hf_overrides={rope_scaling:{rope_type:linear,factor:2.0}}"],
        0,
        ["rope_type: linear", "max_model_len           4096 (model limit: 4096)"],
    ),
    ("quantized checkpoint", ["model.path={awq}"], 2, ["quant_method", "hqq", "awq, gptq"]),
    ("quantization key", ["+model.quantization=awq"], 2, ["model.quantization=awq", "declares"]),
    (
        "float16 on a bfloat16 checkpoint, context beyond training",
        ["model.dtype=float16", "+model.hf_overrides.max_position_embeddings=4096"],
        0,
        ["WARNING", "model.dtype=float16 on a bfloat16 checkpoint", "exceeds the length"],
    ),
    (
        "memory_utilization=1.0",
        ["device=cuda", "model=llama3", "cache.memory_utilization=1.0"],
        2,
        ["cache.memory_utilization=1.0 leaves nothing", "<=0.95"],
    ),
    (
        "dp x tp GPUs stated",
        ["device=cuda", "model=llama3", "parallel.dp=4", "parallel.tp=4"],
        0,
        ["devices needed          16 GPUs (tp 4 x pp 1 x dp 4)"],
    ),
    (
        "missing adapter dir",
        ["lora=enabled", "+lora.adapters.a=/nonexistent/adapter"],
        2,
        ["lora.adapters.a=/nonexistent/adapter", "adapter_config.json"],
    ),
    ("missing tokenizer dir", ["model.tokenizer=/nonexistent/tok"], 2, ["model.tokenizer="]),
    ("trust_remote_code", ["model.trust_remote_code=true"], 2, ["model.trust_remote_code=false"]),
    ("+ on a typo", ["+parallel.tpp=4"], 1, ["parallel.tpp", "Did you mean parallel.tp"]),
    ("typo", ["parallel.tpp=4"], 1, ["Did you mean parallel.tp or parallel.pp?"]),
    (
        "unset environment variable",
        ["server.api_key=${oc.env:VLLM_HYDRA_TEST_UNSET}"],
        2,
        ["server.api_key", "VLLM_HYDRA_TEST_UNSET", "${oc.env:NAME,null}"],
    ),
    (
        "four mistakes at once",
        ["parallel.tp=3", "parallel.pp=8", "cache.block_size=24", "scheduler.max_num_seqs=0"],
        2,
        ["4 config errors", "parallel.tp=3", "parallel.pp=8", "block_size=24", "max_num_seqs=0"],
    ),
    ("bad override grammar", ["a=1 b=2"], 1, ["not a valid override"]),
    (
        "24 GiB GPU plan reserves context, non-torch, graphs",
        ["device=cuda", "model=llama3", "device.memory_gib=24"],
        0,
        ["CUDA context (reserve)", "non-torch allocations", "of which 16.00 GiB not KV cache"],
    ),
    (
        "a GPU too small once the reserves are counted",
        ["device=cuda", "model=llama3", "device.memory_gib=16"],
        2,
        ["No memory left for the KV cache", "reserves 0.75 GiB", "= 16.00 GiB per device"],
    ),
    (
        "max_model_len=auto",
        ["model.max_model_len=auto", "cache.kv_cache_memory_gib=1MiB"],
        0,
        ["max_model_len           496", "auto: the KV cache holds 496 tokens"],
    ),
    (
        "a size that is not one",
        ["model.max_model_len=32kb", "cache.kv_cache_memory_gib=4parsecs"],
        2,
        ["2 config errors", "model.max_model_len='32kb' is not a token count", "=512MiB"],
    ),
    (
        "a bad chat template",
        ["model.chat_template='{% for m in messages %}'"],
        2,
        ["model.chat_template=", "is not a valid Jinja template"],
    ),
    (
        "an API key on the command line",
        ["server.api_key=misconfig-secret-key"],
        0,
        ["api_key: '***'", "server.api_key=***", "!misconfig-secret-key"],
    ),
    ("help", ["--help"], 0, ["Config groups", "cache.kv_cache_memory_gib: size = null"]),
    (
        "a dry-run multirun with an invalid job",
        ["-m", "model=llama3", "device=cuda", "parallel.tp=3,4"],
        2,
        ["2 jobs, 1 invalid", "| 1 | parallel.tp=4 | yes |", "parallel.tp=3 does not divide"],
    ),
    (
        "a real multirun",
        ["-m", "dry_run=false", "scheduler.max_num_seqs=8,16"],
        2,
        ["serve.py -m without dry_run=true", "scripts/bench.py -m"],
    ),
]


@pytest.fixture(scope="module")
def awq_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("awq")
    hf = json.loads((TINY / "config.json").read_text())
    hf["quantization_config"] = {"quant_method": "hqq", "bits": 4, "group_size": 128}
    (path / "config.json").write_text(json.dumps(hf))
    shutil.copy(TINY / "model.safetensors", path / "model.safetensors")
    return path


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def serve(args: list[str], run_dir: Path) -> subprocess.CompletedProcess[str]:
    dirs = [f"hydra.run.dir={run_dir}", f"hydra.sweep.dir={run_dir}"]
    cmd = [sys.executable, "serve.py", *args, *dirs]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize(
    ("overrides", "status", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_dry_run_misconfiguration(
    overrides: list[str], status: int, words: list[str], awq_checkpoint: Path, tmp_path: Path
) -> None:
    args = [o.format(awq=awq_checkpoint) if "{awq}" in o else o for o in overrides]
    if not any(a.startswith("dry_run=") for a in args):
        args.append("dry_run=true")
    result = serve(args, tmp_path / "run")
    output = result.stdout + result.stderr
    assert result.returncode == status, output
    for word in words:
        if word.startswith("!"):  # must not appear anywhere
            assert word[1:] not in output
        else:
            assert word in output
    assert "Traceback" not in output


def test_busy_port_fails_before_the_model_loads(busy_port: int, tmp_path: Path) -> None:
    result = serve([f"server.port={busy_port}", "cache.kv_cache_memory_gib=0.05"], tmp_path / "r")
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert f"server.port={busy_port}" in output and "server.port=0 picks a free one" in output
    assert "Traceback" not in output and "Loading" not in output
