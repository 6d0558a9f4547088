"""The OpenAI-compatible HTTP server: FastAPI under uvicorn in front of one `AsyncLLM`.

run_server -> build_async_engine_client (AsyncLLM.from_vllm_config) -> build_app -> serve_http,
as in vLLM's entrypoints/openai/api_server.py. Exit status: 0 after SIGTERM/SIGINT,
EXIT_ENGINE_DEAD after the engine died while serving.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

import vllm_hydra
from vllm_hydra.config.server import ServerConfig
from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.entrypoints.openai.errors import (
    AuthenticationError,
    ServiceUnavailableError,
    error_json,
    register_error_handlers,
    stream_error_event,
)
from vllm_hydra.entrypoints.openai.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
)
from vllm_hydra.entrypoints.openai.serving_chat import OpenAIServingChat
from vllm_hydra.entrypoints.openai.serving_completion import OpenAIServingCompletion
from vllm_hydra.entrypoints.openai.serving_engine import ClientDisconnected, ServerLoad
from vllm_hydra.entrypoints.openai.serving_models import OpenAIServingModels
from vllm_hydra.entrypoints.openai.serving_tokenization import OpenAIServingTokenization

if TYPE_CHECKING:
    from vllm_hydra.engine.async_llm import AsyncLLM

logger = logging.getLogger(__name__)

EXIT_ENGINE_DEAD = 1
# After the engine dies the server keeps answering 503 this long, then exits.
ENGINE_DEAD_GRACE_S = 3.0
ENGINE_WATCH_INTERVAL_S = 0.2
# Paths the API key guards (vLLM guards /v1 and friends; /health stays open).
GUARDED_PREFIXES = ("/v1",)


@asynccontextmanager
async def build_async_engine_client(vllm_config: VllmConfig) -> AsyncIterator[AsyncLLM]:
    """Start the engine process; shut it down (no orphans) however the server ends."""
    from vllm_hydra.engine.async_llm import AsyncLLM

    engine = AsyncLLM.from_vllm_config(vllm_config)
    try:
        yield engine
    finally:
        engine.shutdown()


def build_app(engine_client: AsyncLLM, vllm_config: VllmConfig) -> FastAPI:
    app = FastAPI(title="vllm_hydra", version=vllm_hydra.__version__)
    models = OpenAIServingModels(vllm_config)
    load = ServerLoad(vllm_config.scheduler.max_num_seqs, vllm_config.server.max_queued_requests)
    app.state.engine_client = engine_client
    app.state.models = models
    app.state.serving_completion = OpenAIServingCompletion(engine_client, models, load)
    app.state.serving_chat = OpenAIServingChat(engine_client, models, load)
    app.state.serving_tokenization = OpenAIServingTokenization(engine_client, models)
    register_error_handlers(app)
    if vllm_config.server.api_key:
        app.middleware("http")(_api_key_middleware(vllm_config.server.api_key))
    _add_routes(app)
    return app


def _add_routes(app: FastAPI) -> None:
    app.post("/v1/completions")(create_completion)
    app.post("/v1/chat/completions")(create_chat_completion)
    app.get("/v1/models")(show_available_models)
    app.get("/health")(health)
    app.get("/version")(version)
    app.post("/tokenize")(tokenize)
    app.post("/detokenize")(detokenize)
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
        return SSEResponse(_sse(answer), media_type="text/event-stream")
    return JSONResponse(answer.model_dump(exclude_none=True))


class SSEResponse(StreamingResponse):
    """A stream that closes its generator as soon as the response ends, also when the client
    left mid-stream, so the request is aborted now rather than when the generator is collected.
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]


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
    return JSONResponse(serving.tokenize(request).model_dump())


async def detokenize(request: DetokenizeRequest, raw_request: Request) -> JSONResponse:
    serving: OpenAIServingTokenization = raw_request.app.state.serving_tokenization
    return JSONResponse(serving.detokenize(request).model_dump())


async def engine_stats(raw_request: Request) -> JSONResponse:
    """The scheduler's stats from the engine process (a UTILITY call): running and waiting
    requests, KV cache usage, prefix cache hits, preemptions. For tests and operators."""
    engine: AsyncLLM = raw_request.app.state.engine_client
    if engine.errored:
        raise ServiceUnavailableError(f"The engine is dead: {engine.dead_error}")
    return JSONResponse(await engine.get_stats())


def _api_key_middleware(api_key: str) -> Callable[..., Awaitable[Response]]:
    expected = f"Bearer {api_key}".encode()

    async def check_api_key(request: Request, call_next: Callable[..., Awaitable[Response]]):
        guarded = request.url.path.startswith(GUARDED_PREFIXES) and request.method != "OPTIONS"
        given = request.headers.get("authorization", "").encode()
        if guarded and not hmac.compare_digest(given, expected):
            return error_json(
                AuthenticationError(
                    "Missing or incorrect API key: send 'Authorization: Bearer <key>'.",
                    code="invalid_api_key",
                )
            )
        return await call_next(request)

    return check_api_key


# ---- serving ------------------------------------------------------------------------------------


@dataclass
class ServerState:
    exit_code: int = 0


def bind_socket(config: ServerConfig) -> socket.socket:
    """Bind before the engine starts, so a busy port fails fast; port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, config.port))
    return sock


async def serve_http(
    app: FastAPI, config: ServerConfig, sock: socket.socket, engine: AsyncLLM
) -> int:
    """Serve until SIGTERM/SIGINT (0) or until the engine dies (EXIT_ENGINE_DEAD)."""
    uv_config = uvicorn.Config(
        app,
        log_config=None,  # keep Hydra's logging
        timeout_graceful_shutdown=max(config.shutdown_timeout_s, 0.01),
        timeout_keep_alive=5,
    )
    server = uvicorn.Server(uv_config)
    state = ServerState()
    watchdog = asyncio.ensure_future(_watch_engine(engine, server, state))
    host, port = sock.getsockname()[:2]
    logger.info(
        "Serving the OpenAI API at http://%s:%d (model %s)",
        _url_host(host),
        port,
        app.state.models.served_model_name,
    )
    try:
        await server.serve(sockets=[sock])
    finally:
        watchdog.cancel()
    return state.exit_code


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _watch_engine(engine: AsyncLLM, server: uvicorn.Server, state: ServerState) -> None:
    while not engine.errored:
        await asyncio.sleep(ENGINE_WATCH_INTERVAL_S)
    logger.error(
        "The engine died (%s); answering 503 for %.0f s, then exiting.",
        engine.dead_error,
        ENGINE_DEAD_GRACE_S,
    )
    await asyncio.sleep(ENGINE_DEAD_GRACE_S)
    state.exit_code = EXIT_ENGINE_DEAD
    server.should_exit = True


async def _run(vllm_config: VllmConfig, sock: socket.socket) -> int:
    async with build_async_engine_client(vllm_config) as engine:
        app = build_app(engine, vllm_config)
        return await serve_http(app, vllm_config.server, sock, engine)


def _interrupt(signum: int, _: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run_server(vllm_config: VllmConfig) -> int:
    """Start the engine, serve, and return the process's exit status.

    SIGTERM becomes KeyboardInterrupt (as in vLLM) so that a signal during start-up or after
    uvicorn's graceful shutdown still unwinds through the engine's shutdown.
    """
    sock = bind_socket(vllm_config.server)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        return asyncio.run(_run(vllm_config, sock))
    except KeyboardInterrupt as e:
        logger.info("Stopped by %s.", e)
        return 0
    finally:
        sock.close()
