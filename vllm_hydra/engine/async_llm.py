"""`AsyncLLM`: the asyncio engine client the OpenAI server drives (vLLM's v1/engine/async_llm.py).

The engine core runs in its own process (`AsyncMPClient`). `generate()` validates and sends a
request, then yields its `RequestOutput`s; an output-handler task pulls `EngineCoreOutputs`,
runs the `OutputProcessor` and hands each request its outputs through a
`RequestOutputCollector`. n > 1 runs as n child requests f"{i}_{request_id}", fanned back in.
Cancelling a `generate()` (client disconnect) aborts the request so its KV blocks are freed.
With stats on, each batch of outputs also feeds the stat loggers (Prometheus metrics and the
periodic stats line, `do_log_stats`), and finished requests become spans when tracing is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from vllm_hydra.config.support import check_supported
from vllm_hydra.config.vllm import VllmConfig
from vllm_hydra.engine.core_client import make_async_mp_client
from vllm_hydra.engine.exceptions import (
    EngineDeadError,
    EngineRequestError,
    EngineShutdownError,
)
from vllm_hydra.engine.input_processor import InputProcessor
from vllm_hydra.engine.messages import EngineCoreOutputs, EngineCoreRequest
from vllm_hydra.engine.output_collector import RequestOutputCollector
from vllm_hydra.engine.output_processor import (
    OutputProcessor,
    OutputProcessorOutput,
    ParentRequest,
    child_sampling_params,
)
from vllm_hydra.lora.request import LoRARequest
from vllm_hydra.metrics.loggers import StatLoggerManager
from vllm_hydra.metrics.stats import IterationStats
from vllm_hydra.request_output import RequestOutput
from vllm_hydra.sampling_params import SamplingParams
from vllm_hydra.tokenizer import get_tokenizer

if TYPE_CHECKING:
    from vllm_hydra.tracing import RequestTracer

logger = logging.getLogger(__name__)


class AsyncLLM:
    def __init__(self, vllm_config: VllmConfig) -> None:
        check_supported(vllm_config)
        self.vllm_config = vllm_config
        self.tokenizer = get_tokenizer(vllm_config)
        self.input_processor = InputProcessor(vllm_config, self.tokenizer)
        self.log_stats = vllm_config.observability.collect_stats
        self.logger_manager = _make_logger_manager(vllm_config)
        self.tracer = _make_tracer(vllm_config)
        self.output_processor = OutputProcessor(self.tokenizer, self.log_stats, self.tracer)
        self.engine_core = make_async_mp_client(vllm_config)
        self.num_gpu_blocks = self.engine_core.num_gpu_blocks
        if self.logger_manager is not None:
            self.logger_manager.log_engine_initialized(
                cache_config_info(vllm_config, self.num_gpu_blocks)
            )
        self._collectors: dict[str, RequestOutputCollector] = {}
        self._children: dict[str, list[str]] = {}  # request id -> its engine request ids
        self._output_handler: asyncio.Task | None = None
        self._stopping: EngineShutdownError | None = None  # set by abort_all

    @classmethod
    def from_vllm_config(cls, vllm_config: VllmConfig) -> AsyncLLM:
        """Start the engine process and wait until it is ready."""
        return cls(vllm_config)

    @property
    def errored(self) -> bool:
        return self.engine_core.errored

    @property
    def dead_error(self) -> Exception | None:
        return self.engine_core.dead_error

    async def generate(
        self,
        prompt_token_ids: list[int],
        sampling_params: SamplingParams,
        request_id: str,
        prompt: str | None = None,
        trace_headers: Mapping[str, str] | None = None,
        lora_request: LoRARequest | None = None,
    ) -> AsyncIterator[RequestOutput]:
        """Yield the request's outputs per `sampling_params.output_kind`, the last finished.
        Validation errors (SamplingParamsError) raise before anything reaches the engine.
        `trace_headers` (W3C traceparent/tracestate) parent the request's span;
        `lora_request` names the adapter to run with (None: the base model)."""
        collector = await self._add_request(
            prompt_token_ids, sampling_params, request_id, prompt, trace_headers, lora_request
        )
        try:
            finished = False
            while not finished:
                output = await collector.get()
                finished = output.finished
                yield output
        except (asyncio.CancelledError, GeneratorExit):
            await self.abort(request_id)
            raise
        finally:
            self._forget(request_id, collector)

    async def _add_request(
        self,
        prompt_token_ids: list[int],
        params: SamplingParams,
        request_id: str,
        prompt: str | None,
        trace_headers: Mapping[str, str] | None = None,
        lora_request: LoRARequest | None = None,
    ) -> RequestOutputCollector:
        if self.dead_error is not None:
            raise self.dead_error
        if self._stopping is not None:
            raise self._stopping
        if request_id in self._collectors:
            raise ValueError(f"Request {request_id} is already running.")
        requests = self._make_requests(prompt_token_ids, params, request_id, lora_request)
        self._ensure_output_handler()
        parent = ParentRequest(request_id, prompt, prompt_token_ids, params.n)
        collector = RequestOutputCollector(params.output_kind)
        self._collectors[request_id] = collector
        self._children[request_id] = [r.request_id for r in requests]
        for index, request in enumerate(requests):
            self.output_processor.add_request(request, parent, index, trace_headers)
        for request in requests:
            await self.engine_core.add_request_async(request)
        return collector

    def _make_requests(
        self,
        prompt_token_ids: list[int],
        params: SamplingParams,
        request_id: str,
        lora_request: LoRARequest | None = None,
    ) -> list[EngineCoreRequest]:
        """Validate everything first (the parent's n included), then build the children."""
        process = self.input_processor.process
        parent = process(request_id, prompt_token_ids, params, lora_request=lora_request)
        if params.n == 1:
            return [parent]
        return [
            process(
                f"{i}_{request_id}",
                prompt_token_ids,
                child_sampling_params(params, i),
                lora_request=lora_request,
            )
            for i in range(params.n)
        ]

    def _ensure_output_handler(self) -> None:
        if self._output_handler is None or self._output_handler.done():
            self._output_handler = asyncio.get_running_loop().create_task(self._handle_outputs())

    async def _handle_outputs(self) -> None:
        """Engine outputs -> RequestOutputs -> each request's collector; stop strings abort."""
        try:
            while True:
                outputs = await self.engine_core.get_output_async()
                processed = self._process_outputs(outputs)
                for output in processed.request_outputs:
                    collector = self._collectors.get(output.request_id)
                    if collector is not None:
                        collector.put(output)
                await self.engine_core.abort_requests_async(processed.reqs_to_abort)
                await self._fail_refused(processed.refused)
        except EngineDeadError as exc:
            self._fail_all(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not leave requests hanging
            logger.exception("AsyncLLM output handler failed.")
            self._fail_all(exc)

    async def _fail_refused(self, refused: dict[str, str]) -> None:
        """Requests the engine refused fail alone (their other sequences are aborted)."""
        for request_id, reason in refused.items():
            collector = self._collectors.get(request_id)
            if collector is not None:
                collector.put(EngineRequestError(reason))
            await self.abort(request_id)

    def _process_outputs(self, outputs: EngineCoreOutputs) -> OutputProcessorOutput:
        """Run the OutputProcessor over one engine step and feed the stat loggers."""
        iteration_stats = IterationStats() if self.log_stats and outputs.outputs else None
        processed = self.output_processor.process_outputs(
            outputs.outputs, outputs.timestamp, iteration_stats
        )
        if self.logger_manager is not None:
            self.logger_manager.record(
                outputs.scheduler_stats, iteration_stats, outputs.engine_index
            )
        return processed

    def do_log_stats(self) -> list[str]:
        """Write the periodic stats line(s) (the server calls this every stats_interval_s)."""
        return self.logger_manager.log() if self.logger_manager is not None else []

    def metrics_text(self) -> bytes:
        """The Prometheus metrics in text exposition format (observability.metrics=true)."""
        if self.logger_manager is None or self.logger_manager.prometheus is None:
            raise RuntimeError("Prometheus metrics are off (observability.metrics=false).")
        return self.logger_manager.prometheus.generate_latest()

    def _fail_all(self, error: Exception) -> None:
        for collector in self._collectors.values():
            collector.put(error)

    async def abort_all(self) -> None:
        """End every request in flight with EngineShutdownError (their streams close cleanly,
        not cancelled) and refuse new ones: the server is stopping."""
        self._stopping = EngineShutdownError()
        self._fail_all(self._stopping)
        children = [rid for ids in self._children.values() for rid in ids]
        self.output_processor.abort_requests(children)
        if children:
            with contextlib.suppress(EngineDeadError):  # a dead engine holds no blocks
                await self.engine_core.abort_requests_async(children)

    async def abort(self, request_id: str) -> None:
        """Stop a request: the engine frees its KV blocks; its generate() ends."""
        children = self._children.pop(request_id, [])
        self._collectors.pop(request_id, None)
        self.output_processor.abort_requests(children)
        if not children:
            return
        try:
            await self.engine_core.abort_requests_async(children)
            logger.info("Aborted request %s.", request_id)
        except EngineDeadError:
            pass  # a dead engine holds no blocks

    def _forget(self, request_id: str, collector: RequestOutputCollector) -> None:
        if self._collectors.get(request_id) is collector:
            del self._collectors[request_id]
            self._children.pop(request_id, None)

    async def get_stats(self) -> dict[str, Any]:
        """The engines' scheduler and KV cache stats (num_running, num_waiting,
        kv_cache_usage, num_free_blocks, num_total_blocks, prefix_cache_queries/hits,
        num_preemptions, num_finished_requests) summed over the dp engines (kv_cache_usage
        averaged), with each engine's own, labelled engine_index, under "engines"."""
        return aggregate_engine_stats(await self.get_engine_stats())

    async def get_engine_stats(self) -> list[dict[str, Any]]:
        """Each engine's SchedulerStats, by engine index (each labelled "engine_index")."""
        return await self.engine_core.call_utility_all_async("get_stats")

    async def add_lora(self, lora_request: LoRARequest) -> bool:
        """Read the adapter into every engine's workers now, not at its first request."""
        r = lora_request
        results = await self.engine_core.call_utility_all_async(
            "add_lora", r.lora_name, r.lora_int_id, r.lora_path
        )
        return all(results)

    async def remove_lora(self, lora_int_id: int) -> bool:
        """Drop the adapter from every engine's workers (its slot and host copy)."""
        return all(await self.engine_core.call_utility_all_async("remove_lora", lora_int_id))

    async def reset_prefix_cache(self) -> bool:
        results = await self.engine_core.call_utility_all_async("reset_prefix_cache")
        return all(results)

    def shutdown(self) -> None:
        """Stop the output handler and the engine process; in-flight generate()s raise
        EngineDeadError."""
        if self._output_handler is not None and not self._output_handler.done():
            self._output_handler.cancel()
        self.engine_core.shutdown()
        self._fail_all(EngineDeadError("The engine was shut down."))
        if self.tracer is not None:
            self.tracer.shutdown()


def _make_logger_manager(vllm_config: VllmConfig) -> StatLoggerManager | None:
    obs = vllm_config.observability
    if not (obs.metrics or obs.log_stats):
        return None
    return StatLoggerManager(
        vllm_config.served_model_name,
        vllm_config.model.max_model_len or 0,
        range(vllm_config.parallel.dp),
        log_stats=obs.log_stats,
        metrics=obs.metrics,
        max_lora=vllm_config.lora.max_loras if vllm_config.lora.enabled else 0,
    )


def cache_config_info(vllm_config: VllmConfig, num_gpu_blocks: int) -> dict[str, object]:
    """The labels of vllm:cache_config_info: every cache config field, and the block count."""
    cache = dataclasses.asdict(vllm_config.cache)
    info = {k: v.value if isinstance(v, enum.Enum) else v for k, v in cache.items()}
    return {**info, "num_gpu_blocks": num_gpu_blocks}


def _make_tracer(vllm_config: VllmConfig) -> RequestTracer | None:
    endpoint = vllm_config.observability.otlp_traces_endpoint
    if endpoint is None:
        return None
    from vllm_hydra.tracing import RequestTracer, init_tracer_provider

    return RequestTracer(init_tracer_provider(endpoint), vllm_config.served_model_name)


def aggregate_engine_stats(per_engine: list[dict[str, Any]]) -> dict[str, Any]:
    """One view of all dp engines: counts summed, fractions (kv_cache_usage) averaged; with
    dp=1 the same numbers as the engine's own."""
    totals: dict[str, Any] = {}
    for key, value in per_engine[0].items():
        if key == "engine_index" or not isinstance(value, int | float):
            continue  # nested stats (speculative decoding) stay per engine
        values = [stats[key] for stats in per_engine]
        if isinstance(value, dict):  # per LoRA adapter counts
            totals[key] = {k: sum(v.get(k, 0) for v in values) for v in values for k in v}
        elif isinstance(value, float):
            totals[key] = sum(values) / len(values)
        else:
            totals[key] = sum(values)
    return {**totals, "engines": per_engine}
