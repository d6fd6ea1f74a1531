"""What a render worker stored (worker.py, `StoreOrder`), as the processor records it: the
entries of ``images.renditions``, and each PUT's span, drawn from the worker's timings."""

from __future__ import annotations

from typing import Any

from ingest_common.s3_request import S3Endpoint
from ingest_common.telemetry.aws_spans import draw_object_span
from ingest_common.telemetry.tracing import call_spans_under
from opentelemetry import trace

from ingest_processor.render import RenderResult


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
            # What the object is, on the PUT's span: a wrapping span cost as much again.
            draw_object_span(
                put,
                endpoint,
                {
                    "ingest.rendition.width": rendition.width,
                    "ingest.rendition.format": rendition.format,
                    "ingest.rendition.bytes": put.size,
                },
            )
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
