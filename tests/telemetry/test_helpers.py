"""Trace-context carriers, SQS attributes, links, resource, receiver and the span tree."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from ingest_cli.trace import OtlpReceiver, Span, format_tree, load_spans
from ingest_common.aws import Aws
from ingest_common.schemas.messages import IndexProduct
from ingest_common.telemetry.otlp_spans import SpanExporter as OtlpSpanExporter
from ingest_common.telemetry.resource import build_resource
from ingest_common.telemetry.tracing import (
    SQS_MAX_ATTRIBUTES,
    carrier_from_sqs,
    current_carrier,
    links_to,
    span_context_of,
    sqs_attributes,
    trace_id_of,
    tracer,
)
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import INVALID_SPAN_CONTEXT, Link, SpanKind

if TYPE_CHECKING:
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_carrier_round_trips_through_sqs_attributes() -> None:
    carrier = {"traceparent": TRACEPARENT, "tracestate": "vendor=1"}
    attributes = sqs_attributes(carrier)
    assert attributes == {
        "traceparent": {"DataType": "String", "StringValue": TRACEPARENT},
        "tracestate": {"DataType": "String", "StringValue": "vendor=1"},
    }
    assert carrier_from_sqs(attributes) == carrier
    assert trace_id_of(carrier) == "0af7651916cd43dd8448eb211c80319c"


def test_no_attribute_without_a_value_and_only_trace_keys() -> None:
    assert sqs_attributes({"traceparent": TRACEPARENT, "tracestate": ""}) == {
        "traceparent": {"DataType": "String", "StringValue": TRACEPARENT}
    }
    assert sqs_attributes({"other": "x"}) == {}
    assert sqs_attributes({}) == {}
    assert carrier_from_sqs({"ingest-error": {"DataType": "String", "StringValue": "x"}}) == {}
    assert trace_id_of({}) is None
    assert trace_id_of({"traceparent": "garbage"}) is None


def test_current_carrier_names_the_current_span() -> None:
    assert current_carrier() == {}
    with tracer().start_as_current_span("outer") as span:
        carrier = current_carrier()
    assert span_context_of(carrier).span_id == span.get_span_context().span_id
    assert "tracestate" not in carrier  # only present when there is a state to carry


def test_links_drop_invalid_and_repeated_contexts() -> None:
    context = span_context_of({"traceparent": TRACEPARENT})
    links = links_to(context, None, INVALID_SPAN_CONTEXT, context)
    assert [link.context for link in links] == [context]


async def test_every_sent_message_carries_its_send_span(
    aws: Aws, spans: InMemorySpanExporter
) -> None:
    messages = [
        IndexProduct(upload_id=uuid.UUID(int=i + 1), product_id=uuid.uuid4()) for i in range(12)
    ]
    with tracer().start_as_current_span("caller") as caller:
        await aws.send("ingest-index", messages)
    url = await aws.queue_url("ingest-index")
    received: list[MessageTypeDef] = []
    while len(received) < 12:
        response = await aws.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=1
        )
        received.extend(response.get("Messages", []))
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.force_flush()
    trace_id = caller.get_span_context().trace_id
    sends = [
        s
        for s in spans.get_finished_spans()
        if s.name == "send ingest-index" and s.context.trace_id == trace_id
    ]
    # One PRODUCER span per SendMessageBatch (10 + 2), child of the caller.
    assert sorted(batch_size(s) for s in sends) == [2, 10]
    assert all(s.kind is SpanKind.PRODUCER for s in sends)
    assert all(
        s.parent is not None and s.parent.span_id == caller.get_span_context().span_id
        for s in sends
    )
    send_ids = {s.context.span_id for s in sends}
    for message in received:
        attributes = message["MessageAttributes"]
        assert isinstance(attributes, dict)
        assert set(attributes) <= {"traceparent", "tracestate"}
        assert len(attributes) <= SQS_MAX_ATTRIBUTES
        context = span_context_of(carrier_from_sqs(attributes))
        assert context.trace_id == trace_id
        assert context.span_id in send_ids


def batch_size(span: ReadableSpan) -> int:
    """The number of messages a send span says its SendMessageBatch carried."""
    assert span.attributes is not None, f"span {span.name} has no attributes"
    count = span.attributes["messaging.batch.message_count"]
    assert isinstance(count, int), f"message count {count!r} is not an int"
    return count


def test_resource_names_the_service_and_the_process() -> None:
    attributes = build_resource("processor").attributes
    assert attributes["service.name"] == "processor"
    assert attributes["service.namespace"] == "ingest"
    assert {"service.version", "host.name", "process.pid"} <= set(attributes)


def test_the_resource_hashes_like_the_sdks_without_serialising_each_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry.sdk import resources

    resource = build_resource("processor")
    plain = Resource(resource.attributes, resource.schema_url)
    assert resource == plain
    assert hash(resource) == hash(plain)
    serialised: list[object] = []
    real_dumps = json.dumps

    def counting_dumps(*args: Any, **kwargs: Any) -> str:
        serialised.append(args)
        return real_dumps(*args, **kwargs)

    monkeypatch.setattr(resources, "dumps", counting_dumps)  # what Resource.__hash__ calls
    hashes = {hash(resource) for _ in range(100)}  # the OTLP encoder: once per span
    assert hashes == {hash(plain)}
    assert len(serialised) == 1, "only the plain resource's hash serialised its attributes"


def test_the_standard_variables_override_the_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ECS_CONTAINER_METADATA_URI_V4", raising=False)
    monkeypatch.delenv("ECS_CONTAINER_METADATA_URI", raising=False)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "render-canary")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging")
    attributes = build_resource("processor").attributes
    assert attributes["service.name"] == "render-canary"
    assert attributes["deployment.environment"] == "staging"
    assert attributes["service.namespace"] == "ingest"


def test_receiver_writes_exported_spans_and_the_tree_shows_links(tmp_path: Path) -> None:
    with OtlpReceiver(tmp_path / "spans.jsonl") as receiver:
        provider = TracerProvider(resource=build_resource("unit"))
        provider.add_span_processor(
            SimpleSpanProcessor(OtlpSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces"))
        )
        spans = provider.get_tracer("t")
        with spans.start_as_current_span("elsewhere") as other:
            pass
        with (
            spans.start_as_current_span("root", attributes={"ingest.upload_id": "u"}) as root,
            spans.start_as_current_span(
                "child", links=[Link(other.get_span_context())], kind=SpanKind.CONSUMER
            ),
        ):
            pass
        provider.shutdown()
    records = [json.loads(line) for line in receiver.path.read_text().splitlines()]
    assert [r["name"] for r in records] == ["elsewhere", "child", "root"]
    assert records[1]["kind"] == "consumer"
    assert records[1]["service"] == "unit"
    trace_id = format(root.get_span_context().trace_id, "032x")
    tree = format_tree(load_spans(receiver.path), trace_id)
    lines = tree.splitlines()
    assert lines[2].startswith("root ")
    assert lines[3].startswith("└─ child ")
    assert "↳ linked from unit elsewhere" in lines[4]
    assert "trace " in lines[4]


def test_tree_marks_spans_whose_parent_was_not_collected() -> None:
    def span(span_id: str, parent: str | None, start: int) -> Span:
        return Span(
            "t" * 32,
            span_id,
            parent,
            span_id,
            "internal",
            "s",
            start,
            start + 10**6,
            "unset",
            {},
            [],
        )

    tree = format_tree([span("a", None, 0), span("b", "a", 1), span("c", "x", 2)], "t" * 32)
    assert "c  (parent not collected)" in tree
    assert format_tree([], "f" * 32) == f"no spans of trace {'f' * 32}"
