"""The llguidance backend: Lark grammars and the widest JSON-schema support.

`llguidance.torch` is imported where a bitmask is filled, not here: it imports torch._dynamo and
Inductor (2.8 s of CPU, measured), which the API server process, validating grammars only,
would otherwise pay at every start.
"""

from __future__ import annotations

import json
from typing import Any

import llguidance
import llguidance.hf
import torch
from transformers import PreTrainedTokenizerBase

from vllm_hydra.structured_output.backend_types import (
    StructuredOutputBackend,
    StructuredOutputGrammar,
    StructuredOutputOptions,
)
from vllm_hydra.structured_output.backend_xgrammar import choice_alternatives


class GuidanceGrammar(StructuredOutputGrammar):
    def __init__(self, matcher: llguidance.LLMatcher) -> None:
        self.matcher = matcher

    def accept_tokens(self, request_id: str, tokens: list[int]) -> bool:
        return self.matcher.consume_tokens(tokens)

    def fill_bitmask(self, bitmask: torch.Tensor, index: int) -> None:
        import llguidance.torch  # here, not at the top: see the module docstring

        llguidance.torch.fill_next_token_bitmask(self.matcher, bitmask, index)

    def is_terminated(self) -> bool:
        return self.matcher.is_stopped()


class GuidanceBackend(StructuredOutputBackend):
    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, vocab_size: int, disable_any_whitespace: bool
    ) -> None:
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size)
        self.whitespace_flexible = not disable_any_whitespace

    def compile_grammar(self, kind: StructuredOutputOptions, spec: str) -> llguidance.LLMatcher:
        # llguidance compiles lazily inside a matcher: the cached template is one at its start
        # state, which every request copies.
        grammar = to_guidance_grammar(kind, spec, self.whitespace_flexible)
        matcher = llguidance.LLMatcher(self.tokenizer, grammar)
        if matcher.is_error():
            raise ValueError(matcher.get_error())
        return matcher

    def new_grammar(self, compiled: Any) -> GuidanceGrammar:
        return GuidanceGrammar(compiled.deep_copy())


def to_guidance_grammar(
    kind: StructuredOutputOptions, spec: str, whitespace_flexible: bool = True
) -> str:
    """llguidance's grammar string for a spec."""
    if kind in (StructuredOutputOptions.JSON, StructuredOutputOptions.JSON_OBJECT):
        defaults = {"whitespace_flexible": whitespace_flexible}
        return llguidance.LLMatcher.grammar_from_json_schema(spec, defaults=defaults)
    if kind is StructuredOutputOptions.REGEX:
        return llguidance.grammar_from("regex", spec)
    if kind is StructuredOutputOptions.GRAMMAR:
        return llguidance.grammar_from("lark", spec)
    if kind is StructuredOutputOptions.CHOICE:
        return llguidance.grammar_from("lark", f"start: {choice_alternatives(spec)}")
    raise ValueError("structural_tag needs the xgrammar backend (structured_outputs.backend).")


def validate_guidance(kind: StructuredOutputOptions, spec: str) -> None:
    """Raise ValueError with llguidance's message if it cannot compile the spec."""
    try:
        if kind in (StructuredOutputOptions.JSON, StructuredOutputOptions.JSON_OBJECT):
            json.loads(spec)
        error = llguidance.LLMatcher.validate_grammar(to_guidance_grammar(kind, spec), None)
    except (RuntimeError, ValueError, TypeError) as e:
        raise ValueError(str(e).strip()) from e
    if error:
        raise ValueError(error.strip())
