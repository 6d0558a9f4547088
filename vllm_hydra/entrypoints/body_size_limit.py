"""`BodySizeLimit`: server.max_request_body_bytes, answered 413 in OpenAI's shape.

FastAPI's own `max_body_size` answers a too-large Content-Length in plain text (it swaps any
response for its own), so this pure ASGI middleware does the same job in the API's shape.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vllm_hydra.entrypoints.openai.errors import http_error_json


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            # Refused before a byte of the body is read.
            response = http_error_json(Request(scope), self._too_large())
            await response(scope, receive, send)
            return
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        """A chunked body is counted as it arrives; FastAPI passes the HTTPException on to the
        app's handler, which answers it in shape."""
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise self._too_large()
            return message

        return counted

    def _too_large(self) -> HTTPException:
        return HTTPException(
            413,
            f"The request body is over server.max_request_body_bytes={self.max_bytes} bytes",
        )
