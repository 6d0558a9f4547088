"""Raw-HTTP helpers shared by the compatibility suite."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.entrypoints.openai.remote_server import RemoteServer

VOCAB_SIZE = 4096  # the embedded tiny model's


def post(server: RemoteServer, path: str, **body: Any) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=60)


def ok(server: RemoteServer, path: str, **body: Any) -> dict[str, Any]:
    response = post(server, path, **body)
    assert response.status_code == 200, response.text
    return response.json()


def error(server: RemoteServer, path: str, param: str | None, **body: Any) -> dict[str, Any]:
    """A 400 in OpenAI's shape naming `param`."""
    response = post(server, path, **body)
    assert response.status_code == 400, response.text
    err = response.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param, err
    return err


def tokens(server: RemoteServer, **body: Any) -> list[int]:
    return ok(server, "/tokenize", **body)["tokens"]


def sse_chunks(server: RemoteServer, path: str, **body: Any) -> list[dict[str, Any]]:
    """A streamed answer's JSON chunks (the [DONE] line checked and dropped)."""
    with httpx.stream("POST", server.url + path, json={**body, "stream": True}, timeout=60) as r:
        assert r.status_code == 200, r.read()
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[len("data: ") :]) for line in lines[:-1]]
