"""Errors of the engine process as its clients see them (vLLM's v1/engine/exceptions.py)."""

from __future__ import annotations


class EngineStartupError(RuntimeError):
    """The engine process failed before it was ready; the message holds the root cause."""


class EngineDeadError(RuntimeError):
    """The engine process died: unrecoverable, every pending and later call raises this."""

    def __init__(self, detail: str = "") -> None:
        message = "EngineCore encountered an issue. See stack trace (above) for the root cause."
        super().__init__(f"{message} {detail}".strip())


class EngineShutdownError(RuntimeError):
    """The server is shutting down: requests still in flight when its drain time ran out (and
    any that arrive later) end with this."""

    def __init__(self) -> None:
        super().__init__("The server is shutting down; the request was aborted.")


class EngineRequestError(RuntimeError):
    """The engine refused one request (e.g. the scheduler's checks); the engine runs on."""
