"""`DPCoordinator`: a real process that collects engine loads and publishes them to a
subscriber, which gets the state as soon as it subscribes, then each change (throttled)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import zmq

from tests.engine.conftest import is_gone, wait_until
from vllm_hydra.engine.coordinator import DPCoordinator
from vllm_hydra.engine.messages import DPLoads, EngineLoad


@pytest.fixture()
def coordinator() -> Iterator[tuple[DPCoordinator, str, str]]:
    with tempfile.TemporaryDirectory(prefix="vllm_hydra_test_") as tmp:
        inputs, outputs = f"ipc://{Path(tmp) / 'in'}", f"ipc://{Path(tmp) / 'out'}"
        coordinator = DPCoordinator(2, inputs, outputs)
        try:
            yield coordinator, inputs, outputs
        finally:
            coordinator.shutdown()


def _receive(sub: zmq.Socket, timeout_s: float = 30.0) -> DPLoads:
    assert sub.poll(int(timeout_s * 1000)), "no DPLoads from the coordinator"
    return msgspec.msgpack.decode(sub.recv(), type=DPLoads)


def test_loads_reach_the_subscriber(coordinator: tuple[DPCoordinator, str, str]) -> None:
    proc, inputs, outputs = coordinator
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(outputs)
    push = ctx.socket(zmq.PUSH)
    push.connect(inputs)
    try:
        assert _receive(sub).counts == [(0, 0), (0, 0)]  # the state, on subscription
        push.send(msgspec.msgpack.encode(EngineLoad(1, 3, 2)))
        assert _receive(sub).counts == [(0, 0), (3, 2)]
        push.send(msgspec.msgpack.encode(EngineLoad(0, 1, 0)))
        push.send(msgspec.msgpack.encode(EngineLoad(0, 0, 1)))
        latest = _receive(sub)
        while latest.counts[0] != (0, 1):  # at most every 100 ms: maybe one snapshot between
            latest = _receive(sub)
        assert latest.counts == [(0, 1), (3, 2)]
    finally:
        sub.close(linger=0)
        push.close(linger=0)
        ctx.term()
    pid = proc.proc.pid
    proc.shutdown()
    assert wait_until(lambda: is_gone(pid), timeout_s=10)
