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
        tokenizer = engine_client.tokenizer
        max_model_len = engine_client.vllm_config.model.max_model_len or 0
        self.guard = PromptLengthGuard(tokenizer, max_model_len) if tokenizer is not None else None

    async def encode(
        self, prompt: str, add_special_tokens: bool = True, param: str | None = None
    ) -> list[int]:
        """The prompt's token ids; with `param` (a prompt to generate from), a prompt that
        cannot fit max_model_len is refused (400 naming `param`) as early as possible."""
        processor = self.engine_client.input_processor
        if param is not None and self.guard is not None:
            self.guard.check_chars(len(prompt), param)
            if self.guard.needs_count(prompt):
                await self._count_in_chunks(prompt, param)
        return await self._run(processor.tokenize, prompt, add_special_tokens)

    async def _count_in_chunks(self, prompt: str, param: str) -> None:
        assert self.guard is not None
        processor = self.engine_client.input_processor
        num_tokens = 0
        for num_chunks, chunk in enumerate(text_chunks(prompt), 1):
            num_tokens += len(await self._run(processor.tokenize, chunk, False))
            self.guard.check_count(num_tokens, num_chunks, param)

    async def apply_chat_template(
        self,
        messages: ChatMessages,
        add_generation_prompt: bool = True,
        param: str | None = None,
        **kwargs: Any,
    ) -> list[int]:
        """The messages through the chat template; with `param`, messages whose text alone
        cannot fit max_model_len are refused before templating."""
        if param is not None and self.guard is not None:
            self.guard.check_chars(sum(len(m.get("content") or "") for m in messages), param)
        processor = self.engine_client.input_processor
        return await self._run(
            processor.apply_chat_template, messages, add_generation_prompt, **kwargs
        )

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
