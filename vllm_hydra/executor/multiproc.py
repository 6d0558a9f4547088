"""`MultiprocExecutor`: tp x pp worker processes on this machine (vLLM's multiproc_executor).

Each rank is a spawned process running `WorkerProc`; they join one torch.distributed world
(gloo on CPU, nccl on CUDA) on a free port. The executor sends every rank the same control
message (a msgpack `SchedulerOutput` per step) and reads results from one socket: every rank
answers collective calls, only the driver rank answers `execute_model`.

A monitor thread waits on the workers' process sentinels: a worker that exits unasked marks the
executor failed, which fails the step in flight (or wakes the idle engine through the failure
callback), so the engine reports its death instead of hanging in a collective.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import msgspec
import zmq

from vllm_hydra.core.sched_output import SchedulerOutput
from vllm_hydra.distributed.utils import get_distributed_init_method, get_open_port
from vllm_hydra.executor.abstract import Executor
from vllm_hydra.outputs import ModelRunnerOutput
from vllm_hydra.serial_utils import MsgpackDecoder, MsgpackEncoder
from vllm_hydra.worker.worker_proc import (
    ERROR,
    EXECUTE_MODEL,
    OUTPUT,
    READY,
    RESULT,
    SHUTDOWN,
    run_worker_proc,
)

logger = logging.getLogger(__name__)

# How often a wait for results re-checks that every worker is alive.
POLL_MS = 100
SHUTDOWN_TIMEOUT_S = 5.0


class WorkerDiedError(RuntimeError):
    """A worker process exited or failed; the engine cannot continue."""


class MultiprocExecutor(Executor):
    def _init_executor(self) -> None:
        parallel = self.config.parallel
        self.world_size = parallel.world_size
        self.failure_reason: str | None = None
        self._failure_callback: Callable[[], None] | None = None
        self._shutting_down = False
        self._pending: list[Future] = []  # execute_model futures, oldest first
        self._lock = threading.Lock()
        self.procs: list[multiprocessing.process.BaseProcess] = []
        self.encoder = MsgpackEncoder()
        self.output_decoder = MsgpackDecoder(ModelRunnerOutput)
        self.ctx = zmq.Context()
        self._tmpdir = tempfile.mkdtemp(prefix="vllm_hydra_workers_")
        self.results = self.ctx.socket(zmq.PULL)
        result_address = self._bind(self.results, "results")
        self.controls = [self.ctx.socket(zmq.PUSH) for _ in range(self.world_size)]
        control_addresses = [self._bind(s, f"control{i}") for i, s in enumerate(self.controls)]
        host = parallel.master_addr
        init_method = get_distributed_init_method(host, parallel.master_port or get_open_port(host))
        self._finalizer = weakref.finalize(self, self._stop_workers)
        try:
            self._start_workers(init_method, control_addresses, result_address)
            self._wait_ready()
        except BaseException:
            self.shutdown()
            raise
        threading.Thread(target=self._monitor_workers, daemon=True, name="WorkerMonitor").start()

    # ---- workers: processes here, Ray actors in the subclass ----

    def _bind(self, sock: zmq.Socket, name: str) -> str:
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        address = f"ipc://{Path(self._tmpdir) / name}"
        sock.bind(address)
        return address

    def _start_workers(
        self, init_method: str, control_addresses: list[str], result_address: str
    ) -> None:
        context = multiprocessing.get_context("spawn")
        tp = self.config.parallel.tp
        for rank in range(self.world_size):
            proc = context.Process(
                target=run_worker_proc,
                name=f"Worker_TP{rank % tp}_PP{rank // tp}",
                kwargs=dict(
                    vllm_config=self.config,
                    rank=rank,
                    local_rank=rank,
                    distributed_init_method=init_method,
                    control_address=control_addresses[rank],
                    result_address=result_address,
                    parent_pid=os.getpid(),
                ),
            )
            proc.start()
            self.procs.append(proc)

    def _wait_for_worker_death(self) -> str:
        """Block until a worker exits; describe it."""
        sentinels = {p.sentinel: p for p in self.procs}
        ready = wait(list(sentinels))
        proc = sentinels[ready[0]]  # type: ignore[index]
        proc.join(1)
        return f"worker process {proc.name} (pid {proc.pid}) exited with code {proc.exitcode}"

    def _stop_workers(self) -> None:
        # Also reached from the finalizer at interpreter exit, without shutdown(): the monitor
        # must know these exits are asked for, or it reports a normal close as a failure.
        self._shutting_down = True
        for sock in self.controls:
            with contextlib.suppress(zmq.ZMQError):
                sock.send_multipart([SHUTDOWN, b""], flags=zmq.NOBLOCK)
        for proc in self.procs:
            proc.join(SHUTDOWN_TIMEOUT_S / self.world_size)
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(SHUTDOWN_TIMEOUT_S)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in [*self.controls, self.results]:
            sock.close(linger=0)
        self.ctx.term()
        shutil.rmtree(self._tmpdir, ignore_errors=True)

    # ---- liveness ----

    def _monitor_workers(self) -> None:
        reason = self._wait_for_worker_death()
        if self._shutting_down:
            return
        self._fail(reason)

    def _fail(self, reason: str) -> None:
        with self._lock:
            if self.failure_reason is not None:
                return
            self.failure_reason = reason
            callback = self._failure_callback
        logger.error("Executor failed: %s", reason)
        if callback is not None:
            callback()

    def register_failure_callback(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._failure_callback = callback
        if self.failure_reason is not None:
            callback()

    def _recv(self) -> tuple[bytes, int, memoryview]:
        """The next worker message; raises once a worker has died or reported an error."""
        while True:
            if self.failure_reason is not None:
                raise WorkerDiedError(self.failure_reason)
            if self.results.poll(POLL_MS):
                kind, rank, payload = self.results.recv_multipart(copy=False)
                if kind.bytes == ERROR:
                    self._fail(msgspec.msgpack.decode(payload.buffer))
                    continue
                return kind.bytes, int.from_bytes(rank.bytes, "little"), payload.buffer

    def _wait_ready(self) -> None:
        pending = set(range(self.world_size))
        while pending:
            kind, rank, _ = self._recv_during_startup()
            if kind == READY:
                pending.discard(rank)

    def _recv_during_startup(self) -> tuple[bytes, int, memoryview]:
        """Like _recv, but a worker that dies before READY fails the start-up at once."""
        while True:
            if self.failure_reason is not None:
                raise WorkerDiedError(f"a worker failed to start: {self.failure_reason}")
            if self.results.poll(POLL_MS):
                return self._recv()
            dead = self._dead_workers()
            if dead:
                self._fail(dead[0])

    def _dead_workers(self) -> list[str]:
        """Workers that have exited, described (checked without blocking)."""
        return [
            f"worker process {p.name} (pid {p.pid}) exited with code {p.exitcode}"
            for p in self.procs
            if p.exitcode is not None
        ]

    # ---- the Executor interface ----

    @property
    def max_concurrent_batches(self) -> int:
        """Pipeline stages work on different micro-batches at once."""
        return self.config.parallel.pp

    def collective_rpc(self, method: str, *args: Any) -> list[Any]:
        """Call `method` on every rank's Worker; one result per rank, in rank order."""
        self._broadcast(method.encode(), msgspec.msgpack.encode(args))
        results: list[Any] = [None] * self.world_size
        for _ in range(self.world_size):
            kind, rank, payload = self._recv()
            assert kind == RESULT, f"expected a {method} result, got {kind!r}"
            results[rank] = msgspec.msgpack.decode(payload)
        return results

    def determine_available_memory(self) -> int:
        return min(self.collective_rpc("determine_available_memory"))

    def get_kv_cache_bytes_per_block(self) -> int:
        # Uneven pipeline splits give stages different layer counts: size for the largest.
        return max(self.collective_rpc("get_kv_cache_bytes_per_block"))

    def initialize_from_config(self, num_blocks: int) -> None:
        self.collective_rpc("initialize_from_config", num_blocks)

    def execute_model(
        self, scheduler_output: SchedulerOutput, non_block: bool = False
    ) -> ModelRunnerOutput | Future[ModelRunnerOutput]:
        self._broadcast(EXECUTE_MODEL, self.encoder.encode(scheduler_output))
        future: Future[ModelRunnerOutput] = _OutputFuture(self)
        self._pending.append(future)
        return future if non_block else future.result()

    def _broadcast(self, method: bytes, payload: bytes) -> None:
        if self.failure_reason is not None:
            raise WorkerDiedError(self.failure_reason)
        for sock in self.controls:
            sock.send_multipart([method, payload], copy=False)

    def _drain_ready(self) -> None:
        """Resolve the futures whose outputs have arrived, without blocking."""
        while self._pending and self.failure_reason is None and self.results.poll(0):
            self._resolve_oldest()

    def _resolve_oldest(self) -> None:
        """Read the driver's next output into the oldest pending future (outputs are FIFO)."""
        future = self._pending.pop(0)
        try:
            kind, _, payload = self._recv()
            assert kind == OUTPUT, f"expected a model output, got {kind!r}"
            future.set_result(self.output_decoder.decode(payload))
        except BaseException as exc:
            future.set_exception(exc)
            for later in self._pending:
                later.set_exception(exc)
            self._pending.clear()

    def shutdown(self) -> None:
        self._shutting_down = True
        self._finalizer()


class _OutputFuture(Future):
    """A step's output; `result()` reads outputs off the socket up to this one."""

    def __init__(self, executor: MultiprocExecutor) -> None:
        super().__init__()
        self._executor = executor

    def done(self) -> bool:
        if not super().done():
            self._executor._drain_ready()
        return super().done()

    def result(self, timeout: float | None = None) -> ModelRunnerOutput:
        while not super().done():
            self._executor._resolve_oldest()
        return super().result(timeout)
