"""`RootPath`: server.root_path, the prefix the app is served under behind a proxy (vLLM's
--root-path). uvicorn puts the prefix in front of every path; a proxy that does not strip it
sends it again. This pure ASGI middleware drops the repeat, so /v1/... and <root>/v1/... reach
the same route, and `route_path` gives the checks that run before routing the route's path.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


def route_path(scope: Scope) -> str:
    """The path the router matches: the request's path without the root path."""
    path, root = scope["path"], scope.get("root_path", "")
    return (path[len(root) :] or "/") if root and path.startswith(root) else path


class RootPath:
    def __init__(self, app: ASGIApp, root_path: str) -> None:
        self.app = app
        self.root_path = root_path
        self.doubled = root_path + root_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self._doubled(scope["path"]):
            scope = {**scope, "path": scope["path"][len(self.root_path) :]}
            scope["raw_path"] = scope["path"].encode()
        await self.app(scope, receive, send)

    def _doubled(self, path: str) -> bool:
        return path == self.doubled or path.startswith(self.doubled + "/")
