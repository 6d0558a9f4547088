"""Done-when item 5 and the server's settings: an engine that cannot start makes serve.py exit
non-zero within seconds naming the root cause; server.port=0 logs the real URL; server.api_key
guards /v1 routes (401) and leaves /health open; server.max_queued_requests answers 503 beyond
the waiting requests it allows."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from safetensors.torch import load_file, save_file

from tests.entrypoints.openai.conftest import MODEL
from tests.entrypoints.openai.remote_server import REPO, RemoteServer, StreamReader
from tests.model_factory import TINY_LLAMA

MISSING = "model.layers.1.mlp.down_proj.weight"
KEY = "s3cret-key"


@pytest.fixture
def broken_checkpoint(tmp_path: Path) -> Path:
    """The embedded tiny model without one of its tensors."""
    path = shutil.copytree(TINY_LLAMA, tmp_path / "broken")
    tensors = load_file(path / "model.safetensors")
    del tensors[MISSING]
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def test_engine_start_up_failure_exits_non_zero_with_the_root_cause(
    broken_checkpoint: Path, tmp_path: Path
) -> None:
    cmd = [
        sys.executable,
        "serve.py",
        f"model.path={broken_checkpoint}",
        "server.port=0",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    started = time.monotonic()
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    assert time.monotonic() - started < 30  # python start-up and imports, no waiting out
    assert "Engine start-up failed" in result.stderr and MISSING in result.stderr


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> RemoteServer:
    remote = RemoteServer(
        tmp_path_factory.mktemp("keyed") / "run",
        f"server.api_key={KEY}",
        "server.port=0",
        "scheduler.max_num_seqs=1",
        "server.max_queued_requests=1",
        wait=False,
    )
    match = None
    deadline = time.monotonic() + 120
    while match is None and time.monotonic() < deadline and remote.proc.poll() is None:
        match = re.search(r"Serving the OpenAI API at (http://127\.0\.0\.1:(\d+))", remote.output())
        time.sleep(0.1)
    assert match is not None, remote.output()
    assert int(match.group(2)) != 0
    remote.url, remote.port = match.group(1), int(match.group(2))  # port 0: the real one
    remote.wait_until_healthy()
    yield remote
    remote.stop()


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}],
    ids=["missing", "wrong", "not bearer"],
)
def test_api_key_refuses_bad_tokens(keyed_server: RemoteServer, headers: dict) -> None:
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/completions")):
        response = httpx.request(
            method, keyed_server.url + path, headers=headers, json={"prompt": "x"}
        )
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["code"] == "invalid_api_key" and set(error) == {
            "message",
            "type",
            "param",
            "code",
        }


def test_api_key_admits_the_right_token_and_health_stays_open(keyed_server: RemoteServer) -> None:
    assert httpx.get(f"{keyed_server.url}/health").status_code == 200
    client = keyed_server.client(api_key=KEY)
    reply = client.completions.create(model=MODEL, prompt="Hello", max_tokens=3)
    assert reply.usage.completion_tokens >= 1
    with pytest.raises(openai.AuthenticationError):
        keyed_server.client(api_key="nope").models.list()
    assert (keyed_server.run_dir / "resolved_config.yaml").exists()


def test_requests_beyond_the_queue_limit_get_503(keyed_server: RemoteServer) -> None:
    body = {"model": MODEL, "prompt": "Hi", "max_tokens": 2000, "ignore_eos": True}
    auth = {"Authorization": f"Bearer {KEY}"}
    readers = [StreamReader(keyed_server, body, headers=auth)]  # runs (max_num_seqs=1)
    assert readers[0].started.wait(30)
    readers.append(StreamReader(keyed_server, body, headers=auth))  # waits: the one allowed
    deadline = time.monotonic() + 10
    while httpx.get(f"{keyed_server.url}/debug/engine_stats").json()["num_waiting"] != 1:
        assert time.monotonic() < deadline, "the second request never queued"
        time.sleep(0.05)
    url = f"{keyed_server.url}/v1/completions"
    busy = httpx.post(url, json={**body, "max_tokens": 2}, headers=auth)
    assert busy.status_code == 503 and busy.json()["error"]["code"] == "queue_full"
    for reader in readers:
        reader.stop()
    deadline = time.monotonic() + 10
    while httpx.post(url, json={**body, "max_tokens": 2}, headers=auth).status_code != 200:
        assert time.monotonic() < deadline, "the queue never drained after the clients left"
        time.sleep(0.1)


def _files_holding(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret in p.read_text(errors="ignore")]


def test_api_key_is_written_nowhere_by_a_real_start(keyed_server: RemoteServer) -> None:
    """Issue 15: the key is redacted in the run dir (.hydra/, resolved_config.yaml) and logs."""
    assert any(keyed_server.run_dir.rglob("*.yaml"))
    assert _files_holding(keyed_server.run_dir, KEY) == []
    assert KEY not in keyed_server.output()


def test_a_real_start_logs_where_each_value_came_from(keyed_server: RemoteServer) -> None:
    output = keyed_server.output()
    assert "Non-default config values (and where each came from):" in output
    assert re.search(r"server\.api_key=\*\*\* +command line", output)
    assert re.search(r"scheduler\.max_num_seqs=1 +command line", output)
    provenance = yaml.safe_load((keyed_server.run_dir / "resolved_config.yaml").read_text())
    assert provenance["provenance"]["server.max_queued_requests"] == "command line"


@pytest.mark.parametrize(
    "args", [["dry_run=true"], ["--cfg", "job", "--resolve"]], ids=["dry-run", "cfg-resolve"]
)
def test_api_key_is_written_nowhere_by_a_dry_run(tmp_path: Path, args: list[str]) -> None:
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "serve.py", *args, f"server.api_key={KEY}", f"hydra.run.dir={run_dir}"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "api_key" in result.stdout  # the key's field is shown, its value is not
    assert KEY not in result.stdout + result.stderr
    if run_dir.exists():
        assert _files_holding(run_dir, KEY) == []
