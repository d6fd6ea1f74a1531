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

import contextlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    Decision,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
    _get_from_env_or_default,
    _get_parent_trace_state,
)
from opentelemetry.trace import Link, SpanContext, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes, AttributeValue

from ingest_common.telemetry.resource import build_resource

_PROPAGATOR = TraceContextTextMapPropagator()
TRACE_KEYS = ("traceparent", "tracestate")
SQS_MAX_ATTRIBUTES = 10  # SQS's limit of message attributes per message
MESSAGING_SYSTEM = "aws_sqs"
# Set by `messaging_attributes` on our messaging spans (send, process, settle) only; the
# instrumentor's SQS and SNS call spans carry `messaging.system` too, but not this.
MESSAGING_OPERATION = "messaging.operation.type"


def configure_tracing(
    service: str,
    exporter: SpanExporter | None = None,
    *,
    resource: Resource | None = None,
    client_spans: float,
) -> TracerProvider:
    """Install a tracer provider; OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    ``client_spans``: the share of traces that keep their calls' spans (`ClientSpanSampler`).

    The OTLP exporter reads the standard variables itself (OTEL_EXPORTER_OTLP_*_ENDPOINT,
    _HEADERS, _TIMEOUT, _COMPRESSION), the batch processor OTEL_BSP_*, and the sampler
    OTEL_TRACES_SAMPLER (parent-based always-on by default).
    """
    provider = TracerProvider(
        resource=resource or build_resource(service),
        sampler=ClientSpanSampler(client_spans, _get_from_env_or_default()),
    )
    if exporter is None and otlp_enabled("traces"):
        from ingest_common.telemetry.otlp_spans import SpanExporter as OtlpSpanExporter

        exporter = OtlpSpanExporter()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


class ClientSpanSampler(Sampler):
    """``delegate``'s decisions, except that only ``share`` of traces keep their calls'
    spans: the CLIENT spans that are not our messaging spans (S3, SQS, SNS and SQL calls,
    about half of an upload's spans). The share is picked by
    trace ID, as TraceIdRatioBased picks traces, so every service keeps or leaves out the
    same uploads' calls: a trace has all of them or none. Messaging (`send`, `process`,
    `settle`), render and handler spans are the delegate's to decide, as before.

    A call made outside any span gets none: it would be a trace of its own, one span long
    (the outbox publisher's polls, a pool's housekeeping: thousands a day per process, the
    instrumented libraries' doing), where our own clients already make no span
    (`call_spans_under`)."""

    def __init__(self, share: float, delegate: Sampler) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"the share of traces with client spans is in [0, 1], got {share}")
        self.share = share
        self._bound = TraceIdRatioBased.get_bound_for_rate(share)
        self._delegate = delegate

    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if (
            kind is SpanKind.CLIENT
            and not (attributes and MESSAGING_OPERATION in attributes)
            and (
                not self.keeps_calls(trace_id)
                or not trace.get_current_span(parent_context).get_span_context().is_valid
            )
        ):
            return SamplingResult(Decision.DROP, None, _get_parent_trace_state(parent_context))
        return self._delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def keeps_calls(self, trace_id: int) -> bool:
        """Whether the trace ``trace_id`` is one of those that keep their calls' spans."""
        return trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < self._bound

    def get_description(self) -> str:
        return f"ClientSpanSampler{{{self.share}, {self._delegate.get_description()}}}"


def call_spans_under(span: trace.Span) -> bool:
    """Whether a call made under ``span`` gets a span: ``span`` records, and its trace keeps
    its calls' spans (`ClientSpanSampler`). Asked before building a call span's attributes, so
    that a call whose span would be dropped builds nothing."""
    if not span.is_recording():
        return False
    sampler = getattr(trace.get_tracer_provider(), "sampler", None)
    return not isinstance(sampler, ClientSpanSampler) or sampler.keeps_calls(
        span.get_span_context().trace_id
    )


def instrumented_calls_under(span: trace.Span) -> contextlib.AbstractContextManager[None]:
    """What to run work under ``span`` in: as is if its calls get spans (`call_spans_under`),
    else with OpenTelemetry's instrumentations suppressed. Then asyncpg's and aiobotocore's
    skip their span work at its start; otherwise they build the span, attributes and context
    for the sampler to drop: 40 % of a query's client CPU."""
    if call_spans_under(span):
        return contextlib.nullcontext()
    return suppress_instrumentation()


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
        MESSAGING_OPERATION: operation,
        "messaging.operation.name": name,
        "messaging.destination.name": queue,
        **extra,
    }
