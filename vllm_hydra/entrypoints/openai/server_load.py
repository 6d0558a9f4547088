"""Admission control for server.max_queued_requests: sequences are counted when a request is
accepted, before its prompt is tokenized, and released when its answer ends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from vllm_hydra.entrypoints.openai.errors import BadRequestError, ServiceUnavailableError


@dataclass
class ServerLoad:
    """Sequences accepted across the server: beyond `max_num_seqs` running ones, at most
    `max_queued` may wait, so the engine's waiting queue never holds more than that."""

    max_num_seqs: int
    max_queued: int | None = None
    in_flight: int = 0

    @property
    def capacity(self) -> int | None:
        return None if self.max_queued is None else self.max_num_seqs + self.max_queued

    def admit(self, num_seqs: int, param: str) -> Admission:
        """Count `num_seqs` now or refuse: 503 when full; 400 (naming `param`) when the
        request alone is more than the server may ever hold."""
        capacity = self.capacity
        if capacity is not None and num_seqs > capacity:
            raise BadRequestError(
                f"The request asks for {num_seqs} sequences; this server holds at most "
                f"{capacity} (scheduler.max_num_seqs + server.max_queued_requests).",
                param=param,
            )
        if capacity is not None and self.in_flight + num_seqs > capacity:
            raise ServiceUnavailableError(
                f"The server is busy: {self.max_queued} requests are already waiting "
                f"(server.max_queued_requests). Retry later.",
                code="queue_full",
            )
        self.in_flight += num_seqs
        return Admission(self, num_seqs)


class Admission:
    """One accepted request's place in the ServerLoad; `release()` (idempotent) frees it."""

    def __init__(self, load: ServerLoad, num_seqs: int) -> None:
        self.load = load
        self.num_seqs = num_seqs

    def release(self) -> None:
        self.load.in_flight -= self.num_seqs
        self.num_seqs = 0


class AdmittedStream:
    """An SSE stream that holds its admission until closed, also when closed before its
    first chunk (an unstarted async generator's `finally` never runs)."""

    def __init__(self, chunks: AsyncIterator[str], admission: Admission) -> None:
        self.chunks = chunks
        self.admission = admission

    def __aiter__(self) -> AdmittedStream:
        return self

    async def __anext__(self) -> str:
        return await self.chunks.__anext__()

    async def aclose(self) -> None:
        try:
            await self.chunks.aclose()  # type: ignore[attr-defined]
        finally:
            self.admission.release()
