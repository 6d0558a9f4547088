"""The periodic stats line of a real `python serve.py`, checked against its /metrics: the
interval throughputs add up to the token counters, the preemptions to the preemption counter,
and the last line (once idle) shows an empty engine and the prefix-cache hit rate.
(observability.log_stats=false is checked in test_prometheus.py, whose server runs with it.)"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from tests.entrypoints.openai.remote_server import RemoteServer
from tests.metrics.conftest import STATS_LINE, scrape

PROMPT_IDS = list(range(200, 240))  # 40 tokens
MAX_TOKENS = 50


def _stats_lines(server: RemoteServer) -> list[dict[str, str]]:
    return [m.groupdict() for m in STATS_LINE.finditer(server.output())]


def _is_idle(line: dict[str, str]) -> bool:
    return line["running"] == line["waiting"] == "0" and float(line["gen"]) == 0


async def _send(server: RemoteServer, num_requests: int) -> None:
    client = server.async_client()
    await asyncio.gather(
        *(
            client.completions.create(
                model="tiny",
                prompt=PROMPT_IDS,
                max_tokens=MAX_TOKENS,
                temperature=0.0,
                extra_body={"ignore_eos": True},
            )
            for _ in range(num_requests)
        )
    )
    await client.close()


def _rounding_slack(lines: list[dict[str, str]], key: str) -> float:
    """How far sum(throughput * interval) may be off by the line's rounding alone."""
    return sum(0.05 * float(x["dt"]) + 0.0005 * float(x[key]) for x in lines) + 1e-6


def test_stats_lines_match_the_metrics(tmp_path: pytest.TempPathFactory) -> None:
    # 23 usable blocks of 16 tokens; six requests of 90 tokens need 36: preemption.
    server = RemoteServer(
        tmp_path / "run",
        "observability.stats_interval_s=0.5",
        "model.max_model_len=256",
        "cache.num_blocks_override=24",
    )
    try:
        asyncio.run(_send(server, 1))  # fills the prefix cache with the prompt's blocks
        asyncio.run(_send(server, 6))
        deadline = time.monotonic() + 60
        while not (_stats_lines(server) and _is_idle(_stats_lines(server)[-1])):
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.2)
        metrics = scrape(server)
        lines = _stats_lines(server)
    finally:
        server.stop()

    # A line's running/waiting are the engine's state when it is logged, which on a fast
    # machine may fall after the work of its interval; the throughputs always cover it.
    assert any(float(x["gen"]) > 0 for x in lines)
    assert all(0 <= int(x["running"]) <= 6 for x in lines)
    prompt_tokens = sum(float(x["prompt"]) * float(x["dt"]) for x in lines)
    assert metrics["vllm:prompt_tokens_total"] == 7 * len(PROMPT_IDS)
    assert abs(prompt_tokens - metrics["vllm:prompt_tokens_total"]) <= _rounding_slack(
        lines, "prompt"
    )
    gen_tokens = sum(float(x["gen"]) * float(x["dt"]) for x in lines)
    assert metrics["vllm:generation_tokens_total"] == 7 * MAX_TOKENS
    assert abs(gen_tokens - metrics["vllm:generation_tokens_total"]) <= _rounding_slack(
        lines, "gen"
    )
    preempted = sum(int(x["preempted"]) for x in lines)
    assert preempted == metrics["vllm:num_preemptions_total"] > 0
    last = lines[-1]
    assert last["kv"] == "0.0" and float(last["prompt"]) == 0
    hits, queries = (
        metrics["vllm:prefix_cache_hits_total"],
        metrics["vllm:prefix_cache_queries_total"],
    )
    assert hits > 0
    assert last["hit"] == f"{100 * hits / queries:.1f}"
    # One last line once idle, then silence: no two idle lines in a row.
    assert not any(_is_idle(a) and _is_idle(b) for a, b in itertools.pairwise(lines))
