"""Span encoding for OTLP: the SDK's encoder against `ingest_common.telemetry.otlp_spans`, side
by side on the same spans, in alternated rounds.

    uv run --frozen python bench/otlp_spans.py                       # a built-in mix
    uv run --frozen python bench/otlp_spans.py --spans demo-output/spans.jsonl
    uv run --frozen python bench/otlp_spans.py --spans KEEP/processors-1/spans.jsonl

``--spans`` reads what the OTLP receiver of `make demo` or of `bench/e2e.py --keep KEEP` wrote
(or any file `ingest trace` reads): the spans a real run exported, rebuilt as the SDK's spans
(with their resources). Without it, the spans of 200 rendered images as the processor makes
them in a traced upload (message, render, eight renditions, eight PUTs, the finish). Batches
of 512 spans, as the batch span processor sends them. Both encodings are checked
byte-identical first. Figures: CPU µs per span (the best of 3 per round, the median round)
and, where the spans hold `render svg` spans, ms per rendered image.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ingest_cli.trace import load_spans
from ingest_common.telemetry.otlp_spans import encode_spans
from ingest_common.telemetry.resource import HashedOnceResource, build_resource
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import Attributes

BATCH = 512  # the batch span processor's default export batch
_SCOPE = InstrumentationScope("ingest")  # ingest_common.telemetry.tracing.tracer()'s


def recorded_spans(path: Path) -> list[ReadableSpan]:
    """The spans of a file `ingest trace` reads (`load_spans`: the receiver's JSON lines, OTLP
    JSON, Jaeger, Tempo) as SDK spans, each service's resource built once. Those formats keep
    no status message and, but OTLP JSON, no scope: every span gets the services' scope."""
    resources: dict[str, Resource] = {}
    spans = []
    for span in load_spans(path):
        key = json.dumps(span.resource, sort_keys=True)
        resource = resources.setdefault(key, HashedOnceResource(span.resource))
        trace_id = int(span.trace_id, 16)
        parent = span.parent_span_id
        spans.append(
            ReadableSpan(
                name=span.name,
                context=SpanContext(trace_id, int(span.span_id, 16), False, TraceFlags(1)),
                parent=SpanContext(trace_id, int(parent, 16), False) if parent else None,
                resource=resource,
                attributes=span.attributes,
                links=[_link(link) for link in span.links],
                kind=SpanKind[span.kind.upper()],
                status=Status(StatusCode[span.status.upper()]),
                start_time=span.start_ns,
                end_time=span.end_ns,
                instrumentation_scope=_SCOPE,
            )
        )
    return spans


def _link(link: dict[str, str]) -> Link:
    return Link(SpanContext(int(link["trace_id"], 16), int(link["span_id"], 16), True))


def processor_like_spans(images: int = 200) -> Sequence[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=build_resource("processor"))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("ingest")
    renditions = [(width, fmt) for width in (64, 128, 256, 512) for fmt in ("png", "webp")]
    for n in range(images):
        image = f"5b0c7a4e-0000-4000-8000-{n:012d}"
        message: Attributes = {
            "messaging.system": "aws_sqs",
            "messaging.operation.type": "process",
            "messaging.destination.name": "ingest-render",
            "messaging.message.id": image,
            "ingest.image_id": image,
        }
        with tracer.start_as_current_span(
            "process ingest-render", kind=SpanKind.CONSUMER, attributes=message
        ):
            with tracer.start_as_current_span("render svg", attributes={"ingest.svg.bytes": 1234}):
                for width, fmt in renditions:
                    rendition: Attributes = {
                        "ingest.rendition.width": width,
                        "ingest.rendition.height": width,
                        "ingest.rendition.format": fmt,
                        "ingest.rendition.bytes": 4321,
                        "ingest.rendition.rasterised": fmt == "png",
                    }
                    tracer.start_span(f"render {width}px {fmt}", attributes=rendition).end()
            for width, fmt in renditions:
                put: Attributes = {
                    "rpc.system": "aws-api",
                    "rpc.service": "S3",
                    "rpc.method": "PutObject",
                    "aws.s3.bucket": "ingest-previews",
                    "aws.s3.key": f"renditions/{image}/p1/{width}.{fmt}",
                    "http.response.status_code": 200,
                }
                tracer.start_span("S3.PutObject", kind=SpanKind.CLIENT, attributes=put).end()
            tracer.start_span("finish image", attributes={"ingest.image_id": image}).end()
    return exporter.get_finished_spans()


def timed(
    encode: Callable[[Sequence[ReadableSpan]], object], spans: Sequence[ReadableSpan]
) -> float:
    """Best of 3, CPU seconds, to encode ``spans`` in export batches."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for start in range(0, len(spans), BATCH):
            encode(spans[start : start + BATCH])
        best = min(best, time.process_time() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--spans",
        type=Path,
        help="a receiver's spans.jsonl (demo, e2e --keep), or any file `ingest trace` reads",
    )
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    spans = recorded_spans(args.spans) if args.spans else processor_like_spans()
    if encode_spans(spans) != sdk_encode(spans).SerializePartialToString():
        raise SystemExit("the encodings differ: see tests/unit/test_otlp_spans.py")
    contenders: dict[str, Callable[[Sequence[ReadableSpan]], object]] = {
        "SDK (protobuf objects)": lambda batch: sdk_encode(batch).SerializePartialToString(),
        "otlp_spans (wire)": encode_spans,
    }
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for round_ in range(args.rounds):
        order = list(contenders) if round_ % 2 == 0 else list(reversed(contenders))
        for name in order:
            seconds[name].append(timed(contenders[name], spans))
    images = sum(1 for span in spans if span.name == "render svg")
    attributes = sum(len(span.attributes or {}) for span in spans) / len(spans)
    print(
        f"{len(spans):,} spans ({attributes:.1f} attributes each), {images} rendered images;"
        f" byte-identical encodings; median of {args.rounds} alternated rounds"
    )
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    for name, median in medians.items():
        per_image = f", {median / images * 1e3:.2f} ms per image" if images else ""
        print(f"  {name:24} {median / len(spans) * 1e6:6.1f} µs per span{per_image}")
    sdk, ours = medians.values()
    print(f"  otlp_spans / SDK: {ours / sdk:.2f} of the CPU")


if __name__ == "__main__":
    main()
