"""`encode_spans` writes what the SDK's OTLP encoder writes, byte for byte, for every kind of
span, attribute value, event, link, status, scope and resource the SDK can hand it."""

from __future__ import annotations

import importlib
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from ingest_cli.trace import OtlpReceiver
from ingest_common.telemetry.otlp_spans import SpanExporter, encode_spans
from ingest_common.telemetry.resource import build_resource
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import AttributeValue

from tests.conftest import ROOT

REMOTE = SpanContext(
    0x0AF7651916CD43DD8448EB211C80319C,
    0xB7AD6B7169203331,
    is_remote=True,
    trace_flags=TraceFlags(1),
    trace_state=TraceState([("vendor", "a1"), ("other", "b-2")]),
)
VALUES: dict[str, AttributeValue] = {
    "text": "ünïcode ✓",
    "empty": "",
    "long": "x" * 300,  # a length over one byte's varint
    "yes": True,
    "no": False,
    "zero": 0,
    "small": 7,
    "negative": -1,
    "int64 max": 2**63 - 1,
    "int64 min": -(2**63),
    "float": 3.25,
    "negative zero": -0.0,
    "infinite": math.inf,
    "floats": (0.5, -2.0),
    "ints": (1, 2**40, -3),
    "bools": (True, False),
    "strings": ("a", "", "c"),
    "nothing": (),
}


def spans_of(provider: TracerProvider, exporter: InMemorySpanExporter) -> Sequence[ReadableSpan]:
    plain = provider.get_tracer("plain")
    scoped = provider.get_tracer(
        "scoped", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.21.0",
        attributes={"scope.attribute": "s"},
    )  # fmt: skip
    for kind in SpanKind:
        with plain.start_as_current_span(f"kind {kind.name}", kind=kind):
            pass
    with scoped.start_as_current_span("", attributes=VALUES) as root:  # no name: left out
        root.add_event("happened", {"n": 1}, timestamp=1_700_000_000_000_000_001)
        root.add_event("")
        with scoped.start_as_current_span(
            "child", links=[Link(REMOTE, {"why": "batched"}), Link(root.get_span_context())]
        ) as child:
            child.set_status(Status(StatusCode.ERROR, "it broke: ✗"))
        with scoped.start_as_current_span("fine") as fine:
            fine.set_status(Status(StatusCode.OK))
    remote = trace.set_span_in_context(trace.NonRecordingSpan(REMOTE))
    plain.start_span("remote parent", context=remote).end()
    return exporter.get_finished_spans()


def recorded(
    limits: SpanLimits | None = None, resource: Resource | None = None
) -> Sequence[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=resource or build_resource("unit"), span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return spans_of(provider, exporter)


def assert_same_bytes(spans: Sequence[ReadableSpan]) -> None:
    ours, theirs = encode_spans(spans), sdk_encode(spans).SerializePartialToString()
    if ours != theirs:  # say which field differs before failing on the bytes
        assert ExportTraceServiceRequest.FromString(ours) == ExportTraceServiceRequest.FromString(
            theirs
        )
    assert ours == theirs


def test_every_kind_of_span_and_value_encodes_as_the_sdk_does() -> None:
    spans = recorded()
    assert len(spans) == 9
    assert_same_bytes(spans)


def test_dropped_attributes_events_and_links_are_counted_as_the_sdk_does() -> None:
    spans = recorded(SpanLimits(max_span_attributes=3, max_events=1, max_links=1,
                                max_event_attributes=0, max_link_attributes=0))  # fmt: skip
    assert any(span.dropped_attributes and span.dropped_events for span in spans)
    assert_same_bytes(spans)


def test_spans_of_several_resources_and_scopes_group_as_the_sdk_does() -> None:
    first = recorded()
    second = recorded(resource=Resource({"service.name": "other"}, schema_url="https://s/1"))
    mixed = [span for pair in zip(first, second, strict=True) for span in pair]
    assert_same_bytes(mixed)
    assert len(ExportTraceServiceRequest.FromString(encode_spans(mixed)).resource_spans) == 2


def test_values_only_a_hand_made_span_can_hold() -> None:
    span = ReadableSpan(
        name="hand made",
        context=REMOTE,
        parent=None,
        resource=Resource({}),
        attributes={"bytes": b"\x00\xff", "no bytes": b"", "none": None, "": "no key",
                    "map": {"a": 1, "b": ["x"]}},
        events=(Event("e", {"nested": {"k": 2.5}}, timestamp=5),),
        kind=SpanKind.SERVER,
        status=Status(StatusCode.UNSET),
        start_time=0,  # a default: left out
        end_time=2,
        instrumentation_scope=InstrumentationScope(""),
    )  # fmt: skip
    assert_same_bytes([span])


def test_repeated_values_encode_as_the_sdk_does_equal_or_not_and_past_the_cache() -> None:
    """Scalar key/values are cached by their encoding; equal values of other types (True and
    1, False and 0), other tags (a span's, an event's, a link's) and an overflowing cache must
    still write what the SDK writes."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=build_resource("unit"))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    for value in (True, 1, False, 0, "1", True):
        with tracer.start_as_current_span("same key", attributes={"k": value}) as span:
            span.add_event("e", {"k": value})
            tracer.start_span("linked", links=[Link(span.get_span_context(), {"k": value})]).end()
    for n in range(5000):  # more distinct values than the cache keeps
        tracer.start_span("distinct", attributes={"n": n, "queue": "ingest-render"}).end()
    spans = exporter.get_finished_spans()
    for start in range(0, len(spans), 512):
        assert_same_bytes(spans[start : start + 512])


def test_a_value_that_cannot_be_encoded_is_left_out_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    span = ReadableSpan(
        name="too big",
        context=REMOTE,
        resource=Resource({}),
        attributes={"kept": 1, "too big": 2**64, "after": "kept too"},
        start_time=1,
        end_time=2,
    )
    with caplog.at_level(logging.ERROR):
        assert_same_bytes([span])
    decoded = ExportTraceServiceRequest.FromString(encode_spans([span]))
    keys = [kv.key for kv in decoded.resource_spans[0].scope_spans[0].spans[0].attributes]
    assert keys == ["kept", "after"]
    assert "Failed to encode key too big" in caplog.text


def test_the_exporter_drops_a_batch_over_its_size_limit_without_sending_it() -> None:
    spans = recorded()
    # Nothing listens on port 9 (discard): sending would fail too, but only after a try.
    exporter = SpanExporter(endpoint="http://127.0.0.1:9/v1/traces", max_request_size=100)
    started = time.monotonic()
    assert exporter.export(spans) is SpanExportResult.FAILURE
    assert time.monotonic() - started < 0.5
    exporter.shutdown()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped


def test_the_exporter_reports_an_endpoint_that_refuses() -> None:
    exporter = SpanExporter(endpoint="http://127.0.0.1:9/v1/traces", timeout=1)
    assert exporter.export(recorded()) is SpanExportResult.FAILURE
    exporter.shutdown()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped
    assert exporter.export(recorded()) is SpanExportResult.FAILURE  # and once shut down


def test_the_bench_rebuilds_the_spans_a_receiver_wrote(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    bench = importlib.import_module("otlp_spans")
    spans = bench.processor_like_spans(images=2)
    with OtlpReceiver(tmp_path / "spans.jsonl") as receiver:
        exporter = SpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        exporter.shutdown()  # type: ignore[no-untyped-call]  # the SDK leaves it untyped
    rebuilt = bench.recorded_spans(receiver.path)

    def shape(span: ReadableSpan) -> tuple[object, ...]:
        parent = span.parent.span_id if span.parent else None
        links = [link.context.span_id for link in span.links]
        return span.name, span.kind, dict(span.attributes or {}), parent, links, span.end_time

    assert sorted(map(shape, rebuilt), key=repr) == sorted(map(shape, spans), key=repr)
    assert bench.encode_spans(rebuilt) == bench.sdk_encode(rebuilt).SerializePartialToString()
