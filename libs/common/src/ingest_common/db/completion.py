"""How an image's outcome is recorded and a product's completion detected.

Each image is finished at most once (a conditional update from `pending`), and the
product's counters move in the same transaction, so exactly one caller sees the product
complete, duplicates change nothing, and nobody has to poll or wait a fixed time.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from ingest_common.db.pool import Connection


@dataclass(frozen=True)
class ProductState:
    product_id: uuid.UUID
    upload_id: uuid.UUID
    family_id: uuid.UUID
    complete: bool
    notified: bool


_FINISH_IMAGE = """
UPDATE images
   SET status = $2, failure_reason = $3, width = $4, height = $5, renditions = $6,
       finished_at = now()
 WHERE id = $1 AND status = 'pending'
RETURNING product_id
"""

_COUNT = """
UPDATE products
   SET images_ready = images_ready + $2,
       images_failed = images_failed + $3,
       completed_at = CASE WHEN images_ready + images_failed + 1 = image_count
                           THEN now() ELSE completed_at END,
       status = CASE WHEN images_ready + images_failed + 1 < image_count THEN status
                     WHEN images_ready + $2 > 0 THEN 'ready'::product_status
                     ELSE 'failed'::product_status END
 WHERE id = $1
RETURNING id, upload_id, family_id, status, completed_at IS NOT NULL AS complete,
          ready_notified_at IS NOT NULL AS notified
"""

_UPLOAD_DONE = """
UPDATE uploads SET status = $2::text::upload_status, updated_at = now() WHERE id = $1
"""


async def finish_image(
    connection: Connection,
    image_id: uuid.UUID,
    *,
    failure_reason: str | None = None,
    width: int | None = None,
    height: int | None = None,
    renditions: list[dict[str, Any]] | None = None,
) -> ProductState | None:
    """Mark one pending image ready (no reason) or failed; None if it was not pending."""
    status = "failed" if failure_reason else "ready"
    async with connection.transaction():
        product = await connection.fetchval(
            _FINISH_IMAGE, image_id, status, failure_reason, width, height, renditions or []
        )
        if product is None:
            return None
        row = await connection.fetchrow(
            _COUNT, product, int(status == "ready"), int(status == "failed")
        )
        assert row is not None, "an image always has its product"
        if row["complete"]:
            await connection.execute(_UPLOAD_DONE, row["upload_id"], row["status"])
        return _state(row)


async def product_state(connection: Connection, product: uuid.UUID) -> ProductState | None:
    row = await connection.fetchrow(
        """SELECT id, upload_id, family_id, completed_at IS NOT NULL AS complete,
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
        upload_id=row["upload_id"],
        family_id=row["family_id"],
        complete=row["complete"],
        notified=row["notified"],
    )
