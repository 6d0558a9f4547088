"""`OutputProcessor`: engine-core outputs -> `RequestOutput`s (vLLM's v1/engine/output_processor).

It detokenizes incrementally, applies stop strings (asking the engine to abort a request that
hit one), turns logprobs into per-token dicts, and fans the n sequences of a request back in.
Each step it returns the `RequestOutput`s to deliver, per `sampling_params.output_kind`:
CUMULATIVE (everything so far), DELTA (only what is new) or FINAL_ONLY. While a sequence runs,
the last `max(len(stop)) - 1` characters are held back: they may yet become a stop string.

With stats on, each request keeps its timestamps (`RequestStateStats`) and each call folds the
step into an `IterationStats` for the stat loggers; a finished request becomes a span when a
tracer is set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec
from transformers import PreTrainedTokenizerBase

from vllm_hydra.engine.detokenizer import IncrementalDetokenizer
from vllm_hydra.engine.messages import EngineCoreOutput, EngineCoreRequest, FinishReason
from vllm_hydra.metrics.stats import IterationStats, RequestStateStats
from vllm_hydra.request_output import (
    CompletionOutput,
    Logprob,
    PromptLogprobs,
    RequestOutput,
    SampleLogprobs,
)
from vllm_hydra.sampling_params import RequestOutputKind, SamplingParams

if TYPE_CHECKING:
    from vllm_hydra.tracing import RequestTracer

LogprobsRows = tuple[list[list[int]], list[list[float]], list[int]]


@dataclass
class ParentRequest:
    """A user request; its n sequences run in the engine as child requests."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    n: int
    completions: dict[int, CompletionOutput] = field(default_factory=dict)
    prompt_logprobs: PromptLogprobs | None = None
    num_cached_tokens: int = 0

    @property
    def finished(self) -> bool:
        return len(self.completions) == self.n and all(
            c.finished for c in self.completions.values()
        )

    def to_output(self) -> RequestOutput:
        outputs = [self.completions[i] for i in sorted(self.completions)]
        return RequestOutput(
            request_id=self.request_id,
            prompt=self.prompt,
            prompt_token_ids=self.prompt_token_ids,
            outputs=outputs,
            prompt_logprobs=self.prompt_logprobs,
            finished=self.finished,
            num_cached_tokens=self.num_cached_tokens,
        )


def child_sampling_params(params: SamplingParams, index: int) -> SamplingParams:
    """Sequence `index` of n: n=1, and its own seed (seed + index), so they differ but
    reproduce."""
    child = msgspec.structs.replace(params, n=1)
    if params.seed is not None:
        child = msgspec.structs.replace(child, seed=params.seed + index)
    return child


class RequestState:
    """One engine request (one sequence of a parent)."""

    def __init__(
        self,
        request: EngineCoreRequest,
        parent: ParentRequest,
        index: int,
        detok: IncrementalDetokenizer,
        log_stats: bool = False,
        trace_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.request_id = request.request_id
        self.parent = parent
        self.index = index
        self.detokenizer = detok
        params = request.sampling_params
        self.sampling_params = params
        self.prompt_len = len(request.prompt_token_ids)
        self.stats = RequestStateStats(arrival_time=request.arrival_time) if log_stats else None
        self.trace_headers = trace_headers
        self.wants_logprobs = params.logprobs is not None
        self.wants_prompt_logprobs = params.prompt_logprobs is not None
        # Rows carry the batch's widest top-N; each request keeps its own (-1: all of them).
        self.num_logprobs = params.logprobs if params.logprobs not in (None, -1) else None
        self.num_prompt_logprobs = (
            params.prompt_logprobs if params.prompt_logprobs not in (None, -1) else None
        )
        self.logprobs: SampleLogprobs = []
        self.cumulative_logprob = 0.0
        self.output_kind = params.output_kind
        self.stop_buffer = (
            max(len(s) for s in params.stop) - 1
            if params.stop and not params.include_stop_str_in_output
            else 0
        )
        # What DELTA outputs have delivered so far.
        self.sent_text_len = 0
        self.sent_num_tokens = 0

    def visible_text(self, finished: bool) -> str:
        text = self.detokenizer.text
        return text if finished else text[: max(len(text) - self.stop_buffer, 0)]

    def delta(self, completion: CompletionOutput) -> CompletionOutput:
        """The part of `completion` not yet delivered; marks it delivered."""
        text_from, tokens_from = self.sent_text_len, self.sent_num_tokens
        self.sent_text_len, self.sent_num_tokens = len(completion.text), len(completion.token_ids)
        logprobs = completion.logprobs[tokens_from:] if completion.logprobs is not None else None
        return CompletionOutput(
            index=completion.index,
            text=completion.text[text_from:],
            token_ids=completion.token_ids[tokens_from:],
            cumulative_logprob=completion.cumulative_logprob,
            logprobs=logprobs,
            finish_reason=completion.finish_reason,
            stop_reason=completion.stop_reason,
        )


@dataclass
class OutputProcessorOutput:
    request_outputs: list[RequestOutput]  # what to deliver this step, per output_kind
    reqs_to_abort: list[str]  # engine requests that hit a stop string
    # Parent request id -> why the engine refused it (FinishReason.ERROR): it fails whole.
    refused: dict[str, str] = field(default_factory=dict)


class OutputProcessor:
    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase | None,
        log_stats: bool = False,
        tracer: RequestTracer | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.log_stats = log_stats
        self.tracer = tracer
        self.request_states: dict[str, RequestState] = {}

    def add_request(
        self,
        request: EngineCoreRequest,
        parent: ParentRequest,
        index: int = 0,
        trace_headers: Mapping[str, str] | None = None,
    ) -> None:
        detok = IncrementalDetokenizer(self.tokenizer, request.sampling_params)
        self.request_states[request.request_id] = RequestState(
            request, parent, index, detok, self.log_stats, trace_headers
        )

    def has_unfinished_requests(self) -> bool:
        return bool(self.request_states)

    def abort_requests(self, request_ids: list[str]) -> None:
        for request_id in request_ids:
            self.request_states.pop(request_id, None)

    def process_outputs(
        self,
        outputs: list[EngineCoreOutput],
        engine_core_timestamp: float = 0.0,
        iteration_stats: IterationStats | None = None,
    ) -> OutputProcessorOutput:
        """Fold one engine step into the requests; with `iteration_stats`, also record the
        step's tokens and latencies (`engine_core_timestamp`: the step's engine time)."""
        changed: dict[str, list[RequestState]] = {}  # parent id -> its sequences that moved
        to_abort: list[str] = []
        refused: dict[str, str] = {}
        for output in outputs:
            state = self.request_states.get(output.request_id)
            if state is None:  # aborted meanwhile
                continue
            if output.finish_reason == FinishReason.ERROR:
                del self.request_states[output.request_id]
                refused[state.parent.request_id] = output.error or "refused by the engine"
                continue
            if iteration_stats is not None and state.stats is not None:
                iteration_stats.update_from_output(
                    output, engine_core_timestamp, state.prompt_len, state.stats
                )
            finish_reason = self._update(state, output)
            if finish_reason is not None and not output.finished:
                to_abort.append(output.request_id)  # a stop string: the engine still runs it
            if finish_reason is not None:
                del self.request_states[output.request_id]
                self._finish_stats(state, finish_reason, iteration_stats)
            changed.setdefault(state.parent.request_id, []).append(state)
        request_outputs = [
            self._make_output(states) for parent, states in changed.items() if parent not in refused
        ]
        return OutputProcessorOutput(
            [o for o in request_outputs if o is not None], to_abort, refused
        )

    def _finish_stats(
        self,
        state: RequestState,
        finish_reason: FinishReason,
        iteration_stats: IterationStats | None,
    ) -> None:
        """Record a finished request for the stat loggers, and its span for the tracer."""
        if iteration_stats is None or state.stats is None:
            return
        finished = iteration_stats.update_from_finished_request(
            finish_reason,
            state.prompt_len,
            state.sampling_params.max_tokens,
            state.stats,
            n_param=state.parent.n if state.index == 0 else None,  # once per user request
        )
        if self.tracer is not None:
            self.tracer.trace_request(
                state.request_id, state.sampling_params, finished, state.stats, state.trace_headers
            )

    @staticmethod
    def _make_output(states: list[RequestState]) -> RequestOutput | None:
        """One RequestOutput per parent and step: all of it, its new part, or nothing yet."""
        parent, kind = states[0].parent, states[0].output_kind
        if kind == RequestOutputKind.FINAL_ONLY and not parent.finished:
            return None
        output = parent.to_output()
        if kind == RequestOutputKind.DELTA:
            output.outputs = [s.delta(parent.completions[s.index]) for s in states]
        return output

    def _update(self, state: RequestState, output: EngineCoreOutput) -> FinishReason | None:
        """Fold one step's output into the request; its finish reason, if it finished."""
        stop_string = state.detokenizer.update(output.new_token_ids)
        if state.wants_logprobs and output.new_logprobs is not None:
            # Only the tokens up to a stop string count (several can come in one step).
            kept = state.detokenizer.num_new_consumed
            self._append_logprobs(state, tuple(column[:kept] for column in output.new_logprobs))
        if state.wants_prompt_logprobs and output.new_prompt_logprobs is not None:
            self._append_prompt_logprobs(state, output.new_prompt_logprobs)
        if output.num_cached_tokens:
            state.parent.num_cached_tokens = output.num_cached_tokens
        finish_reason, stop_reason = output.finish_reason, output.stop_reason
        if stop_string is not None:
            finish_reason, stop_reason = FinishReason.STOP, stop_string
        if finish_reason is not None or state.output_kind != RequestOutputKind.FINAL_ONLY:
            state.parent.completions[state.index] = self._completion(
                state, finish_reason, stop_reason
            )
        return finish_reason

    @staticmethod
    def _completion(
        state: RequestState, finish_reason: FinishReason | None, stop_reason: int | str | None
    ) -> CompletionOutput:
        """A snapshot of the sequence so far (copies: the state keeps growing)."""
        return CompletionOutput(
            index=state.index,
            text=state.visible_text(finished=finish_reason is not None),
            token_ids=list(state.detokenizer.token_ids),
            cumulative_logprob=state.cumulative_logprob if state.wants_logprobs else None,
            logprobs=list(state.logprobs) if state.wants_logprobs else None,
            finish_reason=str(finish_reason) if finish_reason is not None else None,
            stop_reason=stop_reason,
        )

    def _append_logprobs(self, state: RequestState, rows: LogprobsRows) -> None:
        for position in self._to_dicts(rows, state.num_logprobs):
            state.logprobs.append(position)
            state.cumulative_logprob += next(iter(position.values())).logprob

    def _append_prompt_logprobs(self, state: RequestState, rows: LogprobsRows) -> None:
        parent = state.parent
        if parent.prompt_logprobs is None:
            parent.prompt_logprobs = [None]  # nothing predicts the first prompt token
        parent.prompt_logprobs.extend(self._to_dicts(rows, state.num_prompt_logprobs))

    def _to_dicts(self, rows: LogprobsRows, top_n: int | None) -> list[dict[int, Logprob]]:
        """Column 0 is the chosen token (with its rank); then the top `top_n` (None: all)."""
        result = []
        end = None if top_n is None else top_n + 1
        for ids, logprobs, chosen_rank in zip(*rows, strict=True):
            entry = {ids[0]: Logprob(logprobs[0], chosen_rank, self._decode(ids[0]))}
            top = zip(ids[1:end], logprobs[1:end], strict=True)
            for rank, (token, logprob) in enumerate(top, 1):
                entry.setdefault(token, Logprob(logprob, rank, self._decode(token)))
            result.append(entry)
        return result

    def _decode(self, token_id: int) -> str | None:
        return None if self.tokenizer is None else self.tokenizer.decode([token_id])
