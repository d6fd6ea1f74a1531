"""The batcher's writes to PostgreSQL: the upload row and the one set-creating transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from ingest_common import ids
from ingest_common.db.pool import Connection

from ingest_batcher.archive import FileProblem
from ingest_batcher.plan import UploadPlan


@dataclass(frozen=True)
class UploadRow:
    id: uuid.UUID
    status: str
    dispatched: bool


@dataclass(frozen=True)
class PendingImage:
    id: uuid.UUID
    original_key: str


class FamilyTaken(Exception):
    """The manifest names a family that another contributor owns."""


async def record_upload(
    connection: Connection,
    upload: uuid.UUID,
    *,
    bucket: str,
    key: str,
    etag: str,
    size: int,
    uploaded_at: datetime,
    contributor: str | None,
    traceparent: str | None,
    trace_id: str | None,
) -> UploadRow:
    """Insert the upload once; a redelivered event finds the row it made before."""
    async with connection.transaction():
        if contributor is not None:
            await connection.execute(
                "INSERT INTO contributors (id) VALUES ($1) ON CONFLICT DO NOTHING", contributor
            )
        await connection.execute(
            """INSERT INTO uploads (id, bucket, object_key, etag, object_size, uploaded_at,
                                    contributor_id, traceparent, trace_id)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
               ON CONFLICT (id) DO NOTHING""",
            upload,
            bucket,
            key,
            etag,
            size,
            uploaded_at,
            contributor,
            traceparent,
            trace_id,
        )
        row = await connection.fetchrow(
            "SELECT status::text, dispatched_at IS NOT NULL AS dispatched"
            " FROM uploads WHERE id = $1",
            upload,
        )
    assert row is not None
    return UploadRow(upload, row["status"], row["dispatched"])


async def reject_upload(
    connection: Connection,
    upload: uuid.UUID,
    reason: str,
    problems: list[FileProblem] | None = None,
) -> None:
    await connection.execute(
        """UPDATE uploads SET status = 'rejected', error = $2, file_errors = $3, updated_at = now()
            WHERE id = $1 AND status = 'received'""",
        upload,
        reason,
        _problems_json(problems or []),
    )


async def create_product(
    connection: Connection,
    upload: uuid.UUID,
    contributor: str,
    plan: UploadPlan,
    originals_prefix: str,
) -> uuid.UUID:
    """Family, product and image rows, and the upload's file errors, in one transaction.

    Raises FamilyTaken, writing nothing, when the family belongs to someone else.
    """
    manifest = plan.manifest
    product = ids.product_id(upload)
    family = ids.family_id(manifest.family)
    async with connection.transaction():
        await connection.execute(
            """INSERT INTO families (id, slug, name, contributor_id) VALUES ($1, $2, $3, $4)
               ON CONFLICT (slug) DO NOTHING""",
            family,
            manifest.family,
            manifest.family_name or manifest.family,
            contributor,
        )
        owner = await connection.fetchval(
            "SELECT contributor_id FROM families WHERE id = $1", family
        )
        if owner != contributor:
            raise FamilyTaken(manifest.family)
        await connection.execute(
            """INSERT INTO products (id, upload_id, family_id, contributor_id, product_type,
                                     title, description, tags, license, image_count)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
               ON CONFLICT (id) DO NOTHING""",
            product,
            upload,
            family,
            contributor,
            manifest.product_type,
            manifest.title,
            manifest.description,
            list(manifest.tags),
            manifest.license,
            len(plan.images),
        )
        await connection.executemany(
            """INSERT INTO images (id, product_id, position, path, title, tags, content_hash,
                                   byte_size, original_key)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
               ON CONFLICT (id) DO NOTHING""",
            [
                (
                    ids.image_id(product, image.path),
                    product,
                    image.position,
                    image.path,
                    image.title,
                    list(image.tags),
                    image.content_hash,
                    len(image.data),
                    original_key(originals_prefix, contributor, product, image.content_hash),
                )
                for image in plan.images
            ],
        )
        await connection.execute(
            """UPDATE uploads SET status = 'processing', file_errors = $2, updated_at = now()
                WHERE id = $1 AND status = 'received'""",
            upload,
            _problems_json(plan.problems),
        )
    return product


def original_key(prefix: str, contributor: str, product: uuid.UUID, content_hash: str) -> str:
    return f"{prefix}{contributor}/{product}/{content_hash}.svg"


async def pending_images(connection: Connection, product: uuid.UUID) -> list[PendingImage]:
    rows = await connection.fetch(
        "SELECT id, original_key FROM images WHERE product_id = $1 AND status = 'pending'"
        " ORDER BY position",
        product,
    )
    return [PendingImage(row["id"], row["original_key"]) for row in rows]


async def mark_dispatched(connection: Connection, upload: uuid.UUID) -> None:
    await connection.execute(
        "UPDATE uploads SET dispatched_at = now(), updated_at = now()"
        " WHERE id = $1 AND dispatched_at IS NULL",
        upload,
    )


def _problems_json(problems: list[FileProblem]) -> list[dict[str, str]]:
    return [{"path": p.path, "reason": p.reason} for p in problems]
