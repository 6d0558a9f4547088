"""`Request`: the engine core's state of one request (vLLM's v1/request.py)."""

from __future__ import annotations

import enum
import time

from vllm_hydra.core.kv_cache_utils import BlockHash
from vllm_hydra.engine.messages import (
    EngineCoreEvent,
    EngineCoreEventType,
    EngineCoreRequest,
    FinishReason,
)
from vllm_hydra.lora.request import LoRARequest
from vllm_hydra.sampling_params import SamplingParams
from vllm_hydra.structured_output.request import StructuredOutputRequest


class RequestStatus(enum.IntEnum):
    """Where a request is in its life. Every status after PREEMPTED is final."""

    WAITING = enum.auto()
    WAITING_FOR_FSM = enum.auto()  # its grammar is compiling; it is skipped until ready
    RUNNING = enum.auto()
    PREEMPTED = enum.auto()  # its KV cache was freed; it waits to be recomputed
    FINISHED_STOPPED = enum.auto()
    FINISHED_LENGTH_CAPPED = enum.auto()
    FINISHED_ABORTED = enum.auto()

    @staticmethod
    def is_finished(status: RequestStatus) -> bool:
        return status > RequestStatus.PREEMPTED

    @staticmethod
    def get_finished_reason(status: RequestStatus) -> FinishReason | None:
        return _FINISHED_REASONS.get(status)


_FINISHED_REASONS = {
    RequestStatus.FINISHED_STOPPED: FinishReason.STOP,
    RequestStatus.FINISHED_LENGTH_CAPPED: FinishReason.LENGTH,
    RequestStatus.FINISHED_ABORTED: FinishReason.ABORT,
}


class Request:
    """One request's tokens and progress.

    `num_computed_tokens` chases `num_tokens`: the scheduler gives each request as many of its
    missing tokens as the step's budget allows, whether they are prompt or generated tokens.
    """

    def __init__(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        sampling_params: SamplingParams,
        eos_token_id: int | None,
        arrival_time: float | None = None,
        priority: int = 0,
        lora_request: LoRARequest | None = None,
    ) -> None:
        self.request_id = request_id
        self.prompt_token_ids = prompt_token_ids
        self.sampling_params = sampling_params
        self.eos_token_id = eos_token_id
        self.arrival_time = time.time() if arrival_time is None else arrival_time
        self.priority = priority
        self.lora_request = lora_request
        self.status = RequestStatus.WAITING
        self.stop_reason: int | str | None = None
        self.output_token_ids: list[int] = []
        self.all_token_ids: list[int] = list(prompt_token_ids)
        # Draft tokens proposed after the last step, verified by the next one (not outputs).
        self.spec_token_ids: list[int] = []
        # Tokens whose KV is in the cache, or will be once the scheduled step has run.
        self.num_computed_tokens = 0
        # Prompt tokens served from the prefix cache when first scheduled; -1 until then.
        self.num_cached_tokens = -1
        # Hashes of the full blocks of all_token_ids, extended by the KV cache manager.
        self.block_hashes: list[BlockHash] = []
        # Engine events not yet sent to the frontend (recorded only when stats are on).
        self.events: list[EngineCoreEvent] = []
        so_params = sampling_params.structured_outputs
        self.structured_output_request = (
            StructuredOutputRequest(so_params) if so_params is not None else None
        )

    @classmethod
    def from_engine_core_request(cls, request: EngineCoreRequest) -> Request:
        return cls(
            request_id=request.request_id,
            prompt_token_ids=list(request.prompt_token_ids),
            sampling_params=request.sampling_params,
            eos_token_id=request.eos_token_id,
            arrival_time=request.arrival_time,
            priority=request.priority,
            lora_request=request.lora_request,
        )

    @property
    def num_tokens(self) -> int:
        return len(self.all_token_ids)

    @property
    def num_tokens_with_spec(self) -> int:
        return len(self.all_token_ids) + len(self.spec_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def lora_int_id(self) -> int:
        """The adapter's id; 0: the base model."""
        return self.lora_request.lora_int_id if self.lora_request else 0

    @property
    def use_structured_output(self) -> bool:
        return self.structured_output_request is not None

    @property
    def max_tokens(self) -> int | None:
        """The output token limit; None: only max_model_len limits the request."""
        return self.sampling_params.max_tokens

    def append_output_token_ids(self, token_ids: int | list[int]) -> None:
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        self.output_token_ids.extend(token_ids)
        self.all_token_ids.extend(token_ids)

    def record_event(self, event_type: EngineCoreEventType) -> None:
        self.events.append(EngineCoreEvent.new_event(event_type))

    def take_events(self) -> list[EngineCoreEvent] | None:
        """The events since the last call (None if there are none), for the next output."""
        if not self.events:
            return None
        events, self.events = self.events, []
        return events

    def is_finished(self) -> bool:
        return RequestStatus.is_finished(self.status)

    def get_finished_reason(self) -> FinishReason | None:
        return RequestStatus.get_finished_reason(self.status)

    def __repr__(self) -> str:
        return (
            f"Request({self.request_id!r}, {self.status.name}, tokens={self.num_tokens}, "
            f"computed={self.num_computed_tokens})"
        )
