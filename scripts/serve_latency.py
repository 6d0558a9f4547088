"""Serving latency of `python serve.py`: start-up time, TTFT and ITL of single streamed requests.

    python scripts/serve_latency.py                        # the embedded tiny model
    python scripts/serve_latency.py --requests 10 --output-len 128 -- profile=cpu-dev

It starts serve.py on a free port, times the first /health 200 from the launch, then sends
`--requests` streamed completions one after another (greedy, EOS ignored) and reports the median
time to first token and the median inter-token latency (gaps between SSE chunks), then stops the
server with SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"serve.py exited with {proc.returncode}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        time.sleep(0.05)
    sys.exit("serve.py did not become healthy")


def one_request(url: str, prompt: str, output_len: int) -> tuple[float, list[float]]:
    """TTFT and the inter-chunk gaps of one streamed greedy completion (seconds)."""
    body = {
        "prompt": prompt,
        "max_tokens": output_len,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    arrivals: list[float] = []
    sent = time.perf_counter()
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                arrivals.append(time.perf_counter())
    return arrivals[0] - sent, [b - a for a, b in itertools.pairwise(arrivals)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--prompt", default="Once upon a time")
    parser.add_argument("overrides", nargs="*", help="serve.py overrides")
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as run_dir:
        cmd = [
            sys.executable,
            "serve.py",
            f"server.port={port}",
            f"hydra.run.dir={run_dir}",
            *args.overrides,
        ]
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_healthy(url, proc)
            ready = time.perf_counter() - started
            one_request(url, args.prompt, 4)  # warm-up
            ttfts, gaps = [], []
            for _ in range(args.requests):
                ttft, request_gaps = one_request(url, args.prompt, args.output_len)
                ttfts.append(ttft)
                gaps.extend(request_gaps)
        finally:
            proc.terminate()
            code = proc.wait(60)
    print(f"time from launch to first /health 200: {ready:.2f} s")
    print(f"median TTFT over {args.requests} requests: {statistics.median(ttfts) * 1e3:.1f} ms")
    print(f"median ITL over {len(gaps)} gaps: {statistics.median(gaps) * 1e3:.2f} ms")
    print(f"serve.py exit status after SIGTERM: {code}")


if __name__ == "__main__":
    main()
