"""`ingest status`: what happened to an upload, file by file, in the contributor's words."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ingest_common.db.pool import Connection


@dataclass
class UploadStatus:
    upload: dict[str, Any]
    product: dict[str, Any] | None
    images: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        if self.upload["status"] in ("rejected", "failed", "superseded"):
            return True
        if not self.product or not self.product["completed_at"]:
            return False
        product = self.product
        indexed, previewed = product["indexed_at"], product["previewed_at"]
        # Done when the mosaic was built after the last change to its images, and the
        # index holds the product as it is after that.
        return bool(
            indexed and previewed and previewed >= product["progressed_at"] and indexed >= previewed
        )


async def load_status(connection: Connection, upload: uuid.UUID) -> UploadStatus | None:
    row = await connection.fetchrow(
        "SELECT *, status::text AS status FROM uploads WHERE id = $1", upload
    )
    if row is None:
        return None
    product = await connection.fetchrow(
        """SELECT p.*, p.status::text AS status, p.product_type::text AS product_type,
                  f.slug AS family, f.name AS family_name
             FROM products p JOIN families f ON f.id = p.family_id WHERE p.id = $1""",
        row["product_id"],
    )
    images = []
    if product is not None:
        images = [
            dict(r)
            for r in await connection.fetch(
                """SELECT id, path, title, status::text AS status, failure_reason, width, height,
                          renditions, warnings, finished_at
                     FROM images WHERE product_id = $1 AND status <> 'retired'
                    ORDER BY position""",
                product["id"],
            )
        ]
    return UploadStatus(dict(row), dict(product) if product else None, images)


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
