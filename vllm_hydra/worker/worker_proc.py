"""`WorkerProc`: the loop a tensor/pipeline-parallel worker runs in its own process (or Ray actor).

It builds its `Worker` (device, torch.distributed groups, model shard), tells the executor it is
READY, then serves the executor's control channel until told to stop:

    executor --PUSH--> [method, payload]            one socket per rank, same bytes to all
    worker   --PUSH--> [kind, rank, payload]        one socket shared by all ranks

`execute_model` carries a msgpack-encoded `SchedulerOutput` (no pickle); only the driver rank
(the last pipeline stage's tensor-parallel rank 0) answers it with its `ModelRunnerOutput`.
Other methods are collective calls every rank answers. A worker that fails reports ERROR with
the traceback and exits, which its executor turns into engine death.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import traceback
from typing import Any

import msgspec
import torch
import zmq

from vllm_hydra.config.device import DeviceType
from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.core.sched_output import SchedulerOutput
from vllm_hydra.process_title import configure_process_logging
from vllm_hydra.serial_utils import MsgpackDecoder, MsgpackEncoder
from vllm_hydra.worker.worker import Worker

logger = logging.getLogger(__name__)

EXECUTE_MODEL = b"execute_model"
SHUTDOWN = b"shutdown"
# Worker -> executor message kinds.
READY, RESULT, OUTPUT, ERROR = b"READY", b"RESULT", b"OUTPUT", b"ERROR"
PARENT_POLL_S = 0.5


def driver_rank(tp: int, pp: int) -> int:
    """The rank whose ModelRunnerOutput the engine gets: tp rank 0 of the last stage."""
    return (pp - 1) * tp


class WorkerProc:
    def __init__(
        self,
        vllm_config: VllmConfig,
        rank: int,
        local_rank: int,
        distributed_init_method: str,
        control_address: str,
        result_address: str,
    ) -> None:
        self.rank = rank
        self.is_driver = rank == driver_rank(vllm_config.parallel.tp, vllm_config.parallel.pp)
        self.ctx = zmq.Context()
        self.control = self.ctx.socket(zmq.PULL)
        self.control.connect(control_address)
        self.results = self.ctx.socket(zmq.PUSH)
        self.results.setsockopt(zmq.LINGER, 2000)
        self.results.connect(result_address)
        self.encoder = MsgpackEncoder()
        self.sched_decoder = MsgpackDecoder(SchedulerOutput)
        self.worker = Worker(vllm_config, rank, local_rank, distributed_init_method)

    def start(self) -> None:
        self.worker.init_device()
        self.worker.load_model()
        self._send(READY, None)

    def run_busy_loop(self) -> None:
        while True:
            method, payload = self.control.recv_multipart(copy=False)
            name = method.bytes
            if name == SHUTDOWN:
                return
            if name == EXECUTE_MODEL:
                output = self.worker.execute_model(self.sched_decoder.decode(payload.buffer))
                if self.is_driver:
                    self._send(OUTPUT, output)
            else:
                args = msgspec.msgpack.decode(payload.buffer)
                self._send(RESULT, getattr(self.worker, name.decode())(*args))

    def report_error(self, exc: BaseException) -> None:
        text = f"worker rank {self.rank}: {type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        self._send(ERROR, text)

    def close(self) -> None:
        self.control.close(linger=0)
        self.results.close()
        self.ctx.term()

    def _send(self, kind: bytes, payload: Any) -> None:
        self.results.send_multipart(
            [kind, self.rank.to_bytes(2, "little"), self.encoder.encode(payload)]
        )


def run_worker_proc(
    vllm_config: VllmConfig,
    rank: int,
    local_rank: int,
    distributed_init_method: str,
    control_address: str,
    result_address: str,
    parent_pid: int | None,
) -> None:
    """Entry point of a worker process (spawn target; a Ray actor calls it too)."""
    _configure_worker(vllm_config, rank, parent_pid)
    proc: WorkerProc | None = None
    try:
        proc = WorkerProc(
            vllm_config, rank, local_rank, distributed_init_method, control_address, result_address
        )
        proc.start()
        proc.run_busy_loop()
    except BaseException as exc:
        logger.exception("Worker rank %d failed.", rank)
        if proc is not None:
            proc.report_error(exc)
            proc.close()
        os._exit(1)  # skip torch.distributed's atexit handlers: the peers may be gone
    proc.close()


def _configure_worker(vllm_config: VllmConfig, rank: int, parent_pid: int | None) -> None:
    tp = vllm_config.parallel.tp
    configure_process_logging("Worker", f"TP{rank % tp}_PP{rank // tp}")
    if threading.current_thread() is threading.main_thread():  # not so in every Ray actor
        # Ctrl-C reaches the whole process group; the engine decides when workers stop.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent_pid is not None:
        _exit_when_parent_dies(parent_pid)
    if vllm_config.device.type is DeviceType.cpu:
        # The ranks of all engines share the cores; oversubscribing them only adds contention.
        ranks = vllm_config.parallel.world_size * vllm_config.parallel.dp
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // ranks))


def _exit_when_parent_dies(parent_pid: int) -> None:
    """No orphans: the worker ends once the engine process is gone (even SIGKILLed)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()
