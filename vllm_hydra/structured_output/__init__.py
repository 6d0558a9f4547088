"""`StructuredOutputManager`: compiles grammars off the step loop and fills the token bitmask
(vLLM's v1/structured_output). The engine core builds one; the scheduler drives it."""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import torch
import xgrammar as xgr

from vllm_hydra.config.structured_outputs import StructuredOutputsBackend
from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.structured_output.backend_types import StructuredOutputBackend, StructuredOutputKey

if TYPE_CHECKING:
    from vllm_hydra.core.request import Request

logger = logging.getLogger(__name__)

# Compiled grammars kept for reuse, by (backend, kind, spec); the least recently used go first.
GRAMMAR_CACHE_SIZE = 256


class StructuredOutputManager:
    def __init__(self, vllm_config: VllmConfig) -> None:
        self.config = vllm_config
        # Half the cores: compiling must not starve the model's own threads.
        self.max_workers = max(1, (os.cpu_count() or 2) // 2)
        self.executor = ThreadPoolExecutor(self.max_workers, thread_name_prefix="grammar")
        self._backends: dict[str, StructuredOutputBackend] = {}
        self._backend_lock = threading.Lock()
        self._compiled: OrderedDict[tuple[str, StructuredOutputKey], Future[Any]] = OrderedDict()
        self.num_compiled = 0  # grammars compiled (cache misses), for tests and stats

    @property
    def vocab_size(self) -> int:
        """Read when a grammar is first needed: a scheduler without structured requests may
        run on a config that has no model facts (the scheduler's own tests)."""
        return self.config.arch.vocab_size

    def grammar_init(self, request: Request) -> None:
        """Start (or reuse) the compilation of the request's grammar; never blocks."""
        so_request = request.structured_output_request
        assert so_request is not None and so_request.params.backend is not None
        cache_key = (so_request.params.backend, so_request.structured_output_key)
        future = self._compiled.get(cache_key)
        if future is None:
            future = self.executor.submit(self._compile, *cache_key)
            self._compiled[cache_key] = future
            self.num_compiled += 1
            if len(self._compiled) > GRAMMAR_CACHE_SIZE:
                self._compiled.popitem(last=False)
        self._compiled.move_to_end(cache_key)
        so_request.compiled = future

    def _compile(self, backend_name: str, key: StructuredOutputKey) -> Any:
        return self._backend(backend_name).compile_grammar(*key)

    def _backend(self, name: str) -> StructuredOutputBackend:
        """The backend, built on first use (it reads the whole vocabulary) in a compile thread."""
        with self._backend_lock:
            if name not in self._backends:
                self._backends[name] = self._create_backend(StructuredOutputsBackend(name))
            return self._backends[name]

    def _create_backend(self, name: StructuredOutputsBackend) -> StructuredOutputBackend:
        from vllm_hydra.tokenizer import get_tokenizer

        tokenizer = get_tokenizer(self.config)
        if tokenizer is None:
            raise ValueError("Structured outputs need a tokenizer (model.skip_tokenizer_init).")
        no_whitespace = self.config.structured_outputs.disable_any_whitespace
        if name is StructuredOutputsBackend.guidance:
            from vllm_hydra.structured_output.backend_guidance import GuidanceBackend

            return GuidanceBackend(tokenizer, self.vocab_size, no_whitespace)
        from vllm_hydra.structured_output.backend_xgrammar import XgrammarBackend

        return XgrammarBackend(tokenizer, self.vocab_size, no_whitespace, self.max_workers)

    def is_grammar_ready(self, request: Request) -> bool:
        """True once the request has its matcher; raises the compile error if it failed."""
        so_request = request.structured_output_request
        assert so_request is not None and so_request.compiled is not None
        if so_request.grammar is not None:
            return True
        if not so_request.compiled.done():
            return False
        compiled = so_request.compiled.result()
        backend = self._backends[so_request.params.backend or ""]
        so_request.grammar = backend.new_grammar(compiled)
        return True

    def grammar_bitmask(self, requests: list[Request]) -> torch.Tensor:
        """[len(requests), vocab/32] int32, row i for requests[i]; all ones where a grammar
        has terminated (its request is stopping)."""
        bitmask = xgr.allocate_token_bitmask(len(requests), self.vocab_size)
        for index, request in enumerate(requests):
            grammar = request.structured_output_request.grammar  # type: ignore[union-attr]
            if grammar is not None and not grammar.is_terminated():
                grammar.fill_bitmask(bitmask, index)
        return bitmask

    def accept_tokens(self, request: Request, token_ids: list[int]) -> None:
        grammar = request.structured_output_request.grammar  # type: ignore[union-attr]
        if grammar is not None and not grammar.accept_tokens(request.request_id, token_ids):
            logger.error("Request %s: the grammar refused tokens %s", request.request_id, token_ids)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
