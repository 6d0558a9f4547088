"""The async load generator of serve mode: streamed /v1/completions requests over HTTP.

Requests are sent at Poisson arrival times of `request_rate` per second (inf: all at once),
with at most `concurrency` in flight when that is set. Prompts go as token ids; every request
asks for its exact output length (`ignore_eos`), and its token count comes from the stream's
final usage chunk. A workload with a JSON schema sends it as `structured_outputs.json`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import AsyncIterator

import httpx
from tqdm import tqdm

from vllm_hydra.benchmarks.metrics import RequestRecord
from vllm_hydra.benchmarks.workloads import BenchRequest

REQUEST_TIMEOUT_S = 600.0

# httpx logs every request at INFO; thousands of lines would bury the benchmark's own.
logging.getLogger("httpx").setLevel(logging.WARNING)


async def arrivals(
    requests: list[BenchRequest], request_rate: float, seed: int
) -> AsyncIterator[BenchRequest]:
    """Yield the requests at Poisson arrival times (exponential gaps of mean 1/rate)."""
    rng = random.Random(seed)
    for request in requests:
        yield request
        if not math.isinf(request_rate):
            await asyncio.sleep(rng.expovariate(request_rate))


async def send_request(
    client: httpx.AsyncClient, url: str, model: str, request: BenchRequest
) -> RequestRecord:
    record = RequestRecord(prompt_len=len(request.prompt_token_ids))
    body = {
        "model": model,
        "prompt": request.prompt_token_ids,
        "max_tokens": request.output_len,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.json_schema is not None:
        body["structured_outputs"] = {"json": json.loads(request.json_schema)}
    sent = last = time.perf_counter()
    try:
        async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
            if response.status_code != 200:
                record.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return record
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                now = time.perf_counter()
                chunk = json.loads(line[len("data: ") :])
                if chunk.get("usage"):
                    record.output_len = chunk["usage"]["completion_tokens"]
                if chunk.get("choices"):
                    if record.ttft == 0.0:
                        record.ttft = now - sent
                    else:
                        record.itl.append(now - last)
                    last = now
        record.latency = time.perf_counter() - sent
        record.success = record.output_len == request.output_len
        if not record.success:
            record.error = f"got {record.output_len} tokens, asked for {request.output_len}"
    except (httpx.HTTPError, ValueError) as e:
        record.error = f"{type(e).__name__}: {e}"
    return record


async def run_load(
    url: str,
    model: str,
    requests: list[BenchRequest],
    request_rate: float,
    concurrency: int | None,
    seed: int = 0,
    progress: bool = True,
) -> tuple[list[RequestRecord], float]:
    """Send every request; return their records (in workload order) and the wall time."""
    limit = asyncio.Semaphore(concurrency) if concurrency else None
    bar = tqdm(total=len(requests), desc="requests", disable=not progress)

    async def one(client: httpx.AsyncClient, request: BenchRequest) -> RequestRecord:
        if limit is None:
            record = await send_request(client, url, model, request)
        else:
            async with limit:
                record = await send_request(client, url, model, request)
        bar.update(1)
        return record

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_S, connect=30.0)
    with bar:
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
            start = time.perf_counter()
            tasks = []
            async for request in arrivals(requests, request_rate, seed):
                tasks.append(asyncio.create_task(one(client, request)))
            records = await asyncio.gather(*tasks)
            duration = time.perf_counter() - start
    return list(records), duration
