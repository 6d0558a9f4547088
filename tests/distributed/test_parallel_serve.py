"""Through serve.py: tp=2 x pp=2 and tp=2 servers give the tp=1 completions; killing one
tensor-parallel worker mid-stream is engine death (/health 503 within 5 s), and the server
exits with no process left."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import psutil

from tests.distributed.conftest import GREEDY, MAX_MODEL_LEN, Completion, prompts
from tests.entrypoints.openai.remote_server import RemoteServer, StreamReader, process_title

SERVER_OVERRIDES = (
    "model.dtype=float32",
    "device=cpu",
    f"model.max_model_len={MAX_MODEL_LEN}",
    "cache.num_blocks_override=64",
    "scheduler.max_num_batched_tokens=32",
    "scheduler.max_num_seqs=8",
)


# Up to five processes start on two shared cores: allow more than RemoteServer's default.
STARTUP_TIMEOUT_S = 300.0


def start_server(run_dir: Path, checkpoint: Path, *parallel: str) -> RemoteServer:
    server = RemoteServer(
        run_dir,
        f"model.path={checkpoint}",
        "model.name=tiny-test",
        *SERVER_OVERRIDES,
        *parallel,
        wait=False,
    )
    server.wait_until_healthy(STARTUP_TIMEOUT_S)
    return server


def completions(server: RemoteServer) -> list[str]:
    client = server.client()
    texts = []
    for prompt in prompts():
        response = client.completions.create(
            model="tiny-test",
            prompt=prompt,
            max_tokens=GREEDY.max_tokens,
            temperature=0.0,
            extra_body={"ignore_eos": True},
        )
        texts.append(response.choices[0].text)
    return texts


def worker_processes(server: RemoteServer) -> list[psutil.Process]:
    """The engine's spawned worker processes (grandchildren of serve.py), by their titles."""
    engine = server.engine_process()
    return [p for p in engine.children() if process_title(p).startswith("VLLM_HYDRA::Worker_")]


def titles(server: RemoteServer) -> set[str]:
    family = [psutil.Process(server.proc.pid), *server.descendants()]
    return {t for p in family if (t := process_title(p)).startswith("VLLM_HYDRA::")}


def test_serve_tp2_pp2_matches_tp1(
    tmp_path: Path, parallel_checkpoints: dict[str, Path], reference: dict[str, list[Completion]]
) -> None:
    server = start_server(
        tmp_path / "run", parallel_checkpoints["llama"], "parallel.tp=2", "parallel.pp=2"
    )
    try:
        assert len(worker_processes(server)) == 4
        roles = [
            "APIServer",
            "EngineCore_DP0",
            *(f"Worker_TP{t}_PP{p}" for p in (0, 1) for t in (0, 1)),
        ]
        assert titles(server) == {f"VLLM_HYDRA::{role}" for role in roles}
        assert "(Worker_TP1_PP1 pid=" in server.output()  # the log prefix names the role too
        assert completions(server) == [text for _, text in reference["llama"]]
    finally:
        assert server.stop() == 0
    assert not any(p.is_running() for p in server.descendants())


def test_killing_a_tp_worker_is_engine_death(
    tmp_path: Path, parallel_checkpoints: dict[str, Path], reference: dict[str, list[Completion]]
) -> None:
    server = start_server(tmp_path / "run", parallel_checkpoints["qwen2"], "parallel.tp=2")
    try:
        assert completions(server) == [text for _, text in reference["qwen2"]]
        family = [psutil.Process(server.proc.pid), *server.descendants()]
        workers = worker_processes(server)
        assert len(workers) == 2
        long = {"model": "tiny-test", "prompt": [5, 6, 7], "max_tokens": 120, "ignore_eos": True}
        reader = StreamReader(server, long)
        assert reader.started.wait(60)
        workers[1].kill()
        killed_at = time.monotonic()
        while httpx.get(f"{server.url}/health").status_code != 503:
            assert time.monotonic() - killed_at < 5, "engine death not reported within 5 s"
            time.sleep(0.05)
        reader.join(30)
        assert not reader.is_alive()  # the in-flight request failed instead of hanging
        assert server.proc.wait(30) != 0
        _, alive = psutil.wait_procs(family, timeout=10)
        assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    finally:
        server.stop()
