"""vLLM's tests/entrypoints/serve/instrumentator/test_basic.py and openai/test_openapi: /version,
/health, /v1/models, a wrong Content-Type, and what /openapi.json documents."""

from __future__ import annotations

import httpx
import pytest

from tests.entrypoints.openai.conftest import MODEL
from tests.entrypoints.openai.remote_server import RemoteServer

pytestmark = pytest.mark.compat


def test_version_and_health(server: RemoteServer) -> None:
    assert "version" in httpx.get(f"{server.url}/version").json()
    health = httpx.get(f"{server.url}/health")
    assert health.status_code == 200 and health.content == b""


def test_models_lists_the_base_model(server: RemoteServer) -> None:
    models = server.client().models.list().data
    assert models[0].id == MODEL and models[0].object == "model"
    assert models[0].model_extra["max_model_len"] == 2048


def test_wrong_content_type_is_400_in_shape(server: RemoteServer) -> None:
    response = httpx.post(
        f"{server.url}/v1/completions",
        content=b'{"prompt": "hi", "max_tokens": 2}',
        headers={"content-type": "text/plain"},
    )
    assert response.status_code == 400 and response.json()["error"]["type"]


def test_openapi_documents_errors_and_non_json_routes(server: RemoteServer) -> None:
    schema = httpx.get(f"{server.url}/openapi.json").json()
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for path in ("/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize"):
        responses = schema["paths"][path]["post"]["responses"]
        assert responses["400"]["content"]["application/json"]["schema"] == error_ref, path
        assert "422" not in responses  # invalid bodies are answered 400, not FastAPI's 422
    health = schema["paths"]["/health"]["get"]["responses"]
    assert health["200"]["content"] == {}  # an empty body, not JSON
    assert health["503"]["content"]["application/json"]["schema"] == error_ref
    metrics = schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    assert "ErrorResponse" in schema["components"]["schemas"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]


@pytest.mark.skip(reason="not applicable: /load (--enable-server-load-tracking) is not served")
def test_server_load() -> None: ...
