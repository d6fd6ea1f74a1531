"""OpenTelemetry tracing and the trace-context hops that no instrumentation does for us.

The trace of one upload starts at the client, travels in the S3 object's metadata
(`x-amz-meta-traceparent`) and then in every SQS message's attributes; botocore's
instrumentation does not propagate through SQS, so we inject and extract here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
TRACE_KEYS = ("traceparent", "tracestate")


def configure_tracing(service: str, exporter: SpanExporter | None = None) -> TracerProvider:
    """Install a tracer provider; OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter is None and os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def tracer() -> trace.Tracer:
    return trace.get_tracer("ingest")


def current_carrier() -> dict[str, str]:
    """The current trace context as `traceparent`/`tracestate` strings."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


def context_from_carrier(carrier: Mapping[str, str]) -> otel_context.Context:
    return _PROPAGATOR.extract(dict(carrier))


def sqs_attributes(carrier: Mapping[str, str]) -> dict[str, Any]:
    """SQS MessageAttributes for a carrier (2 of SQS's 10 attributes at most)."""
    return {k: {"DataType": "String", "StringValue": v} for k, v in carrier.items() if v}


def carrier_from_sqs(attributes: Mapping[str, Any]) -> dict[str, str]:
    return {
        k: str(attributes[k]["StringValue"])
        for k in TRACE_KEYS
        if k in attributes and "StringValue" in attributes[k]
    }


def trace_id_of(carrier: Mapping[str, str]) -> str | None:
    context = trace.get_current_span(context_from_carrier(carrier)).get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
