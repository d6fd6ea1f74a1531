"""OpenTelemetry tracing and the trace-context hops that no instrumentation does for us.

The trace of one upload starts at the client, travels in the S3 object's metadata
(`x-amz-meta-traceparent`) and then in every SQS message's attributes; botocore's
instrumentation does not propagate through SQS, so we inject and extract here.

Spans follow the OpenTelemetry messaging conventions: `send <queue>` (PRODUCER, one per
SendMessageBatch, its context is every message's creation context), `process <queue>`
(CONSUMER, child of and linked to the message's creation context) and `settle <queue>`
(CLIENT, one per DeleteMessageBatch, linked to the process span of every message it
deletes, whatever their traces).
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
from opentelemetry.trace import Link, SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from ingest_common.telemetry.resource import build_resource

_PROPAGATOR = TraceContextTextMapPropagator()
TRACE_KEYS = ("traceparent", "tracestate")
SQS_MAX_ATTRIBUTES = 10  # SQS's limit of message attributes per message
MESSAGING_SYSTEM = "aws_sqs"


def configure_tracing(
    service: str, exporter: SpanExporter | None = None, *, resource: Resource | None = None
) -> TracerProvider:
    """Install a tracer provider; OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set.

    The OTLP exporter reads the standard variables itself (OTEL_EXPORTER_OTLP_*_ENDPOINT,
    _HEADERS, _TIMEOUT, _COMPRESSION), and the batch processor OTEL_BSP_*.
    """
    provider = TracerProvider(resource=resource or build_resource(service))
    if exporter is None and otlp_enabled("traces"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def otlp_enabled(signal: str) -> bool:
    """OTLP export of `signal` (traces, metrics) is on when an endpoint is configured."""
    if os.environ.get(f"OTEL_{signal.upper()}_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    )


_tracer: tuple[trace.TracerProvider, trace.Tracer] | None = None


def tracer() -> trace.Tracer:
    """The "ingest" tracer of the installed provider. Made once per provider: the SDK's
    get_tracer builds a new Tracer every call, about a quarter of what a span costs."""
    global _tracer
    provider = trace.get_tracer_provider()
    if _tracer is None or _tracer[0] is not provider:  # tests replace the provider
        _tracer = (provider, provider.get_tracer("ingest"))
    return _tracer[1]


def current_carrier() -> dict[str, str]:
    """The current trace context as `traceparent`/`tracestate` strings."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


def context_from_carrier(carrier: Mapping[str, str]) -> otel_context.Context:
    return _PROPAGATOR.extract(dict(carrier))


def span_context_of(carrier: Mapping[str, str]) -> SpanContext:
    return trace.get_current_span(context_from_carrier(carrier)).get_span_context()


def links_to(*contexts: SpanContext | None) -> list[Link]:
    """Links to the valid, distinct span contexts given (in order)."""
    seen: set[tuple[int, int]] = set()
    links: list[Link] = []
    for context in contexts:
        if context is None or not context.is_valid:
            continue
        if (key := (context.trace_id, context.span_id)) not in seen:
            seen.add(key)
            links.append(Link(context))
    return links


def sqs_attributes(carrier: Mapping[str, str]) -> dict[str, Any]:
    """SQS MessageAttributes for a carrier (2 of SQS's 10 attributes at most)."""
    return {
        k: {"DataType": "String", "StringValue": carrier[k]} for k in TRACE_KEYS if carrier.get(k)
    }


def carrier_from_sqs(attributes: Mapping[str, Any]) -> dict[str, str]:
    return {
        k: str(attributes[k]["StringValue"])
        for k in TRACE_KEYS
        if k in attributes and "StringValue" in attributes[k]
    }


def trace_id_of(carrier: Mapping[str, str]) -> str | None:
    context = span_context_of(carrier)
    return format_trace_id(context) if context.is_valid else None


def format_trace_id(context: SpanContext) -> str:
    return format(context.trace_id, "032x")


def messaging_attributes(
    queue: str, operation: str, name: str, **extra: Any
) -> dict[str, AttributeValue]:
    """Attributes of a messaging span (operation: send, receive, process or settle)."""
    return {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.type": operation,
        "messaging.operation.name": name,
        "messaging.destination.name": queue,
        **extra,
    }
