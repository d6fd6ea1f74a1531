"""What a render worker stored (worker.py, `StoreOrder`), as the processor records it: the
entries of ``images.renditions``, and each PUT's span, drawn from the worker's timings."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError
from ingest_common.s3_put_blocking import PutOutcome
from ingest_common.s3_request import S3Endpoint
from ingest_common.telemetry.tracing import call_spans_under, tracer
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ingest_processor.render import RenderResult, Rendition


def stored_entries(
    result: RenderResult, endpoint: S3Endpoint, profile: str
) -> list[dict[str, Any]]:
    """The entries for ``images.renditions`` of a render its worker stored; each PUT's span
    drawn from its outcome under the current span, if its trace keeps calls' spans. Raises
    the first PUT's error, if any (the botocore exception the S3 client would have raised)."""
    entries: list[dict[str, Any]] = []
    failed: Exception | None = None
    spans = call_spans_under(trace.get_current_span())
    for rendition in result.renditions:
        put = rendition.stored
        if put is None:
            raise ValueError("a rendition came back from its worker without being stored")
        if spans:
            _put_span(put, rendition, endpoint)
        if put.error is not None:
            failed = failed or put.error
            continue
        entry: dict[str, Any] = {
            "width": rendition.width,
            "height": rendition.height,
            "format": rendition.format,
            "key": put.key,
            "bytes": put.size,
            "profile": profile,
        }
        if rendition.lossless is not None:
            entry["lossless"] = rendition.lossless
        entries.append(entry)
    if failed is not None:
        raise failed
    return entries


def _put_span(put: PutOutcome, rendition: Rendition, endpoint: S3Endpoint) -> None:
    """The CLIENT span `s3_put` would have drawn around this PUT, from the worker's timings,
    with what the object is (a wrapping span per rendition cost as much again)."""
    attributes = endpoint.span_attributes("PutObject", put.host, put.bucket, put.key)
    attributes.update(
        {
            "ingest.rendition.width": rendition.width,
            "ingest.rendition.format": rendition.format,
            "ingest.rendition.bytes": put.size,
        }
    )
    if put.status:
        attributes["http.status_code"] = put.status
    if put.request_id:
        attributes["aws.request_id"] = put.request_id
    if put.retries:
        attributes["retry_attempts"] = put.retries
    span = tracer().start_span(
        "S3.PutObject", kind=SpanKind.CLIENT, start_time=put.started_ns, attributes=attributes
    )
    if isinstance(put.error, ClientError):
        span.set_attribute("error.type", put.error.response["Error"]["Code"])
    elif put.error is not None:
        span.set_attribute("error.type", type(put.error).__name__)
    if put.error is not None:
        span.set_status(Status(StatusCode.ERROR, str(put.error)[:200]))
    span.end(end_time=put.ended_ns)
