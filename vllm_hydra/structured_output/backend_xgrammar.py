"""The xgrammar backend (the default): grammars compiled against the vocabulary, CPU bitmasks."""

from __future__ import annotations

import json
import re
from typing import Any

import torch
import xgrammar as xgr
from transformers import PreTrainedTokenizerBase

from vllm_hydra.structured_output.backend_types import (
    StructuredOutputBackend,
    StructuredOutputGrammar,
    StructuredOutputOptions,
)


class XgrammarGrammar(StructuredOutputGrammar):
    def __init__(self, matcher: xgr.GrammarMatcher) -> None:
        self.matcher = matcher

    def accept_tokens(self, request_id: str, tokens: list[int]) -> bool:
        return all(self.matcher.accept_token(token) for token in tokens)

    def fill_bitmask(self, bitmask: torch.Tensor, index: int) -> None:
        self.matcher.fill_next_token_bitmask(bitmask, index)

    def is_terminated(self) -> bool:
        return self.matcher.is_terminated()


class XgrammarBackend(StructuredOutputBackend):
    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        vocab_size: int,
        disable_any_whitespace: bool,
        max_threads: int,
    ) -> None:
        # The vocabulary is read once per engine; every grammar compiles against it.
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self.compiler = xgr.GrammarCompiler(info, max_threads=max_threads)
        self.any_whitespace = not disable_any_whitespace

    def compile_grammar(self, kind: StructuredOutputOptions, spec: str) -> xgr.CompiledGrammar:
        if kind in (StructuredOutputOptions.JSON, StructuredOutputOptions.JSON_OBJECT):
            return self.compiler.compile_json_schema(spec, any_whitespace=self.any_whitespace)
        return self.compiler.compile_grammar(to_xgrammar_grammar(kind, spec))

    def new_grammar(self, compiled: Any) -> XgrammarGrammar:
        return XgrammarGrammar(xgr.GrammarMatcher(compiled))


def to_xgrammar_grammar(kind: StructuredOutputOptions, spec: str) -> xgr.Grammar:
    """The grammar of a spec; raises (RuntimeError, ValueError) for an invalid one."""
    if kind in (StructuredOutputOptions.JSON, StructuredOutputOptions.JSON_OBJECT):
        return xgr.Grammar.from_json_schema(spec)
    if kind is StructuredOutputOptions.REGEX:
        return xgr.Grammar.from_regex(spec)
    if kind is StructuredOutputOptions.GRAMMAR:
        return xgr.Grammar.from_ebnf(spec)
    if kind is StructuredOutputOptions.CHOICE:
        return xgr.Grammar.from_ebnf(f"root ::= {choice_alternatives(spec)}")
    return xgr.Grammar.from_structural_tag(spec)


def choice_alternatives(spec: str) -> str:
    """`"a" | "b"`: the choices (a JSON list) as string literals, valid in EBNF and Lark alike."""
    return " | ".join(json.dumps(choice, ensure_ascii=False) for choice in json.loads(spec))


def validate_xgrammar(kind: StructuredOutputOptions, spec: str) -> None:
    """Raise ValueError with xgrammar's message if it cannot compile the spec."""
    try:
        to_xgrammar_grammar(kind, spec)
    except (RuntimeError, ValueError, TypeError) as e:
        raise ValueError(_XGRAMMAR_LOCATION.sub("", str(e)).strip()) from e


# "[13:31:51] /project/cpp/regex_converter.cc:94: " before each of xgrammar's messages.
_XGRAMMAR_LOCATION = re.compile(r"\[[\d:]+\] \S+:\d+: ")
