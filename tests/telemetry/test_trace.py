"""One upload through the four service processes: one trace, every hop, every log line.

The services export over OTLP/HTTP to a receiver inside the test (the one `ingest demo`
uses); the client span (`upload set`) is made here, in the test process.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import asyncpg
import pytest
from ingest_cli.trace import OtlpReceiver, Span, build_tree, format_tree, load_spans
from ingest_cli.upload import upload_set
from ingest_common.aws import Aws
from ingest_devstack.local import local_env, services
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.integration.pipeline import mdi_set, wait_finished

pytestmark = pytest.mark.e2e

SERVICES = {"batcher", "processor", "previewer", "indexer"}
IMAGES = 3


def client_spans(exporter: InMemorySpanExporter, trace_id: str) -> list[Span]:
    """The test process's own spans of the trace, in the receiver's record shape."""
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.force_flush()
    found = []
    for span in exporter.get_finished_spans():
        context = span.get_span_context()
        if context is None or format(context.trace_id, "032x") != trace_id:
            continue
        found.append(
            Span(
                trace_id=trace_id,
                span_id=format(context.span_id, "016x"),
                parent_span_id=format(span.parent.span_id, "016x") if span.parent else None,
                name=span.name,
                kind=span.kind.name.lower(),
                service="tests",
                start_ns=span.start_time or 0,
                end_ns=span.end_time or 0,
                status=span.status.status_code.name.lower(),
                attributes=dict(span.attributes or {}),
                links=[],
            )
        )
    return found


async def test_one_upload_is_one_trace_across_four_processes(
    aws: Aws, db: asyncpg.Pool, database_url: str, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    with OtlpReceiver(tmp_path / "spans.jsonl") as collector:
        env = local_env(
            aws.settings.aws_endpoint_url or "",
            database_url,
            receive_wait_seconds="1",
            safety_net_delay="120",
            render_workers="1",
            log_format="json",
            trace_client_spans="1",  # the whole shape, every call's span included
        )
        env.update(collector.env())
        with services(env, tmp_path / "logs") as running:
            uploaded = await upload_set(aws, mdi_set(tmp_path / "set", IMAGES), "tracer")
            (status,) = await wait_finished(db, [uploaded], timeout=90)
            exit_codes = running.stop()  # SIGTERM: each service flushes its spans
        assert exit_codes == dict.fromkeys(exit_codes, 0)
    assert status.upload["status"] == "ready"
    assert status.product is not None
    assert status.product["indexed_at"] is not None

    trace_id = uploaded.trace_id
    assert status.upload["trace_id"] == trace_id
    collected = load_spans(collector.path)
    everything = collected + client_spans(spans, trace_id)

    # Exactly one trace names the upload, and it is the client's.
    upload_traces = {
        s.trace_id
        for s in everything
        if s.attributes.get("ingest.upload_id") == str(uploaded.upload_id)
    }
    assert upload_traces == {trace_id}
    members = [s for s in everything if s.trace_id == trace_id]
    assert {s.service for s in members} >= SERVICES
    by_id = {s.span_id: s for s in members}

    # One root, the client's span; no orphans.
    roots = build_tree(everything, trace_id)
    assert [r.name for r in roots] == ["upload set"]
    root = roots[0]
    assert all(s.parent_span_id in by_id for s in members if s is not root)

    def ancestors(span: Span) -> list[Span]:
        chain = []
        while span.parent_span_id:
            span = by_id[span.parent_span_id]
            chain.append(span)
        return chain

    def parent(span: Span) -> Span:
        assert span.parent_span_id is not None
        return by_id[span.parent_span_id]

    assert all(ancestors(s)[-1] is root for s in members if s.service == "processor")

    # The batcher continues the client's trace and links its consumer span (another trace).
    (batch,) = [s for s in members if s.name == "batch upload"]
    assert parent(batch) is root
    assert batch.service == "batcher"
    consumer_span = {(s.trace_id, s.span_id): s for s in collected}[
        (batch.links[0]["trace_id"], batch.links[0]["span_id"])
    ]
    assert consumer_span.name == "process ingest-batch"
    assert consumer_span.kind == "consumer"

    # Messaging: send (PRODUCER, per batch) → process (CONSUMER, child and link).
    processes = Counter(s.name for s in members if s.name.startswith("process "))
    assert processes["process ingest-render"] == IMAGES
    assert processes["process ingest-preview"] == 1
    assert processes["process ingest-index"] >= 1
    for span in members:
        if span.name.startswith("process "):
            queue = span.name.removeprefix("process ")
            sender = parent(span)
            assert (sender.name, sender.kind, span.kind) == (
                f"send {queue}",
                "producer",
                "consumer",
            )
            assert sender.attributes["messaging.batch.message_count"] >= 1
            assert span.attributes["messaging.destination.name"] == queue
            assert span.links == [{"trace_id": trace_id, "span_id": sender.span_id}]
    render_sends = [s for s in members if s.name == "send ingest-render"]
    assert [parent(s) for s in render_sends] == [batch]
    assert sum(s.attributes["messaging.batch.message_count"] for s in render_sends) == IMAGES

    # A span per rendition, timed in the worker, under each image's `render svg`.
    renders = [s for s in members if s.name == "render svg"]
    assert len(renders) == IMAGES
    for render in renders:
        assert parent(render).name == "process ingest-render"
        children = {
            (s.attributes["ingest.rendition.width"], s.attributes["ingest.rendition.format"])
            for s in members
            if s.parent_span_id == render.span_id
        }
        assert children == {(w, f) for w in (64, 128, 256, 512) for f in ("png", "webp")}

    # Client spans: PostgreSQL (asyncpg) and S3 from the services. The sample SVGs are small
    # enough to ride in their render messages, so the processor reads no original.
    assert any(s.service == "previewer" and s.name == "S3.GetObject" for s in members)
    assert not any(s.service == "processor" and s.name == "S3.GetObject" for s in members)
    # Each rendition's PUT, under its image's process span, says which rendition it stores.
    puts = [s for s in members if s.service == "processor" and s.name == "S3.PutObject"]
    assert len(puts) == IMAGES * 8
    for put in puts:
        assert parent(put).name == "process ingest-render"
        width, fmt = (
            put.attributes["ingest.rendition.width"],
            put.attributes["ingest.rendition.format"],
        )
        assert put.attributes["aws.s3.key"].endswith(f"/{width}.{fmt}")
        assert put.attributes["ingest.rendition.bytes"] > 0
    assert any(
        s.service == "indexer" and s.kind == "client" and s.name == "SELECT" for s in members
    )

    # Resource attributes of each service.
    for span in collected:
        assert {"service.name", "service.version", "host.name", "process.pid"} <= set(span.resource)

    # The tree prints, links included.
    tree = format_tree(everything, trace_id)
    assert "↳ linked from batcher process ingest-batch" in tree
    assert "render 512px webp" in tree

    # Every log line is JSON, and every line of this upload carries its trace id.
    upload_lines = 0
    for log_file in sorted((tmp_path / "logs").glob("*.log")):
        for line in log_file.read_text().splitlines():
            event = json.loads(line)
            if event.get("upload_id") == str(uploaded.upload_id):
                upload_lines += 1
                assert event.get("trace_id") == trace_id, (log_file.name, event)
    assert upload_lines >= IMAGES + 2
