"""How an image's outcome is recorded and a product's completion detected.

An image moves from `pending` to `ready` or `failed` once (a conditional update), and its
product's counters move in the same transaction, so exactly one caller sees the product
complete, duplicates change nothing, and nobody has to poll or wait a fixed time.

A failure that is not about the file (`retryable`: its message was dead-lettered or lost)
is not final: a render that completes later — a redriven message, a late delivery, the
set sent again — brings the image back, and its product's counters, state, mosaic and
index follow. Whenever a complete product's ready images change, its family's revision
moves (the previewer rebuilds the mosaic) and it is owed a new product-ready
(`ready_notified_at` is cleared). A render that lands on an image retired meanwhile (a
newer version of the set dropped it) changes nothing, and its objects are discarded.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from ingest_common.db.pool import Connection
from ingest_common.events import (
    MAX_LISTED_IMAGES,
    Mosaic,
    ProductFailed,
    ProductImage,
    ProductOutcome,
    ProductPartiallyReady,
    ProductReady,
    emit,
)
from ingest_common.garbage import discard_renditions


@dataclass(frozen=True)
class ProductState:
    product_id: uuid.UUID
    upload_id: uuid.UUID  # the version being shown: its trace and logs carry on
    family_id: uuid.UUID
    complete: bool
    notified: bool


# Pending images, and failed ones whose failure was not about the file, may (still) finish;
# the product's counters move by what the image was and is now. One statement, one round trip
# (an image's finish is most of the processor's SQL); no row: the image did not change. The
# image is locked first, then its product, whose counters are read under that lock: with $9
# the statement changes nothing (no row) unless the product stays incomplete after it.
_FINISH_IMAGE = """
WITH target AS (
    SELECT id, product_id, status AS was FROM images
     WHERE id = $1 AND (status = 'pending' OR (status = 'failed' AND failure_retryable))
       FOR UPDATE
), product AS (
    SELECT p.id FROM products p JOIN target t ON p.id = t.product_id
     WHERE NOT $9 OR p.images_ready + p.images_failed + (t.was = 'pending')::int < p.image_count
       FOR UPDATE OF p
), finished AS (
    UPDATE images i
       SET status = $2, failure_reason = $3, failure_retryable = $4,
           width = coalesce($5, i.width), height = coalesce($6, i.height), renditions = $7,
           warnings = $8, finished_at = now()
      FROM target JOIN product ON product.id = target.product_id
     WHERE i.id = target.id
    RETURNING i.product_id,
              (i.status = 'ready')::int - (target.was = 'ready')::int AS ready,
              (i.status = 'failed')::int - (target.was = 'failed')::int AS failed
)
UPDATE products p
   SET images_ready = images_ready + f.ready,
       images_failed = images_failed + f.failed,
       progressed_at = now(),
       completed_at = CASE WHEN images_ready + f.ready + images_failed + f.failed = image_count
                           THEN coalesce(completed_at, now()) END,
       status = CASE WHEN images_ready + f.ready + images_failed + f.failed < image_count
                          THEN 'processing'
                     WHEN images_ready + f.ready > 0 THEN 'ready'
                     ELSE 'failed' END::product_status,
       ready_notified_at = NULL
  FROM finished f
 WHERE p.id = f.product_id
RETURNING p.id, p.current_upload_id, p.family_id, p.status::text AS status,
          p.completed_at IS NOT NULL AS complete, false AS notified
"""

_UPLOAD_DONE = """
UPDATE uploads SET status = $2::text::upload_status, updated_at = now() WHERE id = $1
"""
_FAMILY_CHANGED = "UPDATE families SET revision = revision + 1 WHERE id = $1"


async def finish_image(
    connection: Connection,
    image_id: uuid.UUID,
    *,
    renditions_bucket: str,
    failure_reason: str | None = None,
    retryable: bool = False,
    width: int | None = None,
    height: int | None = None,
    renditions: list[dict[str, Any]] | None = None,
    warnings: list[str] | None = None,
    discard_delay: float = 0.0,
) -> ProductState | None:
    """Record one image's outcome: ready (no reason) or failed; None if it cannot change.

    A failure discards whatever renditions an earlier attempt may have stored (kept if the
    image is ready again when the sweeper comes); so does a render for a retired image.
    """
    status = "failed" if failure_reason else "ready"
    arguments = (
        image_id,
        status,
        failure_reason,
        retryable and status == "failed",
        width,
        height,
        renditions or [],
        warnings or [],
    )
    if status == "ready":
        # Most images do not complete their product: then the finish is this one statement,
        # atomic on its own, without BEGIN and COMMIT (two round trips of the three). Any
        # other outcome changed nothing and takes the transaction below.
        product = await connection.fetchrow(_FINISH_IMAGE, *arguments, True)
        if product is not None:
            return _state(product)
    async with connection.transaction():
        product = await connection.fetchrow(_FINISH_IMAGE, *arguments, False)
        if product is None:
            if renditions and await _retired(connection, image_id):
                await discard_renditions(
                    connection,
                    renditions_bucket,
                    image_id,
                    reason="rendered after its set's new version retired it",
                )
            return None
        if status == "failed":
            await discard_renditions(
                connection,
                renditions_bucket,
                image_id,
                reason=f"image failed: {failure_reason}",
                delay=discard_delay,
            )
        if product["complete"]:
            await connection.execute(_UPLOAD_DONE, product["current_upload_id"], product["status"])
            await connection.execute(_FAMILY_CHANGED, product["family_id"])
            await emit_product_outcome(connection, product["id"], renditions_bucket)
        return _state(product)


async def _retired(connection: Connection, image_id: uuid.UUID) -> bool:
    status = await connection.fetchval("SELECT status::text FROM images WHERE id = $1", image_id)
    return bool(status == "retired")


async def product_state(connection: Connection, product: uuid.UUID) -> ProductState | None:
    row = await connection.fetchrow(
        """SELECT id, current_upload_id, family_id, completed_at IS NOT NULL AS complete,
                  ready_notified_at IS NOT NULL AS notified
             FROM products WHERE id = $1""",
        product,
    )
    return _state(row) if row else None


async def mark_notified(connection: Connection, product: uuid.UUID) -> None:
    await connection.execute(
        "UPDATE products SET ready_notified_at = now() WHERE id = $1 AND ready_notified_at IS NULL",
        product,
    )


def _state(row: asyncpg.Record) -> ProductState:
    return ProductState(
        product_id=row["id"],
        upload_id=row["current_upload_id"],
        family_id=row["family_id"],
        complete=row["complete"],
        notified=row["notified"],
    )


_OUTCOME_PRODUCT = """
SELECT p.id, p.current_upload_id, p.contributor_id, p.title, p.product_type::text AS product_type,
       p.license, p.image_count, p.images_ready, p.images_failed, f.slug AS family,
       fp.png_key, fp.webp_key, fp.width, fp.height
  FROM products p JOIN families f ON f.id = p.family_id
  LEFT JOIN family_previews fp ON fp.family_id = p.family_id
 WHERE p.id = $1
"""
_OUTCOME_IMAGES = """
SELECT id, path, title, status::text AS status, failure_reason, renditions->0->>'key' AS a_key
  FROM images WHERE product_id = $1 AND status IN ('ready', 'failed')
 ORDER BY position LIMIT $2
"""


async def emit_product_outcome(
    connection: Connection, product_id: uuid.UUID, previews_bucket: str
) -> None:
    """A complete product's event (ready, partially ready or failed), in the caller's
    transaction: the product row is locked by then, so a product's events keep its order."""
    product = await connection.fetchrow(_OUTCOME_PRODUCT, product_id)
    assert product is not None
    images = [
        ProductImage(
            id=row["id"],
            path=row["path"],
            title=row["title"],
            status=row["status"],
            # renditions/<image>/<profile>/<width>.<format>: the prefix holds them all
            renditions=row["a_key"].rsplit("/", 1)[0] + "/" if row["a_key"] else None,
            failure_reason=row["failure_reason"],
        )
        for row in await connection.fetch(_OUTCOME_IMAGES, product_id, MAX_LISTED_IMAGES)
    ]
    kind: type[ProductOutcome] = (
        ProductReady
        if product["images_failed"] == 0
        else ProductFailed
        if product["images_ready"] == 0
        else ProductPartiallyReady
    )
    mosaic = (
        Mosaic(
            png=product["png_key"],
            webp=product["webp_key"],
            width=product["width"],
            height=product["height"],
        )
        if product["png_key"]
        else None
    )
    data = kind(
        product_id=product["id"],
        upload_id=product["current_upload_id"],
        contributor=product["contributor_id"],
        family=product["family"],
        title=product["title"],
        product_type=product["product_type"],
        license=product["license"],
        images=product["image_count"],
        ready=product["images_ready"],
        failed=product["images_failed"],
        previews_bucket=previews_bucket,
        listed=images,
        mosaic=mosaic,
    )
    await emit(connection, data, subject=product_id)
