"""Request tracing with OpenTelemetry (vLLM's tracing.py): one `llm_request` span per request.

The span starts at the request's arrival, ends when it finishes, takes its parent from the
incoming W3C `traceparent` header, and carries vLLM's `gen_ai.*` attributes (ids, sampling
parameters, token counts and latencies). Spans go to `observability.otlp_traces_endpoint` over
OTLP/HTTP (protobuf). OpenTelemetry is the optional `tracing` extra; config validation refuses an
endpoint without it (see `check_tracing_installed`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from vllm_hydra.metrics.stats import FinishedRequestStats, RequestStateStats
    from vllm_hydra.sampling_params import SamplingParams

SPAN_NAME = "llm_request"
TRACE_HEADERS = ("traceparent", "tracestate")


class SpanAttributes:
    """vLLM's span attribute names (OpenTelemetry's gen_ai semantic conventions)."""

    GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
    GEN_AI_REQUEST_ID = "gen_ai.request.id"
    GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
    GEN_AI_REQUEST_TOP_P = "gen_ai.request.top_p"
    GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
    GEN_AI_REQUEST_N = "gen_ai.request.n"
    GEN_AI_USAGE_PROMPT_TOKENS = "gen_ai.usage.prompt_tokens"
    GEN_AI_USAGE_COMPLETION_TOKENS = "gen_ai.usage.completion_tokens"
    GEN_AI_RESPONSE_FINISH_REASON = "gen_ai.response.finish_reasons"
    GEN_AI_LATENCY_TIME_IN_QUEUE = "gen_ai.latency.time_in_queue"
    GEN_AI_LATENCY_TIME_TO_FIRST_TOKEN = "gen_ai.latency.time_to_first_token"
    GEN_AI_LATENCY_E2E = "gen_ai.latency.e2e"
    GEN_AI_LATENCY_TIME_IN_MODEL_PREFILL = "gen_ai.latency.time_in_model_prefill"
    GEN_AI_LATENCY_TIME_IN_MODEL_DECODE = "gen_ai.latency.time_in_model_decode"
    GEN_AI_LATENCY_TIME_IN_MODEL_INFERENCE = "gen_ai.latency.time_in_model_inference"


def extract_trace_headers(headers: Mapping[str, str]) -> dict[str, str] | None:
    """The W3C trace-context headers of an HTTP request (None if it has none)."""
    found = {name: headers[name] for name in TRACE_HEADERS if name in headers}
    return found or None


def init_tracer_provider(otlp_traces_endpoint: str) -> TracerProvider:
    """A tracer provider that batches spans to the OTLP/HTTP endpoint. The server owns it (no
    global provider), so several servers in one process each trace to their own endpoint."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "vllm_hydra"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(otlp_traces_endpoint)))
    return provider


class RequestTracer:
    """Turns a finished request's stats into its span."""

    def __init__(self, provider: TracerProvider, served_model_name: str) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("vllm_hydra.engine")
        self.served_model_name = served_model_name

    def trace_request(
        self,
        request_id: str,
        params: SamplingParams,
        finished: FinishedRequestStats,
        req_stats: RequestStateStats,
        trace_headers: Mapping[str, str] | None,
    ) -> None:
        from opentelemetry.trace import SpanKind
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        context = TraceContextTextMapPropagator().extract(dict(trace_headers or {}))
        start_ns = int(req_stats.arrival_time * 1e9)
        span = self.tracer.start_span(
            SPAN_NAME, context=context, kind=SpanKind.SERVER, start_time=start_ns
        )
        span.set_attributes(self._attributes(request_id, params, finished))
        span.end(end_time=time.time_ns())

    def _attributes(
        self, request_id: str, params: SamplingParams, finished: FinishedRequestStats
    ) -> dict[str, str | int | float]:
        attrs: dict[str, str | int | float] = {
            SpanAttributes.GEN_AI_RESPONSE_MODEL: self.served_model_name,
            SpanAttributes.GEN_AI_REQUEST_ID: request_id,
            SpanAttributes.GEN_AI_REQUEST_TEMPERATURE: params.temperature,
            SpanAttributes.GEN_AI_REQUEST_TOP_P: params.top_p,
            SpanAttributes.GEN_AI_REQUEST_N: params.n,
            SpanAttributes.GEN_AI_USAGE_PROMPT_TOKENS: finished.num_prompt_tokens,
            SpanAttributes.GEN_AI_USAGE_COMPLETION_TOKENS: finished.num_generation_tokens,
            SpanAttributes.GEN_AI_RESPONSE_FINISH_REASON: str(finished.finish_reason),
            SpanAttributes.GEN_AI_LATENCY_TIME_IN_QUEUE: finished.queued_time,
            SpanAttributes.GEN_AI_LATENCY_TIME_TO_FIRST_TOKEN: finished.first_token_latency,
            SpanAttributes.GEN_AI_LATENCY_E2E: finished.e2e_latency,
            SpanAttributes.GEN_AI_LATENCY_TIME_IN_MODEL_PREFILL: finished.prefill_time,
            SpanAttributes.GEN_AI_LATENCY_TIME_IN_MODEL_DECODE: finished.decode_time,
            SpanAttributes.GEN_AI_LATENCY_TIME_IN_MODEL_INFERENCE: finished.inference_time,
        }
        if params.max_tokens is not None:
            attrs[SpanAttributes.GEN_AI_REQUEST_MAX_TOKENS] = params.max_tokens
        return attrs

    def shutdown(self) -> None:
        """Flush the spans still batched, then stop exporting."""
        self.provider.shutdown()
