"""`speculative` section: speculative decoding (vLLM's SpeculativeConfig).

A proposer guesses the next `num_speculative_tokens` tokens of each running request; the target
model scores them all in one step and the rejection sampler keeps the longest prefix it agrees
with, so the outputs are those of the target alone (greedy: token for token).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from vllm_hydra.config.model import ModelDType


class SpeculativeMethod(Enum):
    none = "none"
    ngram = "ngram"  # prompt lookup: propose the tokens that followed the last n-gram
    draft_model = "draft_model"  # a smaller model with the target's vocabulary
    # vLLM's eagle / eagle3 / mtp (heads on the target's hidden states) would go here.

    @property
    def uses_draft_model(self) -> bool:
        return self is SpeculativeMethod.draft_model


@dataclass(frozen=True)
class SpeculativeConfig:
    method: SpeculativeMethod = SpeculativeMethod.none
    # Draft tokens proposed per request per step (k); each step emits 1 to k + 1 tokens.
    num_speculative_tokens: int = 0
    # ngram: the shortest and longest suffix n-gram looked up in the request's context.
    prompt_lookup_min: int = 1
    prompt_lookup_max: int = 4
    # draft_model: its checkpoint directory (or hub id in the cache); its tokenizer and
    # vocabulary must be the target's.
    model: str | None = None
    # draft_model: auto is the target's dtype.
    dtype: ModelDType = ModelDType.auto
    # draft_model: unset is the target's model.max_model_len (capped by the draft's limit);
    # requests longer than this stop speculating.
    max_model_len: int | None = None
    # draft_model: 1 or the target's parallel.tp; unset is the target's.
    draft_tensor_parallel_size: int | None = None
    # Speculate only while fewer requests than this are running (unset: always), as vLLM's
    # speculative_disable_by_batch_size: at large batch the step is compute-bound.
    disable_by_batch_size: int | None = None

    @property
    def enabled(self) -> bool:
        return self.method is not SpeculativeMethod.none

    @property
    def num_lookahead_tokens(self) -> int:
        """KV slots a request needs beyond the step's tokens: a draft model writes the KV of
        its own proposals ahead of the target."""
        return self.num_speculative_tokens if self.method.uses_draft_model else 0
