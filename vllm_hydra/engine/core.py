"""`EngineCore`: the scheduler and the executor in one loop (vLLM's v1/engine/core.py).

`step()` schedules, executes and updates once. The KV cache is sized before the scheduler is
built: the executor reports the bytes it can spare per rank, and that many blocks are allocated.
With pipeline parallelism the executor runs `pp` steps at once, and `step_with_batch_queue`
keeps that many batches in flight so every stage has work (`step_fn` picks one of the two).

`EngineCoreProc` runs an EngineCore in its own process (`run_engine_core` is the spawn target):
an input thread reads ZMQ frames into a queue, the main thread steps while there is work and
blocks on the queue when idle, and an output thread writes `EngineCoreOutputs` back. With data
parallelism there is one such process per dp rank, each with its own executor; its engine index
(the dp rank) is its ZMQ identity, labels its outputs and stats, and it tells the
`DPCoordinator` its (waiting, running) counts whenever they change.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections import deque
from concurrent.futures import Future
from typing import Any

import msgspec
import torch
import zmq

from vllm_hydra.config.checks import check_kv_cache_fits
from vllm_hydra.config.device import DeviceType
from vllm_hydra.config.errors import ConfigError
from vllm_hydra.config.memory_plan import plan_memory
from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.core.request import Request, RequestStatus
from vllm_hydra.core.sched_output import SchedulerOutput
from vllm_hydra.core.scheduler import Scheduler
from vllm_hydra.engine.messages import (
    ENGINE_CORE_DEAD,
    EngineCoreOutput,
    EngineCoreOutputs,
    EngineCoreRequest,
    EngineCoreRequestType,
    EngineHandshake,
    EngineLoad,
    EngineZmqAddresses,
    FinishReason,
    UtilityOutput,
    UtilityRequest,
)
from vllm_hydra.engine.process_utils import exit_when_parent_dies
from vllm_hydra.executor.abstract import Executor
from vllm_hydra.metrics.stats import SchedulerStats
from vllm_hydra.outputs import ModelRunnerOutput
from vllm_hydra.process_title import configure_process_logging
from vllm_hydra.structured_output import StructuredOutputManager

logger = logging.getLogger(__name__)


class EngineCore:
    def __init__(
        self,
        vllm_config: VllmConfig,
        executor_class: type[Executor] | None = None,
        engine_index: int = 0,
    ):
        from vllm_hydra.plugins import load_general_plugins

        load_general_plugins()  # first, as in vLLM: a plugin may register the model class
        self.config = vllm_config
        self.engine_index = engine_index  # the data-parallel rank (metrics label `engine`)
        self.log_stats = vllm_config.observability.collect_stats
        executor_class = executor_class or Executor.get_class(vllm_config)
        self.model_executor = executor_class(vllm_config)
        self.num_gpu_blocks = self._initialize_kv_caches()
        self.structured_output_manager = StructuredOutputManager(vllm_config)
        self.scheduler = Scheduler(vllm_config, self.num_gpu_blocks, self.structured_output_manager)
        self.batch_queue_size = self.model_executor.max_concurrent_batches
        # Batches in flight, newest first: (output future, what was scheduled).
        self.batch_queue: deque[tuple[Future[ModelRunnerOutput], SchedulerOutput]] = deque()
        self.step_fn = self.step if self.batch_queue_size == 1 else self.step_with_batch_queue

    def _initialize_kv_caches(self) -> int:
        start = time.perf_counter()
        per_block = self.model_executor.get_kv_cache_bytes_per_block()
        override = self.config.cache.num_blocks_override
        available = (
            override * per_block if override else self.model_executor.determine_available_memory()
        )
        num_blocks = override or max(available, 0) // per_block
        plan = dataclasses.replace(
            plan_memory(self.config), kv_budget_bytes=available, num_blocks=num_blocks
        )
        problems = check_kv_cache_fits(self.config, plan)
        if problems:
            raise ConfigError(problems)
        self.model_executor.initialize_from_config(num_blocks)
        logger.info(
            "KV cache: %d blocks, %d tokens; maximum concurrency for %d tokens per request: "
            "%.2fx (%.1f s)",
            num_blocks,
            plan.kv_cache_tokens,
            plan.max_model_len,
            plan.max_concurrency,
            time.perf_counter() - start,
        )
        return num_blocks

    def add_request(self, request: EngineCoreRequest) -> None:
        self.scheduler.add_request(Request.from_engine_core_request(request))

    def abort_requests(self, request_ids: list[str]) -> None:
        self.scheduler.finish_requests(request_ids, RequestStatus.FINISHED_ABORTED)

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished_requests() or bool(self.batch_queue)

    def step(self) -> EngineCoreOutputs:
        """Schedule, run and update once; the outputs of every request that moved."""
        if not self.scheduler.has_unfinished_requests():
            return self._make_outputs([])
        scheduler_output = self.scheduler.schedule()
        model_output = self.model_executor.execute_model(scheduler_output)
        outputs = self.scheduler.update_from_output(scheduler_output, model_output)
        return self._make_outputs(outputs)

    def _make_outputs(self, outputs: list[EngineCoreOutput]) -> EngineCoreOutputs:
        """This step's outputs, with the scheduler's stats when stats are on."""
        return EngineCoreOutputs(
            engine_index=self.engine_index,
            outputs=outputs,
            timestamp=time.monotonic(),
            scheduler_stats=self.make_scheduler_stats() if self.log_stats else None,
        )

    def make_scheduler_stats(self) -> SchedulerStats:
        stats = self.scheduler.make_stats()
        stats.engine_index = self.engine_index
        return stats

    def step_with_batch_queue(self) -> EngineCoreOutputs:
        """Launch a new batch if the queue has room; collect the oldest when it is full, when
        nothing new can be scheduled, or when it has finished (vLLM's step_with_batch_queue).

        The scheduler advances num_computed_tokens when it schedules, so a request whose step
        is in flight gets no tokens in the next batch until its output is in."""
        if len(self.batch_queue) < self.batch_queue_size and self._schedule_batch():
            oldest = self.batch_queue[-1][0]
            if len(self.batch_queue) < self.batch_queue_size and not oldest.done():
                return EngineCoreOutputs(engine_index=self.engine_index, timestamp=time.monotonic())
        if not self.batch_queue:
            return EngineCoreOutputs(engine_index=self.engine_index, timestamp=time.monotonic())
        future, scheduler_output = self.batch_queue.pop()
        outputs = self.scheduler.update_from_output(scheduler_output, future.result())
        return self._make_outputs(outputs)

    def _schedule_batch(self) -> bool:
        """Schedule and launch one batch without waiting for it; False if nothing ran."""
        if not self.scheduler.has_unfinished_requests():
            return False
        scheduler_output = self.scheduler.schedule()
        # A batch with no tokens still tells the runners which requests finished.
        if not (scheduler_output.total_num_scheduled_tokens or scheduler_output.finished_req_ids):
            return False
        future = self.model_executor.execute_model(scheduler_output, non_block=True)
        self.batch_queue.appendleft((future, scheduler_output))  # type: ignore[arg-type]
        return scheduler_output.total_num_scheduled_tokens > 0

    def shutdown(self) -> None:
        self.structured_output_manager.shutdown()
        self.model_executor.shutdown()

    def get_stats(self) -> dict[str, Any]:
        """The scheduler's and KV cache's state as a dict (a UTILITY call, for tests and
        tools): running and waiting requests, KV cache usage and free/total blocks, prefix
        cache queries and hits, preemptions and finished requests since start."""
        return dataclasses.asdict(self.make_scheduler_stats())

    def reset_prefix_cache(self) -> bool:
        return self.scheduler.reset_prefix_cache()

    def add_lora(self, lora_name: str, lora_int_id: int, lora_path: str) -> bool:
        """Preload an adapter into the workers (a runtime load; a UTILITY call)."""
        return self.model_executor.add_lora(lora_name, lora_int_id, lora_path)

    def remove_lora(self, lora_int_id: int) -> bool:
        """Free an adapter's slot and host copy in the workers (a runtime unload)."""
        return self.model_executor.remove_lora(lora_int_id)


# How long the output thread may take to deliver the last frames before the process exits.
SEND_LINGER_MS = 4000

_WAKEUP = (None, None)  # an input-queue item that only wakes the busy loop
_IO_FAILED = "IO_FAILED"  # an input-queue item: an IO thread died of this exception
_STOP_OUTPUT = b"STOP"  # an output-queue item: end the output thread (a clean shutdown)
_EXECUTOR_FAILED = "EXECUTOR_FAILED"  # an input-queue item: a worker died
_DECODERS = {
    EngineCoreRequestType.ADD: msgspec.msgpack.Decoder(EngineCoreRequest),
    EngineCoreRequestType.ABORT: msgspec.msgpack.Decoder(list[str]),
    EngineCoreRequestType.UTILITY: msgspec.msgpack.Decoder(UtilityRequest),
}


class EngineCoreProc(EngineCore):
    """An EngineCore behind ZMQ sockets, in the process `run_engine_core` starts."""

    def __init__(
        self, vllm_config: VllmConfig, handshake_address: str, engine_index: int = 0
    ) -> None:
        self.input_queue: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self.output_queue: queue.Queue[EngineCoreOutputs | bytes] = queue.Queue()
        self.shutdown_requested = False
        # The frontend's gauges have not seen the scheduler's latest state (e.g. after aborts).
        self.stats_stale = False
        # get_stats calls that came with new requests: answered after the next step (below).
        self.deferred_stats_calls: list[UtilityRequest] = []
        self.ctx = zmq.Context()
        self.identity = engine_identity(engine_index)
        handshake = _connect(self.ctx, zmq.DEALER, handshake_address, self.identity)
        try:
            addresses = self._say_hello(handshake)
            self._build_engine(vllm_config, handshake, engine_index)
            self._connect_coordinator(addresses.coordinator_input)
            self._start_io_threads(addresses)
            self.model_executor.register_failure_callback(self._on_executor_failed)
            handshake.send(_encode_handshake("READY", self))
        finally:
            handshake.close(linger=SEND_LINGER_MS)

    @staticmethod
    def _say_hello(handshake: zmq.Socket) -> EngineZmqAddresses:
        handshake.send(msgspec.msgpack.encode(EngineHandshake(status="HELLO")))
        return msgspec.msgpack.decode(handshake.recv(), type=EngineZmqAddresses)

    def _build_engine(
        self, vllm_config: VllmConfig, handshake: zmq.Socket, engine_index: int
    ) -> None:
        """Load the model and size the KV cache; on failure tell the frontend why, then raise."""
        try:
            super().__init__(vllm_config, engine_index=engine_index)
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}"
            handshake.send(msgspec.msgpack.encode(EngineHandshake(status="FAILED", error=error)))
            raise

    def _connect_coordinator(self, address: str | None) -> None:
        """dp > 1: a socket for this engine's load, which the busy loop (only) writes."""
        self.coordinator = None if address is None else _connect(self.ctx, zmq.PUSH, address)
        if self.coordinator is not None:
            self.coordinator.setsockopt(zmq.LINGER, 0)  # a stale load is not worth a wait
        self.load_encoder = msgspec.msgpack.Encoder()
        self.last_load: tuple[int, int] | None = None

    def _start_io_threads(self, addresses: EngineZmqAddresses) -> None:
        inputs = _connect(self.ctx, zmq.DEALER, addresses.inputs, self.identity)
        outputs = _connect(self.ctx, zmq.PUSH, addresses.outputs)
        threads = [
            threading.Thread(target=self._run_io, args=(target, sock), daemon=True)
            for target, sock in (
                (self._process_input_socket, inputs),
                (self._process_output_socket, outputs),
            )
        ]
        for thread in threads:
            thread.start()
        self.output_thread = threads[1]

    def _run_io(self, target: Any, sock: zmq.Socket) -> None:
        """An IO thread that fails takes the engine down (rather than leave clients waiting)."""
        try:
            target(sock)
        except Exception as exc:
            self.input_queue.put((_IO_FAILED, exc))
        finally:
            sock.close(linger=SEND_LINGER_MS)

    def _process_input_socket(self, sock: zmq.Socket) -> None:
        """Input thread: decode each request and queue it for the busy loop."""
        while True:
            type_frame, payload = sock.recv_multipart(copy=False)
            request_type = EngineCoreRequestType(type_frame.bytes)
            self.input_queue.put((request_type, _DECODERS[request_type].decode(payload.buffer)))

    def _process_output_socket(self, sock: zmq.Socket) -> None:
        """Output thread: encode and send; the dead frame is the last thing sent."""
        encoder = msgspec.msgpack.Encoder()
        while True:
            item = self.output_queue.get()
            if isinstance(item, bytes):  # ENGINE_CORE_DEAD, or _STOP_OUTPUT on a clean exit
                if item == ENGINE_CORE_DEAD:
                    sock.send(ENGINE_CORE_DEAD)
                return
            sock.send(encoder.encode(item))

    def run_busy_loop(self) -> None:
        """Step while there is work; block on the input queue when idle."""
        while not self.shutdown_requested:
            self._process_input_queue()
            self._process_engine_step()
            self._answer_deferred_stats_calls()
            self._publish_load()

    def _process_input_queue(self) -> None:
        if not self.has_unfinished_requests():
            self._handle_client_request(*self.input_queue.get())
        while not self.input_queue.empty():
            self._handle_client_request(*self.input_queue.get_nowait())

    def _process_engine_step(self) -> None:
        if self.has_unfinished_requests():
            outputs = self.step_fn()
            if outputs.outputs or outputs.finished_requests or outputs.scheduler_stats:
                self.output_queue.put(outputs)
            self.stats_stale = False
        elif self.log_stats and self.stats_stale:
            # Idle after aborts: no step will run, so send the gauges their zeros now.
            self.output_queue.put(self._make_outputs([]))
            self.stats_stale = False

    def _publish_load(self) -> None:
        """Tell the DPCoordinator this engine's (waiting, running) counts if they changed."""
        if self.coordinator is None:
            return
        load = (len(self.scheduler.waiting), len(self.scheduler.running))
        if load != self.last_load:
            message = EngineLoad(self.engine_index, *load)
            self.coordinator.send(self.load_encoder.encode(message))
            self.last_load = load

    def _handle_client_request(self, request_type: Any, body: Any) -> None:
        if request_type == _IO_FAILED:
            raise RuntimeError("An engine IO thread failed.") from body
        if request_type == _EXECUTOR_FAILED:
            raise RuntimeError("Executor failed: a worker died (see above).")
        if request_type == EngineCoreRequestType.ADD:
            self._add_or_refuse(body)
        elif request_type == EngineCoreRequestType.ABORT:
            self.abort_requests(body)
            self.stats_stale = True
        elif request_type == EngineCoreRequestType.UTILITY:
            if body.method_name == "get_stats" and self.has_unfinished_requests():
                self.deferred_stats_calls.append(body)
            else:
                self._answer_utility(body)

    def _answer_deferred_stats_calls(self) -> None:
        """Stats are read after the step that follows their call, so they show the
        scheduler's decision on requests that arrived with it, never the moment between a
        request's arrival and its first scheduling (get_stats is read-only: no order changes)."""
        for call in self.deferred_stats_calls:
            self._answer_utility(call)
        self.deferred_stats_calls.clear()

    def _answer_utility(self, call: UtilityRequest) -> None:
        utility_output = self._call_utility(call)
        self.output_queue.put(
            EngineCoreOutputs(engine_index=self.engine_index, utility_output=utility_output)
        )

    def _add_or_refuse(self, request: EngineCoreRequest) -> None:
        """A request the scheduler refuses (its checks raise ValueError before any state
        changes) fails alone, with an error output; the engine goes on, as vLLM's does."""
        try:
            self.add_request(request)
        except ValueError as exc:
            logger.warning("Refused request %s: %s", request.request_id, exc)
            refused = EngineCoreOutput(
                request.request_id, [], finish_reason=FinishReason.ERROR, error=str(exc)
            )
            self.output_queue.put(
                EngineCoreOutputs(engine_index=self.engine_index, outputs=[refused])
            )

    def _call_utility(self, call: UtilityRequest) -> UtilityOutput:
        try:
            method = getattr(self, call.method_name)
            return UtilityOutput(call.call_id, result=method(*call.args))
        except Exception as exc:  # a bad call fails the caller, not the engine
            return UtilityOutput(call.call_id, failure_message=f"{type(exc).__name__}: {exc}")

    def _on_executor_failed(self) -> None:
        """A worker died (monitor thread): wake the busy loop so the engine dies now."""
        self.input_queue.put((_EXECUTOR_FAILED, None))

    def request_shutdown(self) -> None:
        self.shutdown_requested = True
        self.input_queue.put(_WAKEUP)

    def send_engine_dead(self) -> None:
        """Tell the frontend this engine is gone. Terminating the context flushes the frame
        (within the sockets' linger), which a plain process exit could drop."""
        self.close_sockets(ENGINE_CORE_DEAD)

    def close_sockets(self, last_frame: bytes = b"") -> None:
        """Stop the output thread (after `last_frame`, if any) and terminate the context, so
        the process exits at once instead of in a garbage-collected context's linger."""
        self.output_queue.put(last_frame or _STOP_OUTPUT)
        self.output_thread.join(SEND_LINGER_MS / 1000)
        if self.coordinator is not None:
            self.coordinator.close(linger=0)
        flush = threading.Thread(target=self.ctx.term, daemon=True)  # the input thread sees ETERM
        flush.start()
        flush.join(SEND_LINGER_MS / 1000 + 1)


def engine_identity(engine_index: int) -> bytes:
    """An engine's ZMQ identity on the handshake and input sockets: its index (vLLM's)."""
    return engine_index.to_bytes(2, "little")


def run_engine_core(
    vllm_config: VllmConfig, handshake_address: str, parent_pid: int, engine_index: int = 0
) -> None:
    """Entry point of an engine process: handshake, build, serve until told to stop."""
    _configure_logging(engine_index)
    # Ctrl-C reaches the whole process group; the frontend decides (it may drain requests
    # first) and then stops this process with SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_when_parent_dies(parent_pid)
    _select_dp_devices(vllm_config, engine_index)
    _share_cpu_cores(vllm_config)
    engine: EngineCoreProc | None = None
    try:
        engine = EngineCoreProc(vllm_config, handshake_address, engine_index)
        _install_signal_handlers(engine)
        engine.run_busy_loop()
        engine.close_sockets()
    except Exception:
        if engine is None:
            logger.exception("EngineCore failed to start.")
        else:
            logger.exception("EngineCore encountered a fatal error.")
            engine.send_engine_dead()
        sys.exit(1)
    finally:
        if engine is not None:
            engine.shutdown()
    _exit_now()


def _exit_now() -> None:
    """After a clean shutdown everything is released already; skip the interpreter's teardown
    (seconds of garbage collection and module finalization with torch loaded), which would
    make the frontend wait, or SIGKILL engines that seem to ignore SIGTERM."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _select_dp_devices(vllm_config: VllmConfig, engine_index: int) -> None:
    """On CUDA, dp rank i owns the i-th group of tp x pp visible devices (before CUDA starts,
    as vLLM does), so every engine's workers count their devices from 0."""
    if vllm_config.device.type is not DeviceType.cuda or vllm_config.parallel.dp == 1:
        return
    world = vllm_config.parallel.world_size
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = (
        visible.split(",") if visible else [str(i) for i in range(world * vllm_config.parallel.dp)]
    )
    mine = devices[engine_index * world : (engine_index + 1) * world]
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(mine)


def _share_cpu_cores(vllm_config: VllmConfig) -> None:
    """On CPU the dp engines share the cores: each takes its share of torch threads, since
    oversubscribing them only adds contention (tp/pp worker processes split theirs too)."""
    if vllm_config.device.type is not DeviceType.cpu or vllm_config.parallel.dp == 1:
        return
    ranks = vllm_config.parallel.world_size * vllm_config.parallel.dp
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // ranks))


def _connect(
    ctx: zmq.Context, socket_type: int, address: str, identity: bytes | None = None
) -> zmq.Socket:
    sock = ctx.socket(socket_type)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(address)
    return sock


def _encode_handshake(status: str, engine: EngineCore) -> bytes:
    max_model_len = engine.config.model.max_model_len or 0
    message = EngineHandshake(status, engine.num_gpu_blocks, max_model_len)  # type: ignore[arg-type]
    return msgspec.msgpack.encode(message)


def _install_signal_handlers(engine: EngineCoreProc) -> None:
    def handler(signum: int, frame: Any) -> None:
        engine.request_shutdown()

    signal.signal(signal.SIGTERM, handler)


def _configure_logging(engine_index: int) -> None:
    configure_process_logging("EngineCore", f"DP{engine_index}")
