"""Tracing: one `llm_request` span per request, parented by the incoming W3C `traceparent`,
with vLLM's gen_ai.* attributes. The server runs in-process (the app over httpx's ASGI
transport, the engine in its own process); an InMemorySpanExporter added to the server's tracer
provider sees the spans, and a local OTLP/HTTP sink checks they are also exported to
`observability.otlp_traces_endpoint`. Also: observability.metrics=false removes /metrics."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

pytest.importorskip("opentelemetry.sdk.trace", reason="needs the tracing extra")

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind

from vllm_hydra.config import compose_config
from vllm_hydra.engine.async_llm import AsyncLLM
from vllm_hydra.entrypoints.api_server import build_app
from vllm_hydra.tracing import SPAN_NAME, SpanAttributes

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
PARENT_SPAN_IDS = [0xB7AD6B7169203330 + i for i in range(3)]
MAX_TOKENS = 8


class OtlpSink(ThreadingHTTPServer):
    """A minimal OTLP/HTTP receiver: keeps the spans of every export it is sent."""

    def __init__(self) -> None:
        self.spans: list = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    for scope_spans in resource_spans.scope_spans:
                        sink.spans.extend(scope_spans.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    server = OtlpSink()
    yield server
    server.shutdown()
    server.server_close()


def _traceparent(span_id: int) -> str:
    return f"00-{TRACE_ID:032x}-{span_id:016x}-01"


async def _complete(app: object, traceparent: str) -> dict:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://server") as client:
        body = {"prompt": "Once upon a time", "max_tokens": MAX_TOKENS, "temperature": 0.5}
        body |= {"top_p": 0.9, "ignore_eos": True}
        response = await client.post(
            "/v1/completions", json=body, headers={"traceparent": traceparent}
        )
        assert response.status_code == 200, response.text
        assert (await client.get("/metrics")).status_code == 404  # metrics=false
        return response.json()


@pytest.mark.asyncio
async def test_one_span_per_request_with_the_traceparent_as_parent(sink: OtlpSink) -> None:
    config = compose_config(
        [
            f"observability.otlp_traces_endpoint={sink.endpoint}",
            "observability.metrics=false",
            "observability.log_stats=false",
        ]
    )
    engine = AsyncLLM.from_vllm_config(config)
    memory = InMemorySpanExporter()
    try:
        engine.tracer.provider.add_span_processor(SimpleSpanProcessor(memory))
        app = build_app(engine, config)
        answers = [await _complete(app, _traceparent(span_id)) for span_id in PARENT_SPAN_IDS]
    finally:
        engine.shutdown()  # flushes the batched spans to the sink

    spans = memory.get_finished_spans()
    assert len(spans) == len(PARENT_SPAN_IDS)
    for span, parent_span_id, answer in zip(spans, PARENT_SPAN_IDS, answers, strict=True):
        assert span.name == SPAN_NAME and span.kind is SpanKind.SERVER
        assert span.context.trace_id == TRACE_ID
        assert span.parent is not None and span.parent.span_id == parent_span_id
        attrs = span.attributes
        assert attrs[SpanAttributes.GEN_AI_REQUEST_ID] == f"{answer['id']}-0"
        assert attrs[SpanAttributes.GEN_AI_RESPONSE_MODEL] == "tiny"
        assert attrs[SpanAttributes.GEN_AI_REQUEST_MAX_TOKENS] == MAX_TOKENS
        assert attrs[SpanAttributes.GEN_AI_REQUEST_TEMPERATURE] == 0.5
        assert attrs[SpanAttributes.GEN_AI_REQUEST_TOP_P] == pytest.approx(0.9)
        assert attrs[SpanAttributes.GEN_AI_USAGE_PROMPT_TOKENS] == answer["usage"]["prompt_tokens"]
        assert attrs[SpanAttributes.GEN_AI_USAGE_COMPLETION_TOKENS] == MAX_TOKENS
        ttft = attrs[SpanAttributes.GEN_AI_LATENCY_TIME_TO_FIRST_TOKEN]
        assert 0 < ttft <= attrs[SpanAttributes.GEN_AI_LATENCY_E2E]
        assert attrs[SpanAttributes.GEN_AI_LATENCY_TIME_IN_QUEUE] >= 0
        assert attrs[SpanAttributes.GEN_AI_LATENCY_TIME_IN_MODEL_DECODE] > 0
        assert span.start_time < span.end_time

    # The same spans went over OTLP/HTTP to the configured endpoint.
    exported = {bytes(s.parent_span_id).hex() for s in sink.spans if s.name == SPAN_NAME}
    assert exported == {f"{span_id:016x}" for span_id in PARENT_SPAN_IDS}
    assert {bytes(s.trace_id).hex() for s in sink.spans} == {f"{TRACE_ID:032x}"}
