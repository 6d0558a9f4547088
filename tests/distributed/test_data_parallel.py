"""Data parallel (parallel.dp=2) on CPU, on tiny random Llama and Qwen2 checkpoints (fp32):
greedy tokens equal dp=1's through the offline `LLM` (also with tp=2 inside each engine) and
through `serve.py`; 32 concurrent
requests all complete and both engines serve some (from each engine's stats); leaving a stream
frees its KV blocks on the engine that held it; killing one engine gives /health 503 and the
server exits with no process left."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from tests.engine.conftest import child_pids
from tests.entrypoints.openai.remote_server import RemoteServer, process_title
from tests.model_factory import write_random_checkpoint
from vllm_hydra import LLM, SamplingParams
from vllm_hydra.request_output import RequestOutput

NUM_NEW_TOKENS = 16
NUM_CONCURRENT = 32
SERVED_NAME = "tiny-dp"
GREEDY = SamplingParams(max_tokens=NUM_NEW_TOKENS, temperature=0.0, ignore_eos=True)


def _prompts() -> list[list[int]]:
    gen = torch.Generator().manual_seed(7)
    return [torch.randint(3, 4096, (n,), generator=gen).tolist() for n in (4, 9, 15, 23, 31, 40)]


PROMPTS = _prompts()


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(request.param, tmp_path_factory.mktemp(request.param))


def _overrides(checkpoint: Path) -> list[str]:
    return [
        f"model.path={checkpoint}",
        "model.dtype=float32",
        "model.max_model_len=256",
        "device=cpu",
        "cache.kv_cache_memory_gib=0.05",
        f"server.served_model_name={SERVED_NAME}",
    ]


def _token_ids(outputs: list[RequestOutput]) -> list[list[int]]:
    return [list(output.outputs[0].token_ids) for output in outputs]


@pytest.fixture(scope="module")
def reference(checkpoint: Path) -> list[RequestOutput]:
    """dp=1, in process: the tokens every dp=2 run must reproduce."""
    llm = LLM(_overrides(checkpoint))
    outputs = llm.generate(PROMPTS, GREEDY, use_tqdm=False)
    llm.shutdown()
    tokens = _token_ids(outputs)
    assert len({t for seq in tokens for t in seq}) > NUM_NEW_TOKENS  # outputs really vary
    return outputs


def test_offline_dp2_equals_dp1(checkpoint: Path, reference: list[RequestOutput]) -> None:
    before = child_pids()
    llm = LLM([*_overrides(checkpoint), "parallel.dp=2"])
    try:
        assert len(llm.engine_core.engine_pids) == 2
        outputs = llm.generate(PROMPTS, GREEDY, use_tqdm=False)
        assert _token_ids(outputs) == _token_ids(reference)
        stats = llm.engine_core.call_utility_all("get_stats")
        assert [s["engine_index"] for s in stats] == [0, 1]
        assert llm.engine_core.call_utility("get_stats", engine_index=1)["engine_index"] == 1
        assert all(s["num_finished_requests"] > 0 for s in stats)
        assert sum(s["num_finished_requests"] for s in stats) == len(PROMPTS)
    finally:
        llm.shutdown()
    assert child_pids() <= before


def test_offline_tp2_dp2_equals_dp1(checkpoint: Path, reference: list[RequestOutput]) -> None:
    """Each dp engine builds its executor with Executor.get_class: here two tp=2 engines,
    each with its own two workers (mp backend)."""
    before = child_pids()
    llm = LLM([*_overrides(checkpoint), "parallel.tp=2", "parallel.dp=2"])
    try:
        outputs = llm.generate(PROMPTS, GREEDY, use_tqdm=False)
        assert _token_ids(outputs) == _token_ids(reference)
        stats = llm.engine_core.call_utility_all("get_stats")
        assert all(s["num_finished_requests"] > 0 for s in stats)
    finally:
        llm.shutdown()
    assert child_pids() <= before


@pytest.fixture(scope="module")
def server(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteServer]:
    remote = RemoteServer(
        tmp_path_factory.mktemp("serve_dp") / "run", *_overrides(checkpoint), "parallel.dp=2"
    )
    yield remote
    remote.stop()


def engine_stats(server: RemoteServer) -> dict:
    return httpx.get(f"{server.url}/debug/engine_stats", timeout=10).json()


def engine_pids(server: RemoteServer) -> dict[int, int]:
    """Engine index -> pid, from the engines' log prefix `(EngineCore_DP<i> pid=<pid>)`."""
    found = re.findall(r"\(EngineCore_DP(\d+) pid=(\d+)\)", server.output())
    return {int(index): int(pid) for index, pid in found}


def test_every_process_carries_its_title(server: RemoteServer) -> None:
    family = [psutil.Process(server.proc.pid), *server.descendants()]
    titles = {process_title(p) for p in family}
    for role in ("APIServer", "EngineCore_DP0", "EngineCore_DP1", "DPCoordinator"):
        assert f"VLLM_HYDRA::{role}" in titles, titles


def test_serve_dp2_equals_dp1(server: RemoteServer, reference: list[RequestOutput]) -> None:
    client = server.client()
    for prompt, expected in zip(PROMPTS, reference, strict=True):
        completion = client.completions.create(
            model=SERVED_NAME,
            prompt=prompt,
            max_tokens=NUM_NEW_TOKENS,
            temperature=0,
            extra_body={"ignore_eos": True},
        )
        assert completion.choices[0].text == expected.outputs[0].text
        assert completion.usage.prompt_tokens == len(prompt)
        assert completion.usage.completion_tokens == NUM_NEW_TOKENS
    models = client.models.list().data
    assert [model.id for model in models] == [SERVED_NAME]  # one model, as with dp=1


def test_concurrent_requests_complete_on_both_engines(
    server: RemoteServer, reference: list[RequestOutput]
) -> None:
    before = {
        s["engine_index"]: s["num_finished_requests"] for s in engine_stats(server)["engines"]
    }

    async def one(i: int) -> tuple[int, str, int]:
        prompt = PROMPTS[i % len(PROMPTS)]
        completion = await aclient.completions.create(
            model=SERVED_NAME,
            prompt=prompt,
            max_tokens=NUM_NEW_TOKENS,
            temperature=0,
            extra_body={"ignore_eos": True},
        )
        return i, completion.choices[0].text, completion.usage.completion_tokens

    async def run_all() -> list[tuple[int, str, int]]:
        return await asyncio.gather(*(one(i) for i in range(NUM_CONCURRENT)))

    aclient = server.async_client(timeout=180)
    for i, text, num_tokens in asyncio.run(run_all()):
        assert text == reference[i % len(PROMPTS)].outputs[0].text, f"request {i}"
        assert num_tokens == NUM_NEW_TOKENS
    after = engine_stats(server)
    served = {
        s["engine_index"]: s["num_finished_requests"] - before[s["engine_index"]]
        for s in after["engines"]
    }
    assert sorted(served) == [0, 1]
    assert all(count > 0 for count in served.values()), served
    assert sum(served.values()) == NUM_CONCURRENT
    assert after["num_finished_requests"] == sum(
        s["num_finished_requests"] for s in after["engines"]
    )
    finished_by_engine = metric_by_engine(server, "vllm:request_success")
    assert all(finished_by_engine.get(str(i), 0) >= served[i] for i in (0, 1)), finished_by_engine


def metric_by_engine(server: RemoteServer, name: str) -> dict[str, float]:
    """A Prometheus counter from GET /metrics, summed per `engine` label."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_total":
                engine = sample.labels["engine"]
                totals[engine] = totals.get(engine, 0.0) + sample.value
    return totals


def test_metrics_are_labelled_by_engine(server: RemoteServer) -> None:
    """/metrics has one series per dp engine (label `engine`), each counting that engine's
    requests: every request so far finished by length, on the engine the stats name."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    per_engine: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model_name") == SERVED_NAME:
                key = (sample.name, sample.labels["engine"])
                per_engine[key] = per_engine.get(key, 0.0) + sample.value
    for stats in engine_stats(server)["engines"]:
        engine, finished = str(stats["engine_index"]), stats["num_finished_requests"]
        assert finished > 0
        assert per_engine[("vllm:request_success_total", engine)] == finished
        assert per_engine[("vllm:e2e_request_latency_seconds_count", engine)] == finished
        assert per_engine[("vllm:generation_tokens_total", engine)] == finished * NUM_NEW_TOKENS
        assert per_engine[("vllm:num_requests_running", engine)] == 0


def test_leaving_a_stream_frees_blocks_on_its_engine(server: RemoteServer) -> None:
    body = {
        "model": SERVED_NAME,
        "prompt": PROMPTS[-1],
        "max_tokens": 200,
        "ignore_eos": True,
        "stream": True,
    }
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        for _ in range(6):
            next(lines)
        busy = [s for s in engine_stats(server)["engines"] if s["num_running"]]
        assert len(busy) == 1 and busy[0]["kv_cache_usage"] > 0
    holder = busy[0]["engine_index"]
    deadline = time.monotonic() + 10
    stats = engine_stats(server)["engines"][holder]
    while stats["kv_cache_usage"] > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
        stats = engine_stats(server)["engines"][holder]
    assert stats["num_running"] == 0 and stats["kv_cache_usage"] == 0


def test_killing_one_engine_is_engine_death(server: RemoteServer) -> None:
    """Last in the module: it ends the server."""
    pids = engine_pids(server)
    assert sorted(pids) == [0, 1]
    family = server.descendants()
    assert {pids[0], pids[1]} <= {p.pid for p in family}
    psutil.Process(pids[1]).kill()
    killed_at = time.monotonic()
    status = httpx.get(f"{server.url}/health").status_code
    while status != 503 and time.monotonic() - killed_at < 5:
        time.sleep(0.05)
        status = httpx.get(f"{server.url}/health").status_code
    assert status == 503
    assert server.proc.wait(30) != 0
    _, alive = psutil.wait_procs(family, timeout=10)
    assert not alive, f"left behind: {alive}"
