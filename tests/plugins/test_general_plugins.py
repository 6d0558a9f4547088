"""A general plugin package, built in a temporary directory with an entry-point distribution
(dist-info) and put on PYTHONPATH: it registers a new architecture name and ships a
`conf/model/` option, and `python serve.py model=<that option>` serves it with greedy tokens
equal to transformers' for the same weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from tests.entrypoints.openai.remote_server import REPO, RemoteServer
from tests.model_factory import write_random_checkpoint

PLUGIN = "hydra_tiny_plugin"
ARCH = "PluginLlamaForCausalLM"
NUM_NEW_TOKENS = 16


def write_plugin(root: Path, checkpoint: Path, register_body: str) -> Path:
    """A plugin package and its dist-info under `root`, as `pip install` would lay them."""
    package = root / PLUGIN
    (package / "conf" / "model").mkdir(parents=True)
    (package / "__init__.py").write_text(f"def register() -> None:\n{register_body}")
    (package / "model.py").write_text(
        "from vllm_hydra.model_executor.models.llama import LlamaForCausalLM\n\n\n"
        f"class {ARCH}(LlamaForCausalLM):\n    pass\n"
    )
    (package / "conf" / "model" / "plugin-llama.yaml").write_text(
        textwrap.dedent(f"""\
            defaults:
              - /schema/model@_here_
              - _self_
            name: plugin-llama
            path: {checkpoint}
            dtype: float32
            max_model_len: 128
            """)
    )
    dist_info = root / f"{PLUGIN}-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PLUGIN}\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(
        f"[vllm_hydra.general_plugins]\ntiny = {PLUGIN}:register\n"
    )
    return root


REGISTER = (
    "    from vllm_hydra.model_executor.models import ModelRegistry\n\n"
    f"    ModelRegistry.register_model('{ARCH}', '{PLUGIN}.model:{ARCH}')\n"
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_random_checkpoint("llama", tmp_path_factory.mktemp("ckpt"))
    hf = json.loads((path / "config.json").read_text())
    hf["architectures"] = [ARCH]  # no built-in class serves this name
    (path / "config.json").write_text(json.dumps(hf))
    return path


@pytest.fixture(scope="module")
def server(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteServer]:
    plugin_root = write_plugin(tmp_path_factory.mktemp("site"), checkpoint, REGISTER)
    remote = RemoteServer(
        tmp_path_factory.mktemp("serve") / "run",
        "model=plugin-llama",
        "device=cpu",
        "cache.kv_cache_memory_gib=0.05",
        env={"PYTHONPATH": str(plugin_root)},
    )
    yield remote
    remote.stop()


def _hf_greedy(path: Path, prompt: list[int]) -> list[int]:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    config = GenerationConfig(
        max_new_tokens=NUM_NEW_TOKENS, do_sample=False, eos_token_id=-1, pad_token_id=0
    )
    out = model.generate(torch.tensor([prompt]), generation_config=config)
    return out[0, len(prompt) :].tolist()


def test_plugin_model_option_serves_transformers_tokens(
    server: RemoteServer, checkpoint: Path
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    client = server.client()
    prompts = [[5, 17, 300, 41, 2000, 9], [100, 200, 300, 400, 500, 600, 700, 800]]
    expected = [_hf_greedy(checkpoint, p) for p in prompts]
    assert expected[0] != expected[1] and len(set(expected[0])) > 3, "reference must vary"
    for prompt, tokens in zip(prompts, expected, strict=True):
        reply = client.completions.create(
            model="plugin-llama",
            prompt=prompt,
            max_tokens=NUM_NEW_TOKENS,
            temperature=0,
            extra_body={"ignore_eos": True},
        )
        assert reply.choices[0].text == tokenizer.decode(tokens, skip_special_tokens=True)
    assert "Loaded general plugin tiny" in server.output()


def test_a_failing_plugin_stops_start_up(checkpoint: Path, tmp_path: Path) -> None:
    body = "    raise RuntimeError('no licence server')\n"
    plugin_root = write_plugin(tmp_path / "site", checkpoint, body)
    result = subprocess.run(
        [sys.executable, "serve.py", "dry_run=true", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(plugin_root)},
    )
    assert result.returncode == 3, result.stderr
    assert "plugin tiny (hydra_tiny_plugin:register" in result.stderr
    assert "RuntimeError: no licence server" in result.stderr
    assert "Traceback" not in result.stderr
