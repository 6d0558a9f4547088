"""`DPCoordinator`: one process that tells the frontends how loaded each dp engine is (vLLM's
v1/engine/coordinator.py, internal load balancing; the MoE wave logic is not needed here since
the engines of a dense model are independent).

Each engine pushes its `EngineLoad` (waiting, running) when it changes; the coordinator keeps
the latest per engine and publishes `DPLoads` on an XPUB socket at most every
`PUBLISH_INTERVAL_S`, and at once to a frontend that subscribes, so a new subscriber never
waits for a change to learn the state.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
import weakref

import msgspec
import zmq

from vllm_hydra.engine.messages import DPLoads, EngineLoad
from vllm_hydra.engine.process_utils import exit_when_parent_dies, stop_process
from vllm_hydra.process_title import configure_process_logging

logger = logging.getLogger(__name__)

# vLLM publishes the counts to the frontends at most every 100 ms.
PUBLISH_INTERVAL_S = 0.1


class DPCoordinator:
    """Frontend side: spawns the coordinator process and stops it on shutdown."""

    def __init__(self, dp_size: int, input_address: str, output_address: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.proc = context.Process(
            target=run_dp_coordinator,
            name="DPCoordinator",
            kwargs=dict(
                dp_size=dp_size,
                input_address=input_address,
                output_address=output_address,
                parent_pid=os.getpid(),
            ),
        )
        self.proc.start()
        self._finalizer = weakref.finalize(self, stop_process, self.proc)

    @property
    def sentinel(self) -> int:
        return self.proc.sentinel

    def shutdown(self) -> None:
        self._finalizer()


class DPCoordinatorProc:
    """The coordinator's loop: engine loads in, throttled snapshots out."""

    def __init__(self, dp_size: int, input_address: str, output_address: str) -> None:
        self.ctx = zmq.Context()
        self.engine_loads = self.ctx.socket(zmq.PULL)
        self.engine_loads.bind(input_address)
        self.publisher = self.ctx.socket(zmq.XPUB)
        self.publisher.bind(output_address)
        self.counts: list[tuple[int, int]] = [(0, 0)] * dp_size
        self.decoder = msgspec.msgpack.Decoder(EngineLoad)
        self.encoder = msgspec.msgpack.Encoder()

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.engine_loads, zmq.POLLIN)
        poller.register(self.publisher, zmq.POLLIN)
        changed, last_publish = False, 0.0
        while True:
            wait_s = PUBLISH_INTERVAL_S - (time.monotonic() - last_publish) if changed else None
            events = dict(poller.poll(None if wait_s is None else max(wait_s, 0) * 1000))
            if self.publisher in events:
                self.publisher.recv()  # a frontend (un)subscribed: send it the state now
                changed = True
                last_publish = 0.0
            if self.engine_loads in events:
                changed |= self._receive_load()
            if changed and time.monotonic() - last_publish >= PUBLISH_INTERVAL_S:
                self._publish()
                changed, last_publish = False, time.monotonic()

    def _receive_load(self) -> bool:
        load = self.decoder.decode(self.engine_loads.recv())
        counts = (load.num_waiting, load.num_running)
        if self.counts[load.engine_index] == counts:
            return False
        self.counts[load.engine_index] = counts
        return True

    def _publish(self) -> None:
        message = DPLoads(counts=list(self.counts), timestamp=time.time())
        self.publisher.send(self.encoder.encode(message))


def run_dp_coordinator(
    dp_size: int, input_address: str, output_address: str, parent_pid: int
) -> None:
    """Entry point of the coordinator process; SIGTERM (from the frontend) ends it."""
    configure_process_logging("DPCoordinator")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the frontend handles Ctrl-C and stops us
    exit_when_parent_dies(parent_pid)
    DPCoordinatorProc(dp_size, input_address, output_address).run()
