"""`ingest status`: what happened to an upload, file by file, in the contributor's words."""

from __future__ import annotations

from datetime import datetime

# The reading is shared with the HTTP API (GET /v1/uploads/{id}): one implementation.
from ingest_common.upload_status import UploadStatus, load_status

__all__ = ["UploadStatus", "format_status", "load_status", "stage_times"]


def format_status(status: UploadStatus) -> str:
    upload, product = status.upload, status.product
    lines = [
        f"upload   {upload['id']}  {upload['status']}",
        f"object   s3://{upload['bucket']}/{upload['object_key']}",
        f"trace    {upload['trace_id'] or '-'}",
    ]
    if upload["error"]:
        lines.append(f"refused  {upload['error']}")
    if upload["duplicate_of"]:
        lines.append(
            f"repeat   the same archive as upload {upload['duplicate_of']}: nothing new to do"
        )
    if upload["replaced_by"]:
        lines.append(f"replaced by the newer version in upload {upload['replaced_by']}")
    elif upload["status"] == "superseded":
        lines.append("replaced by a newer upload to the same key before it was processed")
    if product:
        lines.append(
            f"product  {product['id']}  {product['title']!r} ({product['product_type']}, "
            f"family {product['family']})  {product['status']}: {product['images_ready']} ready, "
            f"{product['images_failed']} failed, {product['image_count']} in all"
        )
    for image in status.images:
        detail = image["failure_reason"] or (
            f"{len(image['renditions'])} renditions" if image["status"] == "ready" else ""
        )
        lines.append(f"  {image['status']:<8} {image['path']}  {detail}")
        lines.extend(f"  {'':<8} warning: {warning}" for warning in image["warnings"])
    for problem in upload["file_errors"]:
        lines.append(f"  {'refused':<8} {problem['path']}  {problem['reason']}")
    return "\n".join(lines)


def stage_times(status: UploadStatus) -> list[tuple[str, float | None]]:
    """Seconds per stage, from the timestamps each service leaves behind."""
    upload, product = status.upload, status.product or {}
    stages: list[tuple[str, datetime | None, datetime | None]] = [
        ("batcher: ZIP → rows → render messages", upload["uploaded_at"], upload["dispatched_at"]),
        ("processor: every image rendered", upload["dispatched_at"], product.get("completed_at")),
        ("previewer: family mosaic", product.get("completed_at"), product.get("previewed_at")),
        ("indexer: searchable with mosaic", product.get("completed_at"), product.get("indexed_at")),
        ("total: upload → searchable", upload["uploaded_at"], product.get("indexed_at")),
    ]
    return [
        (name, (end - start).total_seconds() if start and end else None)
        for name, start, end in stages
    ]
