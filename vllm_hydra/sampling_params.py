"""`SamplingParams`: how one request samples and when it stops (vLLM's SamplingParams).

A msgspec Struct, so it crosses process boundaries inside `EngineCoreRequest` as msgpack.
`verify()` raises `SamplingParamsError` naming the offending parameter, which the server turns
into an HTTP 400 with `param` set.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

# Temperatures below this are greedy.
GREEDY_EPS = 1e-5
# Largest n a request may ask for (vLLM's VLLM_MAX_N_SEQUENCES default).
MAX_N = 16384


class SamplingParamsError(ValueError):
    """A sampling parameter out of range; `param` names it as the OpenAI API spells it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class RequestOutputKind(enum.IntEnum):
    """What a streaming request yields at each step (vLLM's names)."""

    CUMULATIVE = 0  # everything generated so far
    DELTA = 1  # only what is new since the last output
    FINAL_ONLY = 2  # nothing until the request finishes


class StructuredOutputsParams(msgspec.Struct, omit_defaults=True):
    """One constraint on the output (vLLM's StructuredOutputsParams); exactly one is set."""

    json: str | dict[str, Any] | None = None  # a JSON schema
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None  # EBNF (xgrammar) or Lark (guidance)
    json_object: bool | None = None  # any JSON object
    structural_tag: str | None = None  # xgrammar's structural tag, as JSON
    # Set by the input processor: the backend that validated the constraint.
    backend: str | None = None


class SamplingParams(msgspec.Struct, omit_defaults=True):
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: off
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    max_tokens: int | None = 16  # None: up to max_model_len
    min_tokens: int = 0
    stop: list[str] = msgspec.field(default_factory=list)
    stop_token_ids: list[int] = msgspec.field(default_factory=list)
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    logprobs: int | None = None  # top-N logprobs of each sampled token (-1: whole vocab)
    prompt_logprobs: int | None = None
    logit_bias: dict[int, float] | None = None
    skip_special_tokens: bool = True
    output_kind: RequestOutputKind = RequestOutputKind.CUMULATIVE
    structured_outputs: StructuredOutputsParams | None = None

    @property
    def is_greedy(self) -> bool:
        return self.temperature < GREEDY_EPS

    @property
    def uses_penalties(self) -> bool:
        return (
            self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
            or self.repetition_penalty != 1.0
        )

    def verify(self, vocab_size: int, max_logprobs: int = 20) -> None:
        """Raise SamplingParamsError for the first parameter out of range."""
        for param, ok, limit in self._rules(vocab_size, max_logprobs):
            if not ok:
                value = getattr(self, param)
                raise SamplingParamsError(param, f"{param}={value} is invalid: {limit}.")

    def _rules(self, vocab_size: int, max_logprobs: int) -> list[tuple[str, bool, str]]:
        def logprobs_ok(v: int | None) -> bool:
            return v is None or v == -1 or 0 <= v <= max_logprobs

        return [
            ("n", 1 <= self.n <= MAX_N, f"it must be in [1, {MAX_N}]"),
            ("temperature", self.temperature >= 0, "it must be >= 0"),
            ("top_p", 0 < self.top_p <= 1, "it must be in (0, 1]"),
            ("top_k", self.top_k in (-1, 0) or self.top_k >= 1, "it must be -1, 0 or >= 1"),
            ("min_p", 0 <= self.min_p <= 1, "it must be in [0, 1]"),
            ("presence_penalty", -2 <= self.presence_penalty <= 2, "it must be in [-2, 2]"),
            ("frequency_penalty", -2 <= self.frequency_penalty <= 2, "it must be in [-2, 2]"),
            ("repetition_penalty", self.repetition_penalty > 0, "it must be > 0"),
            ("max_tokens", self.max_tokens is None or self.max_tokens >= 1, "it must be >= 1"),
            (
                "min_tokens",
                0 <= self.min_tokens <= (self.max_tokens or self.min_tokens),
                "it must be in [0, max_tokens]",
            ),
            ("logprobs", logprobs_ok(self.logprobs), f"it must be -1 or in [0, {max_logprobs}]"),
            (
                "prompt_logprobs",
                logprobs_ok(self.prompt_logprobs),
                f"it must be -1 or in [0, {max_logprobs}]",
            ),
            ("stop", all(self.stop), "stop strings must not be empty"),
            (
                "stop_token_ids",
                all(0 <= t < vocab_size for t in self.stop_token_ids),
                f"token ids must be in [0, {vocab_size})",
            ),
            (
                "logit_bias",
                all(0 <= t < vocab_size for t in (self.logit_bias or {})),
                f"token ids must be in [0, {vocab_size})",
            ),
        ]
