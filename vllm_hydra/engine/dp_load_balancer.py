"""Internal data-parallel load balancing on the frontend (vLLM's DPLBAsyncMPClient logic).

`DPLoadBalancer` sends each new request to the engine with the lowest `4 x waiting + running`,
from the DPCoordinator's latest counts plus a local bump for every request sent since, and
remembers which engine holds each request so its abort goes there. `DPLoadSubscriber` is the
thread that receives the coordinator's `DPLoads`.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterable

import msgspec
import zmq

from vllm_hydra.engine.messages import DPLoads, EngineCoreOutputs

logger = logging.getLogger(__name__)

# A waiting request weighs this many running ones: it still needs its prefill (vLLM's).
WAITING_WEIGHT = 4
# How often the subscriber thread looks up from its socket to see if it should stop.
POLL_MS = 100


class DPLoadBalancer:
    """Chooses an engine per request and remembers the choice until the request ends."""

    def __init__(self, dp_size: int) -> None:
        self.counts: list[list[int]] = [[0, 0] for _ in range(dp_size)]  # [waiting, running]
        self.reqs_in_flight: dict[str, int] = {}
        self._lock = threading.Lock()  # the subscriber and output threads share this state

    def update(self, loads: DPLoads) -> None:
        """The coordinator's snapshot replaces the local estimate."""
        with self._lock:
            self.counts = [[waiting, running] for waiting, running in loads.counts]

    def assign(self, request_id: str) -> int:
        """The least-loaded engine for a new request; counted as waiting there from now."""
        with self._lock:
            scores = [WAITING_WEIGHT * waiting + running for waiting, running in self.counts]
            engine_index = scores.index(min(scores))
            self.counts[engine_index][0] += 1
            self.reqs_in_flight[request_id] = engine_index
            return engine_index

    def engines_holding(self, request_ids: Iterable[str]) -> dict[int, list[str]]:
        """Request ids grouped by the engine that holds them; ids that already ended (or were
        never sent) are left out, since no engine holds them."""
        by_engine: dict[int, list[str]] = defaultdict(list)
        with self._lock:
            for request_id in request_ids:
                engine_index = self.reqs_in_flight.pop(request_id, None)
                if engine_index is not None:
                    by_engine[engine_index].append(request_id)
        return dict(by_engine)

    def track(self, outputs: EngineCoreOutputs) -> None:
        """Forget requests that finished in these outputs."""
        with self._lock:
            for output in outputs.outputs:
                if output.finished:
                    self.reqs_in_flight.pop(output.request_id, None)
            for request_id in outputs.finished_requests or ():
                self.reqs_in_flight.pop(request_id, None)


class DPLoadSubscriber:
    """A daemon thread on its own ZMQ context: coordinator SUB -> `balancer.update`."""

    def __init__(self, address: str, balancer: DPLoadBalancer) -> None:
        self.address = address
        self.balancer = balancer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="DPLoadSubscriber")
        self._thread.start()

    def _run(self) -> None:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(self.address)
        decoder = msgspec.msgpack.Decoder(DPLoads)
        try:
            while not self._stop.is_set():
                if sock.poll(POLL_MS):
                    self.balancer.update(decoder.decode(sock.recv()))
        except Exception:  # a lost subscriber only makes balancing local; requests still run
            logger.exception("DP load subscriber failed; routing on local counts only.")
        finally:
            sock.close(linger=0)
            ctx.term()

    def shutdown(self) -> None:
        self._stop.set()
        self._thread.join()
