"""`AsyncTokenizer`: tokenization and chat templating off the event loop, in one worker thread
(as vLLM's serving layer does), so a huge prompt never stalls /health or other streams."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from vllm_hydra.engine.input_processor import ChatMessages, ChatTools

if TYPE_CHECKING:
    from vllm_hydra.engine.async_llm import AsyncLLM


class AsyncTokenizer:
    def __init__(self, engine_client: AsyncLLM) -> None:
        self.engine_client = engine_client
        # One thread: tokenizations queue instead of competing for the GIL and cores.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenizer")

    async def encode(self, prompt: str, add_special_tokens: bool = True) -> list[int]:
        processor = self.engine_client.input_processor
        return await self._run(processor.tokenize, prompt, add_special_tokens)

    async def apply_chat_template(
        self,
        messages: ChatMessages,
        add_generation_prompt: bool = True,
        tools: ChatTools | None = None,
    ) -> list[int]:
        processor = self.engine_client.input_processor
        return await self._run(
            processor.apply_chat_template, messages, add_generation_prompt, tools
        )

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
