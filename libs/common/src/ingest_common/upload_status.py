"""What happened to an upload, file by file: read once, shown by `ingest status` and the API.

`load_status` reads the upload, its product and the product's active images;
`UploadStatus.finished` says whether anything is still to come (the mosaic built after the
last change to the images, and the index holding the product as it is after that).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from ingest_common.db.pool import Connection

# LISTEN/NOTIFY: the id of an upload or a product whose state moved, told at commit by the
# triggers of migration 0008 (an image's outcome, an upload's or a product's step).
PROGRESS_CHANNEL = "ingest_progress"


@dataclass
class UploadStatus:
    upload: dict[str, Any]
    product: dict[str, Any] | None
    images: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        if self.upload["status"] in ("rejected", "failed", "superseded"):
            return True
        return self.indexed

    @property
    def complete(self) -> bool:
        """Every image of the product has its outcome."""
        return bool(self.product and self.product["completed_at"])

    @property
    def previewed(self) -> bool:
        """The family's mosaic was brought up to date after the last change to the images."""
        product = self.product
        if not self.complete or product is None:
            return False
        previewed = product["previewed_at"]
        return bool(previewed and previewed >= product["progressed_at"])

    @property
    def indexed(self) -> bool:
        """The index holds the product as it is after its mosaic was brought up to date."""
        product = self.product
        if not self.previewed or product is None:
            return False
        indexed = product["indexed_at"]
        return bool(indexed and indexed >= product["previewed_at"])


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


async def latest_upload_at(connection: Connection, bucket: str, key: str) -> uuid.UUID | None:
    """The id of the newest upload (object version) recorded at `key`, if any."""
    value = await connection.fetchval(
        """SELECT id FROM uploads WHERE bucket = $1 AND object_key = $2
            ORDER BY uploaded_at DESC NULLS LAST, received_at DESC LIMIT 1""",
        bucket,
        key,
    )
    return value if isinstance(value, uuid.UUID) else None
