"""Issue 14, Done-when 2: while a 20 MB prompt is being processed, /health answers within 1 s and
a short completion within 2 s of its normal time; the frontend's RSS returns to within 100 MB of
where it started. Also: a long prompt under the character bound is counted in chunks and
refused without being tokenized whole."""

from __future__ import annotations

import json
import statistics
import threading
import time

import httpx
import psutil
import pytest

from tests.entrypoints.openai.remote_server import RemoteServer
from vllm_hydra.entrypoints.openai.prompt_length import (
    BOUNDARY_SLACK_TOKENS,
    COUNT_CHUNK_CHARS,
    PromptLengthGuard,
    text_chunks,
)

BIG_PROMPT_BYTES = 20_000_000
SHORT = {"prompt": "Once upon a time", "max_tokens": 4, "temperature": 0}


def timed_post(server: RemoteServer, path: str, body: dict | bytes) -> tuple[float, httpx.Response]:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    start = time.monotonic()
    response = httpx.post(server.url + path, content=content, headers=headers, timeout=120)
    return time.monotonic() - start, response


def normal_short_completion_s(server: RemoteServer) -> float:
    for _ in range(2):  # warm
        timed_post(server, "/v1/completions", SHORT)
    return statistics.median(timed_post(server, "/v1/completions", SHORT)[0] for _ in range(5))


def assert_context_length_exceeded(response: httpx.Response, param: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == param
    assert "maximum context length is 2048 tokens" in error["message"]


def rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


def settled_rss_mb(process: psutil.Process, target_mb: float, timeout_s: float = 10.0) -> float:
    """The RSS once it is at or under `target_mb`, or after `timeout_s` if it never gets there."""
    deadline = time.monotonic() + timeout_s
    while rss_mb(process) > target_mb and time.monotonic() < deadline:
        time.sleep(0.2)
    return rss_mb(process)


# Timing on a shared 2-core machine is noisy: the timing checks must hold in one of this many
# runs (a stall, as before the fix, took 35 s every time).
ATTEMPTS = 3


def big_body(param: str) -> bytes:
    words = "hello world " * (BIG_PROMPT_BYTES // 12)
    if param == "prompt":
        return json.dumps({"prompt": words, "max_tokens": 4}).encode()
    messages = [{"role": "user", "content": words}]
    return json.dumps({"messages": messages, "max_tokens": 4}).encode()


def one_run(server: RemoteServer, path: str, param: str, body: bytes) -> dict[str, float]:
    """A 20 MB request in flight; meanwhile /health and a short completion. Their times."""
    normal_s = normal_short_completion_s(server)
    big: dict[str, httpx.Response] = {}
    sender = threading.Thread(target=lambda: big.update(r=timed_post(server, path, body)[1]))
    sender.start()
    health_start = time.monotonic()
    health = httpx.get(f"{server.url}/health", timeout=30)
    health_s = time.monotonic() - health_start
    short_s, short = timed_post(server, "/v1/completions", SHORT)
    sender.join(120)
    assert health.status_code == 200 and short.status_code == 200
    assert_context_length_exceeded(big["r"], param)
    return {"health_s": health_s, "short_s": short_s, "normal_s": normal_s}


@pytest.mark.parametrize(
    ("path", "param"), [("/v1/completions", "prompt"), ("/v1/chat/completions", "messages")]
)
def test_a_20_mb_prompt_stalls_nothing_and_leaves_no_memory_behind(
    server: RemoteServer, path: str, param: str
) -> None:
    frontend = psutil.Process(server.proc.pid)
    timed_post(server, "/v1/completions", SHORT)  # warm
    start_mb = rss_mb(frontend)
    body = big_body(param)  # before any clock: the test's own GIL time
    runs = []
    for _ in range(ATTEMPTS):
        runs.append(one_run(server, path, param, body))
        last = runs[-1]
        if last["health_s"] < 1.0 and last["short_s"] < last["normal_s"] + 2.0:
            break
    else:
        pytest.fail(f"/health >= 1 s or the short completion >= normal + 2 s in every run: {runs}")
    end_mb = settled_rss_mb(frontend, start_mb + 100)
    assert end_mb <= start_mb + 100, (start_mb, end_mb, len(runs))


def test_a_long_prompt_under_the_bound_is_counted_in_chunks_and_refused(
    server: RemoteServer,
) -> None:
    prompt = "hello world " * (COUNT_CHUNK_CHARS // 7)  # under the bound, 2 chunks
    _, response = timed_post(server, "/v1/completions", {"prompt": prompt, "max_tokens": 4})
    assert_context_length_exceeded(response, "prompt")
    assert "about" in response.json()["error"]["message"]  # counted, not bounded by length


def test_text_chunks_cut_before_spaces_and_keep_every_character() -> None:
    text = "word " * 40_000
    chunks = list(text_chunks(text, size=1000))
    assert "".join(chunks) == text
    assert all(len(c) <= 1000 for c in chunks)
    assert all(c.startswith(" ") for c in chunks[1:])  # each cut is before a space


def test_the_character_bound_follows_the_longest_token() -> None:
    class Vocab:
        def get_vocab(self) -> dict[str, int]:
            return {"a": 0, "Ġunderstanding": 1}

    guard = PromptLengthGuard(Vocab(), max_model_len=100)  # type: ignore[arg-type]
    assert guard.max_chars == 4 * len("Ġunderstanding") * 100
    guard.check_chars(guard.max_chars, "prompt")  # at the bound: may still fit
    with pytest.raises(Exception, match="more than 100 tokens"):
        guard.check_chars(guard.max_chars + 1, "prompt")
    guard.check_count(100 + BOUNDARY_SLACK_TOKENS * 3, 3, "prompt")  # boundaries allowed for
    with pytest.raises(Exception, match="about 113 tokens"):
        guard.check_count(100 + BOUNDARY_SLACK_TOKENS * 3 + 1, 3, "prompt")
