"""The OpenAI-compatible HTTP server: FastAPI under uvicorn in front of one `AsyncLLM`.

run_server -> build_app + serve_http (503 while loading) -> build_async_engine_client
(AsyncLLM.from_vllm_config) -> attach_engine, as in vLLM's entrypoints/openai/api_server.py.
Exit status: 0 after SIGTERM/SIGINT, EXIT_ENGINE_DEAD after the engine died while serving.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

import vllm_hydra
from vllm_hydra.config.server import ServerConfig
from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.entrypoints.body_size_limit import BodySizeLimit
from vllm_hydra.entrypoints.openai.async_tokenizer import AsyncTokenizer
from vllm_hydra.entrypoints.openai.errors import (
    AuthenticationError,
    ServiceUnavailableError,
    error_json,
    register_error_handlers,
    stream_error_event,
)
from vllm_hydra.entrypoints.openai.lora_protocol import (
    LoadLoRAAdapterRequest,
    UnloadLoRAAdapterRequest,
)
from vllm_hydra.entrypoints.openai.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    ErrorResponse,
    TokenizeRequest,
)
from vllm_hydra.entrypoints.openai.server_load import ServerLoad
from vllm_hydra.entrypoints.openai.serving_chat import OpenAIServingChat
from vllm_hydra.entrypoints.openai.serving_completion import OpenAIServingCompletion
from vllm_hydra.entrypoints.openai.serving_engine import ClientDisconnected
from vllm_hydra.entrypoints.openai.serving_models import OpenAIServingModels
from vllm_hydra.entrypoints.openai.serving_tokenization import OpenAIServingTokenization
from vllm_hydra.entrypoints.request_id import RequestIdHeader
from vllm_hydra.entrypoints.root_path import RootPath, route_path
from vllm_hydra.process_title import set_process_title

if TYPE_CHECKING:
    from vllm_hydra.engine.async_llm import AsyncLLM

logger = logging.getLogger(__name__)

EXIT_ENGINE_DEAD = 1
# After the engine dies the server keeps answering 503 this long, then exits.
ENGINE_DEAD_GRACE_S = 3.0
ENGINE_WATCH_INTERVAL_S = 0.2
# uvicorn cancels what is still running this long after server.shutdown_timeout_s: by then our
# own stop (an error event and [DONE] on every stream, 503 for the rest) has ended it all.
UVICORN_CANCEL_MARGIN_S = 5.0
# Paths the API key guards (vLLM guards /v1 and friends; /health stays open).
GUARDED_PREFIXES = ("/v1",)
# Paths that answer while the model loads (everything else, /health included, answers 503).
OPEN_WHILE_LOADING = ("/version",)


@asynccontextmanager
async def build_async_engine_client(vllm_config: VllmConfig) -> AsyncIterator[AsyncLLM]:
    """Start the engine process; shut it down (no orphans) however the server ends."""
    from vllm_hydra.engine.async_llm import AsyncLLM

    # In a thread, so the event loop (and /health's 503) runs while the model loads.
    engine = await asyncio.to_thread(AsyncLLM.from_vllm_config, vllm_config)
    try:
        yield engine
    finally:
        engine.shutdown()


def build_app(engine_client: AsyncLLM | None, vllm_config: VllmConfig) -> FastAPI:
    """The FastAPI app. Without an engine yet it answers 503 (`loading`) until
    `attach_engine` gives it one, so /health tells a load balancer when to start sending."""
    app = FastAPI(title="vllm_hydra", version=vllm_hydra.__version__)
    app.state.engine_client = None
    app.state.models = OpenAIServingModels(vllm_config)
    app.state.load = ServerLoad(
        vllm_config.scheduler.max_num_seqs, vllm_config.server.max_queued_requests
    )
    register_error_handlers(app)
    server = vllm_config.server
    if server.max_request_body_bytes is not None:
        app.add_middleware(BodySizeLimit, max_bytes=server.max_request_body_bytes)
    app.add_middleware(RequestGuard, check=_refuse_while_loading)
    if server.api_key:
        app.add_middleware(RequestGuard, check=_api_key_check(server.api_key))
    if server.enable_request_id_headers:
        app.add_middleware(RequestIdHeader)
    if server.root_path:  # outermost: every check after it sees one prefix at most
        app.add_middleware(RootPath, root_path=server.root_path)
    _add_routes(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    if vllm_config.observability.metrics:
        # Open like /health: the API key guards only /v1.
        app.get("/metrics", response_class=PlainTextResponse, responses=_METRICS_DOCS)(metrics)
    if server.enable_tokenizer_info_endpoint:
        app.get("/tokenizer_info", responses=ERROR_DOCS)(tokenizer_info)
    if engine_client is not None:
        attach_engine(app, engine_client)
    return app


def attach_engine(app: FastAPI, engine_client: AsyncLLM) -> None:
    models, load = app.state.models, app.state.load
    tokenizer = app.state.async_tokenizer = AsyncTokenizer(engine_client)
    app.state.serving_completion = OpenAIServingCompletion(engine_client, models, load, tokenizer)
    app.state.serving_chat = OpenAIServingChat(engine_client, models, load, tokenizer)
    app.state.serving_tokenization = OpenAIServingTokenization(engine_client, models, tokenizer)
    app.state.engine_client = engine_client  # last: this opens the routes


# What /openapi.json documents beside each route's own answer: errors in OpenAI's shape.
ERROR_DOCS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Bad request: `param` names the field"},
    401: {"model": ErrorResponse, "description": "Missing or wrong API key"},
    404: {"model": ErrorResponse, "description": "Unknown model"},
    413: {"model": ErrorResponse, "description": "Body over server.max_request_body_bytes"},
    503: {"model": ErrorResponse, "description": "Loading, busy, shutting down or engine dead"},
}
_HEALTH_DOCS: dict[int | str, dict[str, Any]] = {
    200: {"description": "The engine runs (an empty body, not JSON)", "content": {}},
    503: ERROR_DOCS[503],
}
_METRICS_DOCS: dict[int | str, dict[str, Any]] = {
    200: {"description": "Prometheus text exposition format, not JSON"},
}


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, less the 422 it adds to every route with a body: this server answers
    invalid bodies 400 in OpenAI's shape (documented per route)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, routes=app.routes, servers=app.servers or None
        )
        for operations in schema["paths"].values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


def _add_routes(app: FastAPI) -> None:
    app.post("/v1/completions", responses=ERROR_DOCS)(create_completion)
    app.post("/v1/chat/completions", responses=ERROR_DOCS)(create_chat_completion)
    app.get("/v1/models", responses=ERROR_DOCS)(show_available_models)
    app.post("/v1/load_lora_adapter", responses=ERROR_DOCS)(load_lora_adapter)
    app.post("/v1/unload_lora_adapter", responses=ERROR_DOCS)(unload_lora_adapter)
    app.get("/health", response_class=Response, responses=_HEALTH_DOCS)(health)
    app.get("/version")(version)
    app.post("/tokenize", responses=ERROR_DOCS)(tokenize)
    app.post("/detokenize", responses=ERROR_DOCS)(detokenize)
    app.get("/debug/engine_stats")(engine_stats)


async def create_completion(request: CompletionRequest, raw_request: Request) -> Response:
    serving: OpenAIServingCompletion = raw_request.app.state.serving_completion
    return await _respond(serving.create_completion(request, raw_request))


async def create_chat_completion(request: ChatCompletionRequest, raw_request: Request) -> Response:
    serving: OpenAIServingChat = raw_request.app.state.serving_chat
    return await _respond(serving.create_chat_completion(request, raw_request))


async def _respond(result: Awaitable[Any]) -> Response:
    """JSON for a finished answer, SSE for a stream; nothing at all for a client that left."""
    try:
        answer = await result
    except ClientDisconnected:
        return Response(status_code=499)
    if hasattr(answer, "__aiter__"):
        return SSEResponse(answer)
    return JSONResponse(answer.model_dump(exclude_none=True))


class SSEResponse(StreamingResponse):
    """A stream that closes its chunks as soon as the response ends, also when the client left
    mid-stream (or before the first chunk), so the request is aborted and its admission freed
    now rather than when a generator is collected."""

    def __init__(self, chunks: AsyncIterator[str]) -> None:
        super().__init__(_sse(chunks), media_type="text/event-stream")
        self.chunks = chunks

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]
            await self.chunks.aclose()  # type: ignore[attr-defined]


async def _sse(chunks: AsyncIterator[str]) -> AsyncIterator[str]:
    """Pass the chunks on; a failure mid-stream becomes an error event and the [DONE] line.
    Closing this generator (client gone) closes the inner one, which aborts its requests."""
    async with aclosing(chunks):  # type: ignore[type-var]
        try:
            async for chunk in chunks:
                yield chunk
        except Exception as e:
            yield stream_error_event(e)
            yield "data: [DONE]\n\n"


async def show_available_models(raw_request: Request) -> JSONResponse:
    models: OpenAIServingModels = raw_request.app.state.models
    return JSONResponse(models.show_available_models().model_dump())


async def load_lora_adapter(request: LoadLoRAAdapterRequest, raw_request: Request) -> Response:
    """Serve a PEFT adapter under a new model name (lora.allow_runtime_updates=true)."""
    models: OpenAIServingModels = raw_request.app.state.models
    engine: AsyncLLM = raw_request.app.state.engine_client
    lora = await models.load_lora_adapter(request, engine.input_processor.check_lora)
    await engine.add_lora(lora)  # read by the workers now, not at its first request
    message = f"Success: LoRA adapter '{lora.lora_name}' added successfully."
    return Response(content=message, status_code=200)


async def unload_lora_adapter(request: UnloadLoRAAdapterRequest, raw_request: Request) -> Response:
    """Stop serving an adapter that no request is using, and free it in the workers."""
    models: OpenAIServingModels = raw_request.app.state.models
    engine: AsyncLLM = raw_request.app.state.engine_client
    lora = models.unload_lora_adapter(request)
    await engine.remove_lora(lora.lora_int_id)
    message = f"Success: LoRA adapter '{lora.lora_name}' removed successfully."
    return Response(content=message, status_code=200)


async def health(raw_request: Request) -> Response:
    """200 while the engine runs, 503 once it is dead."""
    engine: AsyncLLM = raw_request.app.state.engine_client
    if engine.errored:
        return error_json(ServiceUnavailableError(f"The engine is dead: {engine.dead_error}"))
    return Response(status_code=200)


async def version() -> JSONResponse:
    return JSONResponse({"version": vllm_hydra.__version__})


async def tokenize(request: TokenizeRequest, raw_request: Request) -> JSONResponse:
    serving: OpenAIServingTokenization = raw_request.app.state.serving_tokenization
    return JSONResponse((await serving.tokenize(request)).model_dump())


async def detokenize(request: DetokenizeRequest, raw_request: Request) -> JSONResponse:
    serving: OpenAIServingTokenization = raw_request.app.state.serving_tokenization
    return JSONResponse(serving.detokenize(request).model_dump())


async def tokenizer_info(raw_request: Request) -> JSONResponse:
    """The tokenizer's configuration (server.enable_tokenizer_info_endpoint)."""
    serving: OpenAIServingTokenization = raw_request.app.state.serving_tokenization
    return JSONResponse(serving.tokenizer_info())


async def metrics(raw_request: Request) -> Response:
    """Prometheus metrics (vLLM's `vllm:` names), for a scraper."""
    engine: AsyncLLM = raw_request.app.state.engine_client
    return Response(engine.metrics_text(), media_type=CONTENT_TYPE_LATEST)


async def engine_stats(raw_request: Request) -> JSONResponse:
    """The scheduler's stats from the engine processes (a UTILITY call): running and waiting
    requests, KV cache usage, prefix cache hits, preemptions, finished requests; summed over
    the dp engines, with each engine's own (labelled by engine_index) under "engines". For
    tests and operators."""
    engine: AsyncLLM = raw_request.app.state.engine_client
    if engine.errored:
        raise ServiceUnavailableError(f"The engine is dead: {engine.dead_error}")
    return JSONResponse(await engine.get_stats())


class RequestGuard:
    """Pure ASGI middleware: `check(scope)` may answer a request itself (an error response).
    Pure ASGI, unlike BaseHTTPMiddleware, leaves streaming and disconnect detection alone."""

    def __init__(self, app: ASGIApp, check: Callable[[Scope], Response | None]) -> None:
        self.app = app
        self.check = check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self.check(scope) if scope["type"] == "http" else None
        if refusal is not None:
            await refusal(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _refuse_while_loading(scope: Scope) -> Response | None:
    if scope["app"].state.engine_client is not None or route_path(scope) in OPEN_WHILE_LOADING:
        return None
    return error_json(ServiceUnavailableError("The model is still loading.", code="loading"))


def _api_key_check(api_key: str) -> Callable[[Scope], Response | None]:
    expected = f"Bearer {api_key}".encode()

    def check(scope: Scope) -> Response | None:
        if not route_path(scope).startswith(GUARDED_PREFIXES) or scope["method"] == "OPTIONS":
            return None
        given = Headers(scope=scope).get("authorization", "").encode()
        if hmac.compare_digest(given, expected):
            return None
        return error_json(
            AuthenticationError(
                "Missing or incorrect API key: send 'Authorization: Bearer <key>'.",
                code="invalid_api_key",
            )
        )

    return check


# ---- serving ------------------------------------------------------------------------------------


@dataclass
class ServerState:
    exit_code: int = 0
    signals: list[str] = field(default_factory=list)


def bind_socket(config: ServerConfig) -> socket.socket:
    """Bind before the engine starts, so a busy port fails fast; port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, config.port))
    return sock


class StoppableServer(uvicorn.Server):
    """uvicorn's server; on SIGTERM/SIGINT it stops accepting and, after
    server.shutdown_timeout_s of drain, ends what is still in flight itself (`stop_in_flight`):
    each stream with an error event and [DONE], each other request with a 503. uvicorn would
    instead cancel them, cutting streams off and logging every cancellation."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, drain_s: float) -> None:
        super().__init__(config)
        self.app = app
        self.drain_s = drain_s
        self.stop_task: asyncio.Task | None = None
        self.stop_scheduled = False

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        if not self.stop_scheduled:  # in a signal handler: hand over to the event loop
            self.stop_scheduled = True
            loop = asyncio.get_event_loop()
            loop.call_soon_threadsafe(loop.call_later, self.drain_s, self._stop_in_flight)

    def _stop_in_flight(self) -> None:
        engine: AsyncLLM | None = self.app.state.engine_client
        if engine is not None:
            self.stop_task = asyncio.ensure_future(engine.abort_all())


def serve_http(
    app: FastAPI, config: ServerConfig, sock: socket.socket
) -> tuple[uvicorn.Server, asyncio.Future]:
    """Start uvicorn on `sock`. On SIGTERM/SIGINT it stops accepting, lets requests finish for
    server.shutdown_timeout_s, then ends them (which aborts them in the engine)."""
    uv_config = uvicorn.Config(
        app,
        log_config=None,  # keep Hydra's logging
        timeout_graceful_shutdown=config.shutdown_timeout_s + UVICORN_CANCEL_MARGIN_S,
        timeout_keep_alive=5,
        root_path=config.root_path or "",
    )
    server = StoppableServer(uv_config, app, config.shutdown_timeout_s)
    return server, asyncio.ensure_future(server.serve(sockets=[sock]))


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _watch_engine(
    engine: AsyncLLM, server: uvicorn.Server, state: ServerState, exit_on_death: bool
) -> None:
    while not engine.errored:
        await asyncio.sleep(ENGINE_WATCH_INTERVAL_S)
    if not exit_on_death:
        logger.error(
            "The engine died (%s); answering 503 until stopped (exit_on_engine_death=false).",
            engine.dead_error,
        )
        return
    logger.error(
        "The engine died (%s); answering 503 for %.0f s, then exiting.",
        engine.dead_error,
        ENGINE_DEAD_GRACE_S,
    )
    await asyncio.sleep(ENGINE_DEAD_GRACE_S)
    state.exit_code = EXIT_ENGINE_DEAD
    server.should_exit = True


async def _log_stats_periodically(engine: AsyncLLM, interval_s: float) -> None:
    """The stats line every observability.stats_interval_s (vLLM's force-log task)."""
    while True:
        await asyncio.sleep(interval_s)
        engine.do_log_stats()


def _start_background_tasks(
    engine: AsyncLLM, server: uvicorn.Server, state: ServerState, vllm_config: VllmConfig
) -> list[asyncio.Future]:
    tasks = [
        asyncio.ensure_future(
            _watch_engine(engine, server, state, vllm_config.server.exit_on_engine_death)
        )
    ]
    obs = vllm_config.observability
    if obs.log_stats:
        tasks.append(asyncio.ensure_future(_log_stats_periodically(engine, obs.stats_interval_s)))
    return tasks


async def _run(vllm_config: VllmConfig, sock: socket.socket, state: ServerState) -> int:
    app = build_app(None, vllm_config)
    server, serving = serve_http(app, vllm_config.server, sock)
    logger.info("Listening at %s; /health answers 503 until the model is loaded.", _url(sock))
    try:
        async with build_async_engine_client(vllm_config) as engine:
            if serving.done():  # a signal while loading: stop now that the engine can be stopped
                return 0
            attach_engine(app, engine)
            logger.info(
                "Serving the OpenAI API at %s (model %s)",
                _url(sock),
                app.state.models.served_model_name,
            )
            tasks = _start_background_tasks(engine, server, state, vllm_config)
            try:
                await serving
            finally:
                for task in tasks:
                    task.cancel()
                app.state.async_tokenizer.shutdown()
    finally:
        if not serving.done():  # the engine failed to start
            server.should_exit = True
            await serving
    return state.exit_code


def run_server(vllm_config: VllmConfig) -> int:
    """Serve until SIGTERM/SIGINT (exit status 0) or until the engine dies (EXIT_ENGINE_DEAD);
    an engine that fails to start raises EngineStartupError after the HTTP server stopped.

    Signals are uvicorn's while it serves. Ours only note them: uvicorn re-raises the signal
    it handled once it stops, and the engine must still be shut down after that.
    """
    set_process_title("APIServer")
    state = ServerState()

    def note_signal(signum: int, _: Any) -> None:
        state.signals.append(signal.Signals(signum).name)

    sock = bind_socket(vllm_config.server)
    signal.signal(signal.SIGTERM, note_signal)
    signal.signal(signal.SIGINT, note_signal)
    try:
        exit_code = asyncio.run(_run(vllm_config, sock, state))
    finally:
        sock.close()
    if state.signals:
        logger.info("Stopped by %s.", state.signals[0])
    return exit_code
