"""What a user gets back for a request (vLLM's outputs.py and logprobs.py)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None  # 1 = the most likely token
    decoded_token: str | None = None


# One dict per position: token id -> its Logprob (the chosen token and the top-N).
SampleLogprobs = list[dict[int, Logprob]]
# Prompt logprobs: None for the first prompt token, which nothing predicts.
PromptLogprobs = list[dict[int, Logprob] | None]


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None = None
    logprobs: SampleLogprobs | None = None
    finish_reason: str | None = None  # "stop", "length", "abort"
    stop_reason: int | str | None = None  # the stop token id or stop string

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)
    prompt_logprobs: PromptLogprobs | None = None
    finished: bool = False
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache
