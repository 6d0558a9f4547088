"""`AsyncTokenizer`: tokenization and chat templating off the event loop, in one worker thread
(as vLLM's serving layer does), so a huge prompt never stalls /health or other streams.

Prompts for generation go through a `PromptLengthGuard` first: one far over max_model_len is
refused without being tokenized, and a long one is counted in chunks, so it neither holds the
tokenizer thread for long nor builds millions of token ids that would only be refused.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from vllm_hydra.engine.input_processor import ChatMessages
from vllm_hydra.entrypoints.openai.prompt_length import PromptLengthGuard, text_chunks

if TYPE_CHECKING:
    from vllm_hydra.engine.async_llm import AsyncLLM


class AsyncTokenizer:
    def __init__(self, engine_client: AsyncLLM) -> None:
        self.engine_client = engine_client
        # One thread: tokenizations queue instead of competing for the GIL and cores.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenizer")
        self._guard: PromptLengthGuard | None = None

    def guard(self) -> PromptLengthGuard | None:
        """Built on first use (it reads the vocabulary once); None without a tokenizer."""
        tokenizer = self.engine_client.tokenizer
        if self._guard is None and tokenizer is not None:
            max_model_len = self.engine_client.vllm_config.model.max_model_len or 0
            self._guard = PromptLengthGuard(tokenizer, max_model_len)
        return self._guard

    async def encode(
        self, prompt: str, add_special_tokens: bool = True, param: str | None = None
    ) -> list[int]:
        """The prompt's token ids; with `param` (a prompt to generate from), a prompt that
        cannot fit max_model_len is refused (400 naming `param`) as early as possible."""
        processor = self.engine_client.input_processor
        guard = self.guard() if param is not None else None
        if guard is not None and param is not None:
            guard.check_chars(len(prompt), param)
            if guard.needs_count(prompt):
                await self._count_in_chunks(guard, prompt, param)
        return await self._run(processor.tokenize, prompt, add_special_tokens)

    async def _count_in_chunks(self, guard: PromptLengthGuard, prompt: str, param: str) -> None:
        processor = self.engine_client.input_processor
        num_tokens = 0
        for num_chunks, chunk in enumerate(text_chunks(prompt), 1):
            num_tokens += len(await self._run(processor.tokenize, chunk, False))
            guard.check_count(num_tokens, num_chunks, param)

    async def apply_chat_template(
        self,
        messages: ChatMessages,
        add_generation_prompt: bool = True,
        param: str | None = None,
        **kwargs: Any,
    ) -> list[int]:
        """The messages through the chat template; with `param`, messages whose text alone
        cannot fit max_model_len are refused before templating."""
        guard = self.guard() if param is not None else None
        if guard is not None and param is not None:
            guard.check_chars(sum(len(m.get("content") or "") for m in messages), param)
        processor = self.engine_client.input_processor
        return await self._run(
            processor.apply_chat_template, messages, add_generation_prompt, **kwargs
        )

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
