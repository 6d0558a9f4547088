"""EngineCoreProc's output thread, without a model: outputs go out as msgpack in order, and the
dead frame is the last thing it sends."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import msgspec
import zmq

from vllm_hydra.engine.core import EngineCoreProc
from vllm_hydra.engine.messages import ENGINE_CORE_DEAD, EngineCoreOutput, EngineCoreOutputs


def test_output_thread_sends_outputs_then_the_dead_frame(tmp_path: Path) -> None:
    address = f"ipc://{tmp_path / 'outputs'}"
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(address)
    push = ctx.socket(zmq.PUSH)
    push.connect(address)
    engine = object.__new__(EngineCoreProc)  # only the output path: no model
    engine.output_queue = queue.Queue()
    outputs = EngineCoreOutputs(outputs=[EngineCoreOutput("r", [5, 6])], timestamp=1.0)
    engine.output_queue.put(outputs)
    engine.output_queue.put(ENGINE_CORE_DEAD)
    engine.output_queue.put(outputs)  # never sent: the engine is gone
    thread = threading.Thread(target=engine._process_output_socket, args=(push,))
    thread.start()
    thread.join(5)
    try:
        assert not thread.is_alive()
        first = msgspec.msgpack.decode(pull.recv(), type=EngineCoreOutputs)
        assert first == outputs
        assert pull.recv() == ENGINE_CORE_DEAD
        assert pull.poll(100) == 0
    finally:
        push.close(linger=0)
        pull.close(linger=0)
        ctx.term()
