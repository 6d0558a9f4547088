"""Clients of the engine core (vLLM's v1/engine/core_client.py).

`InprocClient` runs the engine in the caller's process. `SyncMPClient` and `AsyncMPClient` run
it in a spawned process (`launch.py`) and talk ZMQ over per-process ipc:// paths in a temp dir:
requests go PUSH -> PULL as `[request_type, msgpack]`, outputs come back PUSH -> PULL as msgpack
`EngineCoreOutputs`. The engine is dead once its process exits (a monitor thread waits on the
process sentinel) or it sends the ENGINE_CORE_DEAD frame; from then on every pending and later
call raises `EngineDeadError`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import multiprocessing.connection
import queue
import shutil
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.engine.core import EngineCore
from vllm_hydra.engine.exceptions import EngineDeadError
from vllm_hydra.engine.launch import launch_core_engines
from vllm_hydra.engine.messages import (
    ENGINE_CORE_DEAD,
    EngineCoreOutputs,
    EngineCoreRequest,
    EngineCoreRequestType,
    EngineZmqAddresses,
    UtilityOutput,
    UtilityRequest,
)

logger = logging.getLogger(__name__)

# How often the sync output thread looks up from its socket to see if it should stop.
POLL_MS = 100
# A send finds no engine on the socket while the engine's connection is still being set up
# (right after READY) or once it died: retry at this interval until it is there or dead.
SEND_RETRY_S = 0.002


class InprocClient:
    """The engine core in this process: `get_output()` runs one step."""

    def __init__(self, vllm_config: VllmConfig) -> None:
        self.engine_core = EngineCore(vllm_config)
        self.num_gpu_blocks = self.engine_core.num_gpu_blocks

    def add_request(self, request: EngineCoreRequest) -> None:
        self.engine_core.add_request(request)

    def abort_requests(self, request_ids: list[str]) -> None:
        if request_ids:
            self.engine_core.abort_requests(request_ids)

    def get_output(self) -> EngineCoreOutputs:
        return self.engine_core.step_fn()

    def call_utility(self, method_name: str, *args: Any) -> Any:
        return getattr(self.engine_core, method_name)(*args)

    def shutdown(self) -> None:
        self.engine_core.shutdown()


class MPClient:
    """What both multi-process clients share: sockets, the engine process, its monitor."""

    def __init__(self, vllm_config: VllmConfig, ctx: zmq.Context) -> None:
        self.vllm_config = vllm_config
        self.ctx = ctx
        self.encoder = msgspec.msgpack.Encoder()
        self.decoder = msgspec.msgpack.Decoder(EngineCoreOutputs)
        self.dead_error: EngineDeadError | None = None
        self._closing = False
        self._dead_lock = threading.Lock()
        self._call_ids = itertools.count()
        self._tmpdir = tempfile.mkdtemp(prefix="vllm_hydra_")
        # The socket files go even if shutdown() is never called.
        weakref.finalize(self, shutil.rmtree, self._tmpdir, ignore_errors=True)
        try:
            self._launch(vllm_config)
        except BaseException:
            self._release()
            raise
        self._start_monitor()

    def _launch(self, vllm_config: VllmConfig) -> None:
        addresses = EngineZmqAddresses(inputs=self._ipc("input"), outputs=self._ipc("output"))
        with launch_core_engines(vllm_config, addresses, self._ipc("handshake")) as launched:
            self.engine_manager, ready = launched
            self.input_socket = _bind(self.ctx, zmq.PUSH, addresses.inputs)
            self.output_socket = _bind(self.ctx, zmq.PULL, addresses.outputs)
        self.num_gpu_blocks = ready[0].num_gpu_blocks
        self.max_model_len = ready[0].max_model_len

    def _ipc(self, name: str) -> str:
        return f"ipc://{Path(self._tmpdir) / name}"

    @property
    def errored(self) -> bool:
        return self.dead_error is not None

    @property
    def engine_pid(self) -> int | None:
        return self.engine_manager.proc.pid

    def _start_monitor(self) -> None:
        threading.Thread(target=self._monitor_engine, daemon=True, name="EngineMonitor").start()

    def _monitor_engine(self) -> None:
        proc = self.engine_manager.proc
        multiprocessing.connection.wait([proc.sentinel])
        proc.join(1.0)  # reap it, for its exit code
        if not self._closing:
            self._mark_dead(f"Its process (pid {proc.pid}) exited with code {proc.exitcode}.")

    def _mark_dead(self, detail: str) -> None:
        with self._dead_lock:
            if self.dead_error is not None or self._closing:
                return
            self.dead_error = EngineDeadError(detail)
        logger.error("Engine core died: %s", detail)
        self._on_engine_dead(self.dead_error)

    def _on_engine_dead(self, error: EngineDeadError) -> None:
        """Wake everything that waits on the engine (subclasses)."""

    def _ensure_alive(self) -> None:
        if self.dead_error is not None:
            raise self.dead_error
        if self._closing:
            raise EngineDeadError("The client was shut down.")

    def _encode(self, request_type: EngineCoreRequestType, body: Any) -> list[bytes]:
        return [request_type.value, self.encoder.encode(body)]

    def _decode(self, frames: list[bytes]) -> EngineCoreOutputs | None:
        """The outputs, or None for the dead frame (the engine is then marked dead)."""
        if len(frames) == 1 and frames[0] == ENGINE_CORE_DEAD:
            self._mark_dead("It sent ENGINE_CORE_DEAD after a fatal error.")
            return None
        return self.decoder.decode(frames[0])

    def _new_utility(self, method_name: str, args: tuple[Any, ...]) -> UtilityRequest:
        return UtilityRequest(next(self._call_ids), method_name, list(args))

    def _release(self) -> None:
        """Stop the engine process, close the sockets and remove their files."""
        self._closing = True
        manager = getattr(self, "engine_manager", None)
        if manager is not None:
            manager.shutdown()
        for name in ("input_socket", "output_socket"):
            sock = getattr(self, name, None)
            if sock is not None:
                sock.close(linger=0)
        self.ctx.term()
        shutil.rmtree(self._tmpdir, ignore_errors=True)


class SyncMPClient(MPClient):
    """The engine in another process, for synchronous callers (`LLM(use_engine_process=True)`)."""

    def __init__(self, vllm_config: VllmConfig) -> None:
        self.outputs_queue: queue.Queue[EngineCoreOutputs | Exception] = queue.Queue()
        self.utility_results: dict[int, concurrent.futures.Future] = {}
        super().__init__(vllm_config, zmq.Context())
        self._output_thread = threading.Thread(
            target=self._process_outputs_socket, daemon=True, name="EngineCoreOutputs"
        )
        self._output_thread.start()

    def _process_outputs_socket(self) -> None:
        while not self._closing:
            if not self.output_socket.poll(POLL_MS):
                continue
            outputs = self._decode(self.output_socket.recv_multipart())
            if outputs is None:
                return
            if outputs.utility_output is not None:
                _resolve(self.utility_results.pop(outputs.utility_output.call_id, None), outputs)
            else:
                self.outputs_queue.put(outputs)

    def _on_engine_dead(self, error: EngineDeadError) -> None:
        self.outputs_queue.put(error)
        for future in list(self.utility_results.values()):
            future.set_exception(error)
        self.utility_results.clear()

    def get_output(self) -> EngineCoreOutputs:
        self._ensure_alive()
        outputs = self.outputs_queue.get()
        if isinstance(outputs, Exception):
            self.outputs_queue.put(outputs)  # later callers must see it too
            raise outputs
        return outputs

    def add_request(self, request: EngineCoreRequest) -> None:
        self._send(EngineCoreRequestType.ADD, request)

    def abort_requests(self, request_ids: list[str]) -> None:
        if request_ids:
            self._send(EngineCoreRequestType.ABORT, request_ids)

    def call_utility(self, method_name: str, *args: Any) -> Any:
        call = self._new_utility(method_name, args)
        future: concurrent.futures.Future = concurrent.futures.Future()
        self.utility_results[call.call_id] = future
        self._send(EngineCoreRequestType.UTILITY, call)
        return future.result()

    def _send(self, request_type: EngineCoreRequestType, body: Any) -> None:
        frames = self._encode(request_type, body)
        while True:
            self._ensure_alive()
            try:
                self.input_socket.send_multipart(frames, flags=zmq.NOBLOCK)
                return
            except zmq.Again:  # no peer yet (just started) or any more (then it is dead)
                time.sleep(SEND_RETRY_S)

    def shutdown(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._output_thread.join()
        self._release()


class AsyncMPClient(MPClient):
    """The engine in another process, for asyncio callers (`AsyncLLM`). The output task starts
    in the running loop on first use."""

    def __init__(self, vllm_config: VllmConfig) -> None:
        self.utility_results: dict[int, asyncio.Future] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._output_task: asyncio.Task | None = None
        self._outputs_queue: asyncio.Queue[EngineCoreOutputs | Exception] | None = None
        super().__init__(vllm_config, zmq.asyncio.Context())

    def _ensure_output_task(self) -> asyncio.Queue:
        if self._outputs_queue is None:
            self._loop = asyncio.get_running_loop()
            self._outputs_queue = asyncio.Queue()
            self._output_task = self._loop.create_task(self._process_outputs_socket())
            if self.dead_error is not None:
                self._outputs_queue.put_nowait(self.dead_error)
        return self._outputs_queue

    async def _process_outputs_socket(self) -> None:
        outputs_queue = self._ensure_output_task()
        while True:
            outputs = self._decode(await self.output_socket.recv_multipart())
            if outputs is None:
                return
            if outputs.utility_output is not None:
                _resolve(self.utility_results.pop(outputs.utility_output.call_id, None), outputs)
            else:
                outputs_queue.put_nowait(outputs)

    def _on_engine_dead(self, error: EngineDeadError) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake_waiters, error)

    def _wake_waiters(self, error: EngineDeadError) -> None:
        if self._outputs_queue is not None:
            self._outputs_queue.put_nowait(error)
        for future in self.utility_results.values():
            if not future.done():
                future.set_exception(error)
        self.utility_results.clear()

    async def get_output_async(self) -> EngineCoreOutputs:
        outputs_queue = self._ensure_output_task()
        outputs = await outputs_queue.get()
        if isinstance(outputs, Exception):
            outputs_queue.put_nowait(outputs)  # later callers must see it too
            raise outputs
        return outputs

    async def add_request_async(self, request: EngineCoreRequest) -> None:
        await self._send(EngineCoreRequestType.ADD, request)

    async def abort_requests_async(self, request_ids: list[str]) -> None:
        if request_ids:
            await self._send(EngineCoreRequestType.ABORT, request_ids)

    async def call_utility_async(self, method_name: str, *args: Any) -> Any:
        self._ensure_output_task()
        call = self._new_utility(method_name, args)
        future = asyncio.get_running_loop().create_future()
        self.utility_results[call.call_id] = future
        await self._send(EngineCoreRequestType.UTILITY, call)
        return await future

    async def _send(self, request_type: EngineCoreRequestType, body: Any) -> None:
        frames = self._encode(request_type, body)
        while True:
            self._ensure_alive()
            try:
                await self.input_socket.send_multipart(frames, flags=zmq.NOBLOCK)
                return
            except zmq.Again:  # no peer yet (just started) or any more (then it is dead)
                await asyncio.sleep(SEND_RETRY_S)

    def shutdown(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._output_task is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._output_task.cancel)
        self._release()


def _bind(ctx: zmq.Context, socket_type: int, address: str) -> zmq.Socket:
    sock = ctx.socket(socket_type)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.bind(address)
    return sock


def _resolve(future: Any, outputs: EngineCoreOutputs) -> None:
    """Complete a utility call's future (concurrent or asyncio) with its result or failure."""
    result: UtilityOutput = outputs.utility_output  # type: ignore[assignment]
    if future is None or future.done():
        return
    if result.failure_message is not None:
        future.set_exception(RuntimeError(f"Utility call failed: {result.failure_message}"))
    else:
        future.set_result(result.result)
