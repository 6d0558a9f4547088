"""`RequestOutputCollector`: the hand-off of one request's outputs to its `generate()` consumer
(vLLM's output_processor.RequestOutputCollector).

It holds at most one pending output: when the consumer falls behind, a DELTA output is merged
into the pending one (texts and token ids concatenated), any other kind replaces it (the newest
CUMULATIVE output already holds everything). So a slow client never grows a queue.
"""

from __future__ import annotations

import asyncio

from vllm_hydra.request_output import CompletionOutput, RequestOutput
from vllm_hydra.sampling_params import RequestOutputKind


class RequestOutputCollector:
    def __init__(self, output_kind: RequestOutputKind) -> None:
        self.aggregate = output_kind == RequestOutputKind.DELTA
        self.output: RequestOutput | Exception | None = None
        self.ready = asyncio.Event()

    def put(self, output: RequestOutput | Exception) -> None:
        """Hand over an output (or the error that ends the request)."""
        pending = self.output
        if (
            self.aggregate
            and isinstance(pending, RequestOutput)
            and isinstance(output, RequestOutput)
        ):
            _merge_delta(pending, output)
        elif not isinstance(pending, Exception):
            self.output = output
        self.ready.set()

    async def get(self) -> RequestOutput:
        """Wait for the next output; raise the error the request ended with."""
        while self.output is None:
            await self.ready.wait()
        output, self.output = self.output, None
        self.ready.clear()
        if isinstance(output, Exception):
            raise output
        return output


def _merge_delta(pending: RequestOutput, new: RequestOutput) -> None:
    """Fold a newer DELTA output into one the consumer has not taken yet."""
    by_index = {c.index: c for c in pending.outputs}
    for completion in new.outputs:
        old = by_index.get(completion.index)
        if old is None:
            pending.outputs.append(completion)
            by_index[completion.index] = completion
        else:
            _extend(old, completion)
    pending.outputs.sort(key=lambda c: c.index)
    pending.finished = new.finished
    pending.num_cached_tokens = new.num_cached_tokens


def _extend(old: CompletionOutput, new: CompletionOutput) -> None:
    old.text += new.text
    old.token_ids = old.token_ids + new.token_ids
    if new.logprobs is not None:
        old.logprobs = (old.logprobs or []) + new.logprobs
    old.cumulative_logprob = new.cumulative_logprob
    old.finish_reason = new.finish_reason
    old.stop_reason = new.stop_reason
