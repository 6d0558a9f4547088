"""Start the engine process and wait until it is ready (vLLM's v1/engine/utils.py).

`launch_core_engines` binds a handshake socket, spawns one `EngineCoreProc` and runs the
handshake: the engine says HELLO, the frontend answers with the data-socket addresses, and the
engine says READY (with `num_gpu_blocks` and `max_model_len`) once its model is loaded and its KV
cache sized. The process sentinel is polled beside the socket, so an engine that dies during
start-up raises `EngineStartupError` at once, with the cause the engine sent before dying.
"""

from __future__ import annotations

import logging
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
from vllm_hydra.engine.core import run_engine_core
from vllm_hydra.engine.exceptions import EngineStartupError
from vllm_hydra.engine.messages import EngineHandshake, EngineZmqAddresses

logger = logging.getLogger(__name__)

# How long shutdown waits for the engine to exit after SIGTERM before it sends SIGKILL.
SHUTDOWN_TIMEOUT_S = 5.0
# After the process exits, how long to wait for the FAILED message it may have sent.
LAST_WORDS_S = 0.5
# An engine that neither gets ready nor dies in this long is hung (vLLM's
# VLLM_ENGINE_READY_TIMEOUT_S).
ENGINE_READY_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class EngineReady:
    """What the engine reports in READY."""

    num_gpu_blocks: int
    max_model_len: int


class CoreEngineProcManager:
    """Owns the engine process: spawns it, and terminates and joins it on shutdown."""

    def __init__(self, vllm_config: VllmConfig, handshake_address: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.proc = context.Process(
            target=run_engine_core,
            name="EngineCore",
            kwargs=dict(
                vllm_config=vllm_config,
                handshake_address=handshake_address,
                parent_pid=os.getpid(),
            ),
        )
        self.proc.start()
        self._finalizer = weakref.finalize(self, _shutdown_process, self.proc)

    @property
    def sentinel(self) -> int:
        return self.proc.sentinel

    def is_alive(self) -> bool:
        return self.proc.is_alive()

    def shutdown(self) -> None:
        self._finalizer()


def _shutdown_process(proc: multiprocessing.process.BaseProcess) -> None:
    if proc.is_alive():
        proc.terminate()
        proc.join(SHUTDOWN_TIMEOUT_S)
    if proc.is_alive():
        logger.warning("EngineCore (pid %s) ignored SIGTERM; killing it.", proc.pid)
        proc.kill()
    proc.join()


@contextmanager
def launch_core_engines(
    vllm_config: VllmConfig, addresses: EngineZmqAddresses, handshake_address: str
) -> Iterator[tuple[CoreEngineProcManager, list[EngineReady]]]:
    """Spawn the engine; after the caller's block (which binds its data sockets), run the
    handshake and fill the list with the engine's READY. Stops the engine if anything fails."""
    ctx = zmq.Context()
    handshake = ctx.socket(zmq.ROUTER)
    handshake.bind(handshake_address)
    manager = None
    try:
        manager = CoreEngineProcManager(vllm_config, handshake_address)
        ready: list[EngineReady] = []
        yield manager, ready
        ready.append(wait_for_engine_startup(handshake, manager, addresses))
    except BaseException:
        if manager is not None:
            manager.shutdown()
        raise
    finally:
        handshake.close(linger=0)
        ctx.term()


def wait_for_engine_startup(
    handshake: zmq.Socket, manager: CoreEngineProcManager, addresses: EngineZmqAddresses
) -> EngineReady:
    """HELLO -> addresses -> READY; raise EngineStartupError as soon as the engine dies."""
    poller = zmq.Poller()
    poller.register(handshake, zmq.POLLIN)
    poller.register(manager.sentinel, zmq.POLLIN)
    state = "NEW"
    deadline = time.monotonic() + ENGINE_READY_TIMEOUT_S
    while True:
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        events = dict(poller.poll(max(remaining_ms, 0)))
        if not events:
            raise EngineStartupError(
                f"Engine core initialization failed: not ready after {ENGINE_READY_TIMEOUT_S} s."
            )
        if handshake in events:
            identity, payload = handshake.recv_multipart()
            message = msgspec.msgpack.decode(payload, type=EngineHandshake)
            state = _advance(state, message)
            if message.status == "HELLO":
                handshake.send_multipart([identity, msgspec.msgpack.encode(addresses)])
            elif message.status == "READY":
                return EngineReady(message.num_gpu_blocks, message.max_model_len)
        elif manager.sentinel in events:
            raise _startup_error(handshake, manager)


def _advance(state: str, message: EngineHandshake) -> str:
    """NEW -(HELLO)-> CONNECTED -(READY)-> READY; FAILED (or any other order) raises."""
    if message.status == "FAILED":
        raise EngineStartupError(f"Engine core initialization failed: {message.error}")
    expected = {"NEW": "HELLO", "CONNECTED": "READY"}[state]
    if message.status != expected:
        raise EngineStartupError(f"Engine handshake: got {message.status} in state {state}.")
    return "CONNECTED" if state == "NEW" else "READY"


def _startup_error(handshake: zmq.Socket, manager: CoreEngineProcManager) -> EngineStartupError:
    """The engine exited during start-up: its FAILED message if it sent one, else the exit code."""
    if handshake.poll(int(LAST_WORDS_S * 1000)):
        message = msgspec.msgpack.decode(handshake.recv_multipart()[-1], type=EngineHandshake)
        if message.status == "FAILED":
            return EngineStartupError(f"Engine core initialization failed: {message.error}")
    exitcode = manager.proc.exitcode
    return EngineStartupError(
        f"Engine core initialization failed: the engine process exited with code {exitcode} "
        "before it was ready. See its log above for the root cause."
    )
