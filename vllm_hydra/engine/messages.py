"""Every message between the frontend and the engine core, as msgspec structs (one file).

`array_like=True` encodes structs as msgpack arrays: no field names on the wire.
"""

from __future__ import annotations

import enum
import time
from typing import Any, Literal

import msgspec

from vllm_hydra.lora.request import LoRARequest
from vllm_hydra.metrics.stats import SchedulerStats
from vllm_hydra.sampling_params import SamplingParams


class FinishReason(enum.IntEnum):
    """Why a request ended; `str()` gives the OpenAI API's finish_reason."""

    STOP = 0  # EOS, a stop token or a stop string
    LENGTH = 1  # max_tokens or max_model_len
    ABORT = 2  # aborted by the client or the engine
    ERROR = 3  # the engine refused the request (EngineCoreOutput.error says why)

    def __str__(self) -> str:
        return ("stop", "length", "abort", "error")[self.value]


class EngineCoreEventType(enum.IntEnum):
    """A step in a request's life inside the engine, for the frontend's latency metrics."""

    QUEUED = 1
    SCHEDULED = 2
    PREEMPTED = 3


class EngineCoreEvent(msgspec.Struct, array_like=True, frozen=True):
    """An engine-side event with its `time.monotonic()` timestamp (the engine's clock)."""

    type: EngineCoreEventType
    timestamp: float

    @classmethod
    def new_event(cls, event_type: EngineCoreEventType) -> EngineCoreEvent:
        return cls(event_type, time.monotonic())


class EngineCoreRequestType(enum.Enum):
    ADD = b"\x00"
    ABORT = b"\x01"
    UTILITY = b"\x02"


class EngineCoreRequest(msgspec.Struct, array_like=True, omit_defaults=True):
    request_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    eos_token_id: int | None
    arrival_time: float
    priority: int = 0
    lora_request: LoRARequest | None = None


class EngineCoreOutput(msgspec.Struct, array_like=True, omit_defaults=True):
    """What one request produced in one step."""

    request_id: str
    new_token_ids: list[int]
    # Per new token: (top token ids, their logprobs, rank of the sampled token).
    new_logprobs: tuple[list[list[int]], list[list[float]], list[int]] | None = None
    # Prompt logprobs for the prompt tokens computed this step (same layout).
    new_prompt_logprobs: tuple[list[list[int]], list[list[float]], list[int]] | None = None
    finish_reason: FinishReason | None = None
    stop_reason: int | str | None = None  # the stop token id or stop string
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache
    # QUEUED / SCHEDULED / PREEMPTED since the request's last output (only when stats are on).
    events: list[EngineCoreEvent] | None = None
    error: str | None = None  # with FinishReason.ERROR: why the engine refused the request

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


class UtilityRequest(msgspec.Struct, array_like=True):
    """A UTILITY call: the engine runs `getattr(engine, method_name)(*args)`."""

    call_id: int
    method_name: str
    args: list[Any] = msgspec.field(default_factory=list)


class UtilityOutput(msgspec.Struct, array_like=True, omit_defaults=True):
    call_id: int
    result: Any = None
    failure_message: str | None = None


class EngineCoreOutputs(msgspec.Struct, array_like=True, omit_defaults=True):
    # The dp rank of the engine that sent these (0 without data parallelism): the frontend
    # merges the outputs of every engine, and metrics label each engine by it (`engine`).
    engine_index: int = 0
    outputs: list[EngineCoreOutput] = msgspec.field(default_factory=list)
    timestamp: float = 0.0  # the engine's time.monotonic() when the step ended
    # Requests the engine finished on its own (e.g. aborted on a fault) without an output.
    finished_requests: set[str] | None = None
    utility_output: UtilityOutput | None = None
    # The scheduler's state after this step (only when stats are on).
    scheduler_stats: SchedulerStats | None = None


# The single frame an engine sends on its output socket when it dies of a fatal error.
ENGINE_CORE_DEAD = b"ENGINE_CORE_DEAD"


class EngineZmqAddresses(msgspec.Struct, array_like=True, omit_defaults=True):
    """The data sockets the frontend bound (and the coordinator's): the engines connect."""

    inputs: str  # frontend ROUTER -> engine DEALER (identity: engine index): request frames
    outputs: str  # engine PUSH -> frontend PULL: EngineCoreOutputs, from every engine
    # dp > 1: engine PUSH -> DPCoordinator PULL: each engine's EngineLoad.
    coordinator_input: str | None = None
    # dp > 1: DPCoordinator XPUB -> frontend SUB: DPLoads.
    coordinator_output: str | None = None


class EngineLoad(msgspec.Struct, array_like=True):
    """Engine -> DPCoordinator: this engine's queue lengths, sent when they change."""

    engine_index: int
    num_waiting: int
    num_running: int


class DPLoads(msgspec.Struct, array_like=True):
    """DPCoordinator -> frontends: (num_waiting, num_running) of every engine, by index."""

    counts: list[tuple[int, int]]
    timestamp: float = 0.0


class EngineHandshake(msgspec.Struct, array_like=True, omit_defaults=True):
    """Engine -> frontend on the handshake socket: HELLO, then READY or FAILED.

    The frontend answers HELLO with `EngineZmqAddresses`. READY comes once the model is loaded
    and the KV cache sized; FAILED carries the traceback of a start-up error.
    """

    status: Literal["HELLO", "READY", "FAILED"]
    num_gpu_blocks: int = 0
    max_model_len: int = 0
    error: str = ""
