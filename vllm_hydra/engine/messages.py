"""Every message between the frontend and the engine core, as msgspec structs (one file).

`array_like=True` encodes structs as msgpack arrays: no field names on the wire.
"""

from __future__ import annotations

import enum

import msgspec

from vllm_hydra.sampling_params import SamplingParams


class FinishReason(enum.IntEnum):
    """Why a request ended; `str()` gives the OpenAI API's finish_reason."""

    STOP = 0  # EOS, a stop token or a stop string
    LENGTH = 1  # max_tokens or max_model_len
    ABORT = 2  # aborted by the client or the engine

    def __str__(self) -> str:
        return ("stop", "length", "abort")[self.value]


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

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


class EngineCoreOutputs(msgspec.Struct, array_like=True, omit_defaults=True):
    engine_index: int = 0
    outputs: list[EngineCoreOutput] = msgspec.field(default_factory=list)
    timestamp: float = 0.0
    # Requests the engine finished on its own (e.g. aborted on a fault) without an output.
    finished_requests: set[str] | None = None
