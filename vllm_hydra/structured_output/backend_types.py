"""What every guided-decoding backend provides: compiled grammars and per-request matchers.

A backend compiles a (kind, spec) pair once (slow, off the step loop) into a grammar that any
number of requests share; each request then gets its own cheap matcher (`StructuredOutputGrammar`)
that tracks its tokens and fills its row of the token bitmask.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from typing import Any

import torch


class StructuredOutputOptions(enum.Enum):
    """The kinds of constraint a request can carry (vLLM's names)."""

    JSON = enum.auto()
    JSON_OBJECT = enum.auto()
    REGEX = enum.auto()
    GRAMMAR = enum.auto()
    CHOICE = enum.auto()
    STRUCTURAL_TAG = enum.auto()


# What a compiled grammar is cached by: its kind and its spec as a string.
StructuredOutputKey = tuple[StructuredOutputOptions, str]


class StructuredOutputGrammar(ABC):
    """One request's matcher: which tokens may come next, given those accepted so far."""

    @abstractmethod
    def accept_tokens(self, request_id: str, tokens: list[int]) -> bool:
        """Advance over `tokens`; False (and no advance past it) at the first one refused."""

    @abstractmethod
    def fill_bitmask(self, bitmask: torch.Tensor, index: int) -> None:
        """Write the allowed next tokens into row `index` of `bitmask`."""

    @abstractmethod
    def is_terminated(self) -> bool:
        """The grammar is complete and a stop token was accepted."""


class StructuredOutputBackend(ABC):
    """A guided-decoding library bound to one tokenizer's vocabulary."""

    @abstractmethod
    def compile_grammar(self, kind: StructuredOutputOptions, spec: str) -> Any:
        """Compile once; the result is shared by every request with the same key."""

    @abstractmethod
    def new_grammar(self, compiled: Any) -> StructuredOutputGrammar:
        """A fresh matcher over a compiled grammar, at its start state."""
