"""Clients of the engine core (vLLM's v1/engine/core_client.py).

`InprocClient` runs the engine in the caller's process. `SyncMPClient` and `AsyncMPClient` run
it in a spawned process (`launch.py`) and talk ZMQ over per-process ipc:// paths in a temp dir:
requests go ROUTER -> DEALER as `[engine identity, request_type, msgpack]`, outputs come back
PUSH -> PULL as msgpack `EngineCoreOutputs`. The engine is dead once its process exits (a
monitor thread waits on the process sentinels) or it sends the ENGINE_CORE_DEAD frame; from then
on every pending and later call raises `EngineDeadError`.

With data parallelism (`parallel.dp > 1`) there is one engine process per dp rank and a
`DPCoordinator`; `DPLBSyncMPClient` and `DPLBAsyncMPClient` send each request to the least
loaded engine and each abort to the engine that holds the request, and merge the outputs of all
engines. Any engine's death is the death of the whole client. `make_sync_mp_client` and
`make_async_mp_client` choose the class.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
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
from vllm_hydra.engine.core import EngineCore, engine_identity
from vllm_hydra.engine.dp_load_balancer import DPLoadBalancer, DPLoadSubscriber
from vllm_hydra.engine.exceptions import EngineDeadError
from vllm_hydra.engine.launch import LaunchedEngines, launch_core_engines
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

    def call_utility_all(self, method_name: str, *args: Any) -> list[Any]:
        return [self.call_utility(method_name, *args)]

    def shutdown(self) -> None:
        self.engine_core.shutdown()


class MPClient:
    """What both multi-process clients share: sockets, the engine processes, their monitor.

    Without a load balancer (dp=1) every request goes to engine 0; the DPLB subclasses override
    `_engine_for`, `_engines_holding` and `_track`."""

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
        # Finalizers run newest first at exit: this one, before those that stop the engines,
        # so an exit without shutdown() is not reported as engine death.
        self._exiting = threading.Event()
        weakref.finalize(self, self._exiting.set)
        self._start_monitor()

    def _launch(self, vllm_config: VllmConfig) -> None:
        self.addresses = self._addresses(vllm_config.parallel.dp)
        with launch_core_engines(vllm_config, self.addresses, self._ipc("handshake")) as launched:
            self.engines: LaunchedEngines = launched
            self.engine_manager = launched.manager
            self.input_socket = _bind(self.ctx, zmq.ROUTER, self.addresses.inputs)
            # A send to an engine that is not (or no longer) connected fails instead of
            # vanishing; _send retries until it connects or is known dead.
            self.input_socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
            self.output_socket = _bind(self.ctx, zmq.PULL, self.addresses.outputs)
        self.engine_identities = [engine_identity(r.engine_index) for r in launched.ready]
        self.num_gpu_blocks = launched.ready[0].num_gpu_blocks  # the same on every engine
        self.max_model_len = launched.ready[0].max_model_len

    def _addresses(self, dp_size: int) -> EngineZmqAddresses:
        addresses = EngineZmqAddresses(inputs=self._ipc("input"), outputs=self._ipc("output"))
        if dp_size > 1:
            addresses.coordinator_input = self._ipc("coordinator_input")
            addresses.coordinator_output = self._ipc("coordinator_output")
        return addresses

    def _ipc(self, name: str) -> str:
        return f"ipc://{Path(self._tmpdir) / name}"

    @property
    def errored(self) -> bool:
        return self.dead_error is not None

    @property
    def engine_pid(self) -> int | None:
        """The pid of engine 0 (the only engine without data parallelism)."""
        return self.engine_manager.proc.pid

    @property
    def engine_pids(self) -> list[int | None]:
        """The engine processes' pids, by engine index."""
        return [proc.pid for proc in self.engine_manager.procs]

    @property
    def dp_size(self) -> int:
        return len(self.engine_identities)

    def _start_monitor(self) -> None:
        threading.Thread(target=self._monitor_engine, daemon=True, name="EngineMonitor").start()

    def _monitor_engine(self) -> None:
        """The first of the engines (or the coordinator) to exit kills the client."""
        procs = list(self.engine_manager.procs)
        if self.engines.coordinator is not None:
            procs.append(self.engines.coordinator.proc)
        ready = multiprocessing.connection.wait([proc.sentinel for proc in procs])
        proc = next(p for p in procs if p.sentinel in ready)
        proc.join(1.0)  # reap it, for its exit code
        if not self._closing:
            self._mark_dead(
                f"Its process {proc.name} (pid {proc.pid}) exited with code {proc.exitcode}."
            )

    def _mark_dead(self, detail: str) -> None:
        with self._dead_lock:
            if self.dead_error is not None or self._closing or self._exiting.is_set():
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

    def _encode(
        self, request_type: EngineCoreRequestType, body: Any, engine_index: int
    ) -> list[bytes]:
        return [self.engine_identities[engine_index], request_type.value, self.encoder.encode(body)]

    def _engine_for(self, request_id: str) -> int:
        """The engine a new request goes to."""
        return 0

    def _engines_holding(self, request_ids: list[str]) -> dict[int, list[str]]:
        """Request ids to abort, by the engine that holds them."""
        return {0: request_ids}

    def _track(self, outputs: EngineCoreOutputs) -> None:
        """See every engine's outputs before the caller does."""

    def _decode(self, frames: list[bytes]) -> EngineCoreOutputs | None:
        """The outputs, or None for the dead frame (the engine is then marked dead)."""
        if len(frames) == 1 and frames[0] == ENGINE_CORE_DEAD:
            self._mark_dead("It sent ENGINE_CORE_DEAD after a fatal error.")
            return None
        return self.decoder.decode(frames[0])

    def _new_utility(self, method_name: str, args: tuple[Any, ...]) -> UtilityRequest:
        return UtilityRequest(next(self._call_ids), method_name, list(args))

    def _release(self) -> None:
        """Stop the engine processes (and the coordinator), close the sockets and remove their
        files."""
        self._closing = True
        engines = getattr(self, "engines", None)
        if engines is not None:
            engines.shutdown()
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
                self._track(outputs)
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
        engine_index = self._engine_for(request.request_id)
        self._send(EngineCoreRequestType.ADD, request, engine_index)

    def abort_requests(self, request_ids: list[str]) -> None:
        for engine_index, ids in self._engines_holding(request_ids).items():
            if ids:
                self._send(EngineCoreRequestType.ABORT, ids, engine_index)

    def call_utility(self, method_name: str, *args: Any, engine_index: int = 0) -> Any:
        """Run `method_name(*args)` on one engine (engine 0 unless told)."""
        return self._start_utility(method_name, args, engine_index).result()

    def call_utility_all(self, method_name: str, *args: Any) -> list[Any]:
        """Run `method_name(*args)` on every engine; the results by engine index."""
        futures = [self._start_utility(method_name, args, i) for i in range(self.dp_size)]
        return [future.result() for future in futures]

    def _start_utility(
        self, method_name: str, args: tuple[Any, ...], engine_index: int
    ) -> concurrent.futures.Future:
        call = self._new_utility(method_name, args)
        future: concurrent.futures.Future = concurrent.futures.Future()
        self.utility_results[call.call_id] = future
        self._send(EngineCoreRequestType.UTILITY, call, engine_index)
        return future

    def _send(self, request_type: EngineCoreRequestType, body: Any, engine_index: int) -> None:
        frames = self._encode(request_type, body, engine_index)
        while True:
            self._ensure_alive()
            try:
                self.input_socket.send_multipart(frames, flags=zmq.NOBLOCK)
                return
            except zmq.ZMQError as exc:  # the engine not connected yet (or any more: dead)
                if not _is_retryable(exc):
                    raise
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
                self._track(outputs)
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
        engine_index = self._engine_for(request.request_id)
        await self._send(EngineCoreRequestType.ADD, request, engine_index)

    async def abort_requests_async(self, request_ids: list[str]) -> None:
        for engine_index, ids in self._engines_holding(request_ids).items():
            if ids:
                await self._send(EngineCoreRequestType.ABORT, ids, engine_index)

    async def call_utility_async(self, method_name: str, *args: Any, engine_index: int = 0) -> Any:
        """Run `method_name(*args)` on one engine (engine 0 unless told)."""
        return await self._start_utility(method_name, args, engine_index)

    async def call_utility_all_async(self, method_name: str, *args: Any) -> list[Any]:
        """Run `method_name(*args)` on every engine; the results by engine index."""
        futures = [await self._start_utility(method_name, args, i) for i in range(self.dp_size)]
        return list(await asyncio.gather(*futures))

    async def _start_utility(
        self, method_name: str, args: tuple[Any, ...], engine_index: int
    ) -> asyncio.Future:
        self._ensure_output_task()
        call = self._new_utility(method_name, args)
        future = asyncio.get_running_loop().create_future()
        self.utility_results[call.call_id] = future
        await self._send(EngineCoreRequestType.UTILITY, call, engine_index)
        return future

    async def _send(
        self, request_type: EngineCoreRequestType, body: Any, engine_index: int
    ) -> None:
        frames = self._encode(request_type, body, engine_index)
        while True:
            self._ensure_alive()
            try:
                await self.input_socket.send_multipart(frames, flags=zmq.NOBLOCK)
                return
            except zmq.ZMQError as exc:  # the engine not connected yet (or any more: dead)
                if not _is_retryable(exc):
                    raise
                await asyncio.sleep(SEND_RETRY_S)

    def shutdown(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._output_task is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._output_task.cancel)
        self._release()


class _DPLoadBalancing:
    """The DPLB clients' part: route by load (`DPLoadBalancer`), fed by the coordinator.

    Mixed in before SyncMPClient or AsyncMPClient, whose __init__ and shutdown it wraps."""

    addresses: EngineZmqAddresses
    load_balancer: DPLoadBalancer
    load_subscriber: DPLoadSubscriber | None = None

    def __init__(self, vllm_config: VllmConfig) -> None:
        self.load_balancer = DPLoadBalancer(vllm_config.parallel.dp)
        super().__init__(vllm_config)  # type: ignore[call-arg]
        address = self.addresses.coordinator_output
        assert address is not None, "dp > 1 always starts a coordinator"
        self.load_subscriber = DPLoadSubscriber(address, self.load_balancer)

    def shutdown(self) -> None:
        if self.load_subscriber is not None:
            self.load_subscriber.shutdown()
        super().shutdown()  # type: ignore[misc]

    def _engine_for(self, request_id: str) -> int:
        return self.load_balancer.assign(request_id)

    def _engines_holding(self, request_ids: list[str]) -> dict[int, list[str]]:
        return self.load_balancer.engines_holding(request_ids)

    def _track(self, outputs: EngineCoreOutputs) -> None:
        self.load_balancer.track(outputs)


class DPLBSyncMPClient(_DPLoadBalancing, SyncMPClient):
    """SyncMPClient over dp engines, for the offline `LLM`."""


class DPLBAsyncMPClient(_DPLoadBalancing, AsyncMPClient):
    """AsyncMPClient over dp engines, for `AsyncLLM` (vLLM's internal load balancing)."""


def make_sync_mp_client(vllm_config: VllmConfig) -> SyncMPClient:
    """The engine core in its own process(es): load-balanced over dp engines when dp > 1."""
    if vllm_config.parallel.dp > 1:
        return DPLBSyncMPClient(vllm_config)
    return SyncMPClient(vllm_config)


def make_async_mp_client(vllm_config: VllmConfig) -> AsyncMPClient:
    """The asyncio counterpart of `make_sync_mp_client`."""
    if vllm_config.parallel.dp > 1:
        return DPLBAsyncMPClient(vllm_config)
    return AsyncMPClient(vllm_config)


def _is_retryable(exc: zmq.ZMQError) -> bool:
    """EAGAIN or EHOSTUNREACH: the engine's connection is still being set up right after
    READY, or it is gone (and the monitor is about to mark the engine dead)."""
    return exc.errno in (zmq.EAGAIN, errno.EHOSTUNREACH, zmq.EHOSTUNREACH)


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
