"""`ingest upload`: put a set into S3 the way any client should, starting its trace."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from ingest_common import ids
from ingest_common.aws import Aws
from ingest_common.telemetry.tracing import current_carrier, tracer
from opentelemetry.trace import SpanKind

from ingest_cli.zipping import zip_folder


@dataclass(frozen=True)
class Uploaded:
    upload_id: uuid.UUID
    key: str
    trace_id: str


async def upload_set(aws: Aws, path: Path, contributor: str) -> Uploaded:
    """Upload a ZIP or a folder as uploads/<contributor>/<random>.zip."""
    data = zip_folder(path) if path.is_dir() else path.read_bytes()
    key = f"uploads/{contributor}/{uuid.uuid4()}.zip"
    with tracer().start_as_current_span(
        "upload set",
        kind=SpanKind.PRODUCER,
        attributes={"ingest.object_key": key, "ingest.bytes": len(data)},
    ) as span:
        # x-amz-meta-traceparent: the batcher continues this trace from the object.
        etag = await aws.put_bytes(
            aws.settings.uploads_bucket,
            key,
            data,
            content_type="application/zip",
            metadata=current_carrier(),
        )
        upload = ids.upload_id(aws.settings.uploads_bucket, key, etag)
        span.set_attribute("ingest.upload_id", str(upload))
        trace_id = format(span.get_span_context().trace_id, "032x")
    return Uploaded(upload, key, trace_id)
