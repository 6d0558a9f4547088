"""Start the engine processes and wait until all are ready (vLLM's v1/engine/utils.py).

`launch_core_engines` binds a handshake socket, spawns one `EngineCoreProc` per dp rank (and,
for dp > 1, the `DPCoordinator`) and runs the handshake with every engine: each says HELLO
(its ZMQ identity is its engine index), the frontend answers with the socket addresses, and the
engine says READY (with `num_gpu_blocks` and `max_model_len`) once its model is loaded and its
KV cache sized. Every process sentinel is polled beside the socket, so an engine that dies
during start-up raises `EngineStartupError` at once, with the cause it sent before dying; the
other engines are then stopped.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import msgspec
import zmq

from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.engine.coordinator import DPCoordinator
from vllm_hydra.engine.core import engine_identity, run_engine_core
from vllm_hydra.engine.exceptions import EngineStartupError
from vllm_hydra.engine.messages import EngineHandshake, EngineZmqAddresses
from vllm_hydra.engine.process_utils import stop_processes

# After a process exits, how long to wait for the FAILED message it may have sent.
LAST_WORDS_S = 0.5
# An engine that neither gets ready nor dies in this long is hung (vLLM's
# VLLM_ENGINE_READY_TIMEOUT_S).
ENGINE_READY_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class EngineReady:
    """What an engine reports in READY."""

    engine_index: int
    num_gpu_blocks: int
    max_model_len: int


class CoreEngineProcManager:
    """Owns the engine processes (one per dp rank): spawns them, and terminates and joins all
    of them on shutdown."""

    def __init__(self, vllm_config: VllmConfig, handshake_address: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.procs: list[multiprocessing.process.BaseProcess] = []
        self._finalizer = weakref.finalize(self, stop_processes, self.procs)
        for index in range(vllm_config.parallel.dp):
            proc = context.Process(
                target=run_engine_core,
                name=f"EngineCore_DP{index}",
                kwargs=dict(
                    vllm_config=vllm_config,
                    handshake_address=handshake_address,
                    parent_pid=os.getpid(),
                    engine_index=index,
                ),
            )
            proc.start()
            self.procs.append(proc)

    @property
    def proc(self) -> multiprocessing.process.BaseProcess:
        """The first engine (the only one without data parallelism)."""
        return self.procs[0]

    @property
    def sentinels(self) -> list[int]:
        return [proc.sentinel for proc in self.procs]

    def exited(self) -> list[multiprocessing.process.BaseProcess]:
        return [proc for proc in self.procs if not proc.is_alive()]

    def shutdown(self) -> None:
        self._finalizer()


@dataclass
class LaunchedEngines:
    """What `launch_core_engines` hands back: the processes, and each engine's READY (filled
    in after the caller's block)."""

    manager: CoreEngineProcManager
    coordinator: DPCoordinator | None
    ready: list[EngineReady]

    def shutdown(self) -> None:
        self.manager.shutdown()
        if self.coordinator is not None:
            self.coordinator.shutdown()


@contextmanager
def launch_core_engines(
    vllm_config: VllmConfig, addresses: EngineZmqAddresses, handshake_address: str
) -> Iterator[LaunchedEngines]:
    """Spawn the engines (and the coordinator); after the caller's block (which binds its data
    sockets), run the handshake with every engine. Stops them all if anything fails."""
    ctx = zmq.Context()
    handshake = ctx.socket(zmq.ROUTER)
    handshake.bind(handshake_address)
    launched = None
    try:
        launched = LaunchedEngines(
            manager=CoreEngineProcManager(vllm_config, handshake_address),
            coordinator=_start_coordinator(vllm_config, addresses),
            ready=[],
        )
        yield launched
        launched.ready.extend(wait_for_engine_startup(handshake, launched, addresses))
    except BaseException:
        if launched is not None:
            launched.shutdown()
        raise
    finally:
        handshake.close(linger=0)
        ctx.term()


def _start_coordinator(
    vllm_config: VllmConfig, addresses: EngineZmqAddresses
) -> DPCoordinator | None:
    if vllm_config.parallel.dp == 1:
        return None
    if addresses.coordinator_input is None or addresses.coordinator_output is None:
        raise ValueError("parallel.dp > 1 needs the coordinator's addresses")
    return DPCoordinator(
        vllm_config.parallel.dp, addresses.coordinator_input, addresses.coordinator_output
    )


def wait_for_engine_startup(
    handshake: zmq.Socket, launched: LaunchedEngines, addresses: EngineZmqAddresses
) -> list[EngineReady]:
    """HELLO -> addresses -> READY from every engine, in index order; raise EngineStartupError
    as soon as any engine (or the coordinator) dies."""
    poller = zmq.Poller()
    poller.register(handshake, zmq.POLLIN)
    sentinels = launched.manager.sentinels
    if launched.coordinator is not None:
        sentinels.append(launched.coordinator.sentinel)
    for sentinel in sentinels:
        poller.register(sentinel, zmq.POLLIN)
    identities = {engine_identity(i): i for i in range(len(launched.manager.procs))}
    states = dict.fromkeys(identities, "NEW")
    ready: dict[int, EngineReady] = {}
    deadline = time.monotonic() + ENGINE_READY_TIMEOUT_S
    while len(ready) < len(identities):
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        events = dict(poller.poll(max(remaining_ms, 0)))
        if not events:
            raise EngineStartupError(
                f"Engine core initialization failed: not ready after {ENGINE_READY_TIMEOUT_S} s."
            )
        if handshake in events:
            identity, payload = handshake.recv_multipart()
            message = msgspec.msgpack.decode(payload, type=EngineHandshake)
            index = identities[identity]
            states[identity] = _advance(states[identity], message, index)
            if message.status == "HELLO":
                handshake.send_multipart([identity, msgspec.msgpack.encode(addresses)])
            elif message.status == "READY":
                ready[index] = EngineReady(index, message.num_gpu_blocks, message.max_model_len)
        elif any(sentinel in events for sentinel in sentinels):
            raise _startup_error(handshake, launched)
    return [ready[i] for i in sorted(ready)]


def _advance(state: str, message: EngineHandshake, index: int) -> str:
    """NEW -(HELLO)-> CONNECTED -(READY)-> READY; FAILED (or any other order) raises."""
    if message.status == "FAILED":
        raise EngineStartupError(
            f"Engine core initialization failed (engine {index}): {message.error}"
        )
    expected = {"NEW": "HELLO", "CONNECTED": "READY"}[state]
    if message.status != expected:
        raise EngineStartupError(
            f"Engine core {index} handshake: got {message.status} in state {state}."
        )
    return "CONNECTED" if state == "NEW" else "READY"


def _startup_error(handshake: zmq.Socket, launched: LaunchedEngines) -> EngineStartupError:
    """A process exited during start-up: the FAILED message an engine sent, else exit codes."""
    deadline = time.monotonic() + LAST_WORDS_S
    while handshake.poll(max(int((deadline - time.monotonic()) * 1000), 0)):
        identity, payload = handshake.recv_multipart()
        message = msgspec.msgpack.decode(payload, type=EngineHandshake)
        if message.status == "FAILED":  # other engines' HELLO/READY may come first
            index = int.from_bytes(identity, "little")
            return EngineStartupError(
                f"Engine core initialization failed (engine {index}): {message.error}"
            )
    exited = launched.manager.exited()
    if launched.coordinator is not None and not launched.coordinator.proc.is_alive():
        exited.append(launched.coordinator.proc)
    codes = ", ".join(f"{proc.name} exited with code {proc.exitcode}" for proc in exited)
    return EngineStartupError(
        f"Engine core initialization failed: {codes} before all engines were ready. "
        "See the log above for the root cause."
    )
