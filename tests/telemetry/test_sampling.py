"""ClientSpanSampler: a share of traces keeps its calls' spans; the rest of a trace stays."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from ingest_cli.main import build_parser
from ingest_common.telemetry.tracing import (
    ClientSpanSampler,
    call_spans_under,
    context_from_carrier,
    current_carrier,
    instrumented_calls_under,
    messaging_attributes,
)
from opentelemetry import trace
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, SamplingResult
from opentelemetry.trace import SpanKind


def provider_with(share: float, exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider(sampler=ClientSpanSampler(share, ParentBased(ALWAYS_ON)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def one_upload(tracer: trace.Tracer) -> None:
    """The spans an image's message makes in the processor, roughly."""
    with tracer.start_as_current_span("process ingest-render", kind=SpanKind.CONSUMER):
        with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT):
            pass
        with tracer.start_as_current_span("render svg"):
            tracer.start_span("render 64px png").end()
        tracer.start_span(
            "S3.PutObject", kind=SpanKind.CLIENT, attributes={"rpc.system": "aws-api"}
        ).end()
        # botocore's instrumentor names the queue on an SQS call's span: still a call.
        tracer.start_span(
            "SQS.GetQueueUrl",
            kind=SpanKind.CLIENT,
            attributes={"rpc.system": "aws-api", "messaging.system": "aws.sqs"},
        ).end()
        with tracer.start_as_current_span(
            "send ingest-preview",
            kind=SpanKind.PRODUCER,
            attributes=messaging_attributes("ingest-preview", "send", "SendMessageBatch"),
        ):
            pass
    # A settle span is CLIENT too, but a messaging span: always the delegate's to decide.
    tracer.start_span(
        "settle ingest-render",
        kind=SpanKind.CLIENT,
        attributes=messaging_attributes("ingest-render", "settle", "DeleteMessageBatch"),
    ).end()


def names(exporter: InMemorySpanExporter) -> list[str]:
    return sorted(s.name for s in exporter.get_finished_spans())


def test_no_share_leaves_out_calls_and_keeps_everything_else() -> None:
    exporter = InMemorySpanExporter()
    one_upload(provider_with(0.0, exporter).get_tracer("t"))
    assert names(exporter) == sorted(
        [
            "process ingest-render",
            "render svg",
            "render 64px png",
            "send ingest-preview",
            "settle ingest-render",
        ]
    )
    # What is left is one connected tree: the calls were leaves.
    kept = {s.context.span_id for s in exporter.get_finished_spans()}
    for span in exporter.get_finished_spans():
        assert span.parent is None or span.parent.span_id in kept


def test_the_whole_share_keeps_every_span() -> None:
    exporter = InMemorySpanExporter()
    one_upload(provider_with(1.0, exporter).get_tracer("t"))
    assert {"SELECT", "S3.PutObject", "SQS.GetQueueUrl"} <= set(names(exporter))
    assert len(names(exporter)) == 8


def test_a_share_picks_whole_traces_the_same_in_every_service() -> None:
    """Two providers stand for two services: the second continues each trace from a
    carrier, as a consumer does from a message, and keeps the calls of exactly the traces
    the first kept."""
    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    batcher = provider_with(0.5, first).get_tracer("batcher")
    processor = provider_with(0.5, second).get_tracer("processor")
    traces = 400
    for _ in range(traces):
        with batcher.start_as_current_span("batch upload"):
            for _ in range(3):
                batcher.start_span("S3.PutObject", kind=SpanKind.CLIENT).end()
            carrier = current_carrier()
        parent = context_from_carrier(carrier)
        with processor.start_as_current_span("process", context=parent, kind=SpanKind.CONSUMER):
            processor.start_span("SELECT", kind=SpanKind.CLIENT).end()

    def calls_per_trace(exporter: InMemorySpanExporter) -> dict[int, int]:
        counts: dict[int, int] = {}
        for span in exporter.get_finished_spans():
            calls = span.kind is SpanKind.CLIENT
            counts[span.context.trace_id] = counts.get(span.context.trace_id, 0) + calls
        return counts

    batcher_calls, processor_calls = calls_per_trace(first), calls_per_trace(second)
    assert len(batcher_calls) == len(processor_calls) == traces  # no trace lost its spans
    assert set(batcher_calls.values()) == {0, 3}  # a trace has all its calls or none
    kept = {t for t, n in batcher_calls.items() if n}
    assert kept == {t for t, n in processor_calls.items() if n}
    assert 0.35 * traces < len(kept) < 0.65 * traces  # random trace ids: about half


def test_a_call_outside_any_span_makes_no_trace_of_its_own() -> None:
    exporter = InMemorySpanExporter()
    tracer = provider_with(1.0, exporter).get_tracer("t")
    tracer.start_span("SELECT", kind=SpanKind.CLIENT).end()  # a poll, say: no trace around it
    with tracer.start_as_current_span("publish events"):
        tracer.start_span("SNS.PublishBatch", kind=SpanKind.CLIENT).end()
    # Under a context carried in from elsewhere (a message's), a call belongs to that trace.
    with tracer.start_as_current_span("batch upload"):
        carrier = current_carrier()
    tracer.start_span(
        "S3.GetObject", context=context_from_carrier(carrier), kind=SpanKind.CLIENT
    ).end()
    assert names(exporter) == ["S3.GetObject", "SNS.PublishBatch", "batch upload", "publish events"]


def test_the_configured_sampler_still_decides_the_rest() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ClientSpanSampler(1.0, ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    one_upload(provider.get_tracer("t"))
    assert names(exporter) == []


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_a_share_is_a_fraction(share: float) -> None:
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        ClientSpanSampler(share, ALWAYS_ON)


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> dict[str, TracerProvider]:
    """Stand-in for the process's global provider, as a service installs it."""
    providers: dict[str, TracerProvider] = {}
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: providers["global"])
    return providers


@pytest.mark.parametrize(("share", "expected"), [(0.0, False), (1.0, True)])
def test_call_spans_under_follows_the_installed_share(
    installed: dict[str, TracerProvider], share: float, expected: bool
) -> None:
    installed["global"] = provider = provider_with(share, InMemorySpanExporter())
    with provider.get_tracer("t").start_as_current_span("process") as span:
        assert call_spans_under(span) is expected
    assert call_spans_under(trace.INVALID_SPAN) is False  # outside a trace: never


def test_the_demo_keeps_every_call_span_other_commands_follow_the_setting() -> None:
    parser = build_parser()
    assert parser.parse_args(["demo"]).client_spans == 1.0
    assert not hasattr(parser.parse_args(["trace", "some-upload"]), "client_spans")


def names_asked(sampler: ClientSpanSampler) -> list[str]:
    """The name of every span ``sampler`` is asked about from now on (the SDK passes the name
    third)."""
    asked: list[str] = []
    decide = sampler.should_sample

    def should_sample(*args: Any, **kwargs: Any) -> SamplingResult:
        asked.append(kwargs["name"] if "name" in kwargs else args[2])
        return decide(*args, **kwargs)

    sampler.should_sample = should_sample  # type: ignore[method-assign]
    return asked


@pytest.mark.parametrize("share", [0.0, 1.0])
async def test_a_trace_without_call_spans_runs_its_queries_uninstrumented(
    installed: dict[str, TracerProvider], db: asyncpg.Pool, share: float
) -> None:
    sampler = ClientSpanSampler(share, ParentBased(ALWAYS_ON))
    asked = names_asked(sampler)
    exporter = InMemorySpanExporter()
    installed["global"] = provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    instrumentor.instrument(tracer_provider=provider)
    try:
        with provider.get_tracer("t").start_as_current_span("process ingest-render") as span:
            with instrumented_calls_under(span):
                assert is_instrumentation_enabled() is (share == 1.0)
                async with db.acquire() as connection:
                    assert await connection.fetchval("SELECT 41 + 1") == 42
            assert is_instrumentation_enabled()  # only the work under the span
    finally:
        instrumentor.uninstrument()
    if share == 1.0:
        assert asked == ["process ingest-render", "SELECT"]
        assert names(exporter) == ["SELECT", "process ingest-render"]
    else:
        # Not built and then dropped: the instrumentation never asked for a span.
        assert asked == ["process ingest-render"]
        assert names(exporter) == ["process ingest-render"]
