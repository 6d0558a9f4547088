"""OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` and their handlers.

Serving code raises `OpenAIError`s; the handlers registered by `register_error_handlers` turn
them, FastAPI's request validation errors, Starlette's own HTTP errors (unknown route, wrong
method, unparsable body, body too large) and real faults into JSON responses.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from vllm_hydra.engine.exceptions import (
    EngineDeadError,
    EngineRequestError,
    EngineShutdownError,
)
from vllm_hydra.entrypoints.openai.protocol import ErrorInfo, ErrorResponse
from vllm_hydra.sampling_params import SamplingParamsError

logger = logging.getLogger(__name__)

# Location parts pydantic adds for union members and validators; they are not field names.
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "json-or-python"}


class OpenAIError(Exception):
    """An error a client should see, with its HTTP status and OpenAI error fields."""

    status_code = 500
    error_type = "server_error"

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def to_response(self) -> ErrorResponse:
        return error_response(self.message, self.error_type, self.param, self.code)


class BadRequestError(OpenAIError):
    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationError(OpenAIError):
    status_code = 401
    error_type = "invalid_request_error"


class PermissionDeniedError(OpenAIError):
    status_code = 403
    error_type = "invalid_request_error"


class NotFoundError(OpenAIError):
    status_code = 404
    error_type = "invalid_request_error"


class ConflictError(OpenAIError):
    status_code = 409
    error_type = "invalid_request_error"


class ServiceUnavailableError(OpenAIError):
    status_code = 503
    error_type = "server_error"


def error_response(
    message: str, error_type: str, param: str | None = None, code: str | int | None = None
) -> ErrorResponse:
    return ErrorResponse(error=ErrorInfo(message=message, type=error_type, param=param, code=code))


def error_json(error: OpenAIError) -> JSONResponse:
    body = error.to_response().model_dump()
    return JSONResponse(body, status_code=error.status_code)


def validation_param(loc: Sequence[Any]) -> str | None:
    """FastAPI's error location -> the request field path, e.g. `messages.0.role`."""
    parts = loc[1:] if loc[:1] == ("body",) else loc
    return ".".join(str(p) for p in parts if not _is_type_tag(p)) or None


def _is_type_tag(part: Any) -> bool:
    return isinstance(part, str) and (part in _TYPE_TAGS or "[" in part or "-" in part)


def request_validation_error(exc: RequestValidationError) -> BadRequestError:
    """The first pydantic error, worded for a person, naming the field."""
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return BadRequestError(f"The request body is not valid JSON: {first.get('msg')}.")
    param = validation_param(first.get("loc", ()))
    if param is None:
        return BadRequestError(f"Invalid request body: {first.get('msg')}.")
    return BadRequestError(f"Invalid value for '{param}': {first.get('msg')}.", param=param)


def http_error_json(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's and FastAPI's own errors (404, 405, 400, 413) in OpenAI's shape."""
    route = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        message = f"Invalid URL ({route})."
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("allow", "")
        message = f"Method not allowed ({route}); this route takes {allowed}."
    else:
        message = f"{exc.detail} ({route})."
    error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
    body = error_response(message, error_type).model_dump()
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return http_error_json(request, exc)


async def _on_openai_error(_: Request, exc: OpenAIError) -> JSONResponse:
    return error_json(exc)


async def _on_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    return error_json(request_validation_error(exc))


async def _on_sampling_params_error(_: Request, exc: SamplingParamsError) -> JSONResponse:
    return error_json(BadRequestError(str(exc), param=exc.param))


def engine_error(exc: Exception) -> OpenAIError | None:
    """The client's view of an engine-side error; None for anything else (a fault)."""
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, EngineDeadError):
        return ServiceUnavailableError(f"The engine is dead: {exc}", code="engine_dead")
    if isinstance(exc, EngineShutdownError):
        return ServiceUnavailableError(str(exc), code="server_shutting_down")
    if isinstance(exc, EngineRequestError):
        return BadRequestError(f"The engine refused the request: {exc}", code="engine_refused")
    return None


async def _on_engine_error(request: Request, exc: Exception) -> JSONResponse:
    error = engine_error(exc)
    return error_json(error) if error is not None else await _on_fault(request, exc)


def stream_error_event(exc: Exception) -> str:
    """An error after the 200 went out: one SSE event with the error body, as vLLM sends."""
    error = engine_error(exc)
    if error is None:
        logger.exception("Stream failed", exc_info=exc)
        error = OpenAIError(f"Internal server error: {type(exc).__name__}: {exc}")
    return f"data: {error.to_response().model_dump_json()}\n\n"


async def _on_fault(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("Unhandled error on %s %s", request.method, request.url.path)
    return error_json(OpenAIError(f"Internal server error: {type(exc).__name__}: {exc}"))


def register_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _on_http_error)  # type: ignore[arg-type]
    app.add_exception_handler(OpenAIError, _on_openai_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _on_validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(SamplingParamsError, _on_sampling_params_error)  # type: ignore[arg-type]
    for engine_exc in (EngineDeadError, EngineShutdownError, EngineRequestError):
        app.add_exception_handler(engine_exc, _on_engine_error)
    app.add_exception_handler(Exception, _on_fault)
