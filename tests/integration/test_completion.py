"""An image's finish (ingest_common.db.completion) against the real PostgreSQL, many at once:
exactly one finish completes its product, whichever path each takes (one statement for an
image that leaves its product incomplete, a transaction otherwise), and the product's
completion writes (the upload's status, the family's revision, the product's event) happen
once."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
from ingest_common import ids
from ingest_common.aws import Aws
from ingest_common.db.completion import ProductState, finish_image

from tests.integration.pipeline import MDI, Pipeline, fetch_row, upload_folder


async def a_dispatched_set(aws: Aws, db: asyncpg.Pool) -> tuple[uuid.UUID, uuid.UUID, list[Any]]:
    """(upload, product, its images) of the sample set once the batcher made its rows."""
    uploaded = await upload_folder(aws, MDI)
    await Pipeline(aws, db).drain("batch")
    product = ids.product_id(uploaded.upload_id)
    images = await db.fetch("SELECT id FROM images WHERE product_id = $1", product)
    return uploaded.upload_id, product, [row["id"] for row in images]


async def finish_all_at_once(
    aws: Aws, db: asyncpg.Pool, images: list[uuid.UUID], failing: set[uuid.UUID]
) -> list[ProductState | None]:
    async def finish(image: uuid.UUID) -> ProductState | None:
        async with db.acquire() as connection:
            if image in failing:
                return await finish_image(
                    connection,
                    image,
                    renditions_bucket=aws.settings.previews_bucket,
                    failure_reason="is not an SVG",
                )
            return await finish_image(
                connection,
                image,
                renditions_bucket=aws.settings.previews_bucket,
                width=24,
                height=24,
                renditions=[{"key": f"renditions/{image}/p/64.png", "width": 64}],
            )

    return await asyncio.gather(*(finish(image) for image in images))


async def assert_completed_once(
    db: asyncpg.Pool,
    upload: uuid.UUID,
    product: uuid.UUID,
    states: list[ProductState | None],
    ready: int,
    failed: int,
) -> None:
    assert all(state is not None for state in states)
    assert [state.complete for state in states if state is not None].count(True) == 1
    row = await fetch_row(db, "SELECT * FROM products WHERE id = $1", product)
    assert (row["images_ready"], row["images_failed"]) == (ready, failed)
    assert row["completed_at"] is not None
    assert row["status"] == ("ready" if ready else "failed")
    assert (await fetch_row(db, "SELECT status::text FROM uploads WHERE id = $1", upload))[
        "status"
    ] == row["status"]
    family = await fetch_row(db, "SELECT revision FROM families WHERE id = $1", row["family_id"])
    assert family["revision"] == 1  # moved once, by the completion
    outcomes = await db.fetch(
        "SELECT envelope->>'type' AS type FROM outbox WHERE subject = $1::uuid::text"
        " AND envelope->>'type' LIKE 'product.%'",
        product,
    )
    assert len(outcomes) == 1, outcomes


async def test_many_finishes_at_once_complete_the_product_once(aws: Aws, db: asyncpg.Pool) -> None:
    upload, product, images = await a_dispatched_set(aws, db)
    assert len(images) == 24
    states = await finish_all_at_once(aws, db, images, failing=set())
    await assert_completed_once(db, upload, product, states, ready=24, failed=0)


async def test_ready_and_failed_finishes_at_once_complete_it_once(
    aws: Aws, db: asyncpg.Pool
) -> None:
    upload, product, images = await a_dispatched_set(aws, db)
    failing = set(images[::3])
    states = await finish_all_at_once(aws, db, images, failing=failing)
    await assert_completed_once(
        db, upload, product, states, ready=len(images) - len(failing), failed=len(failing)
    )
    # Finished again (a redelivery): nothing changes, whichever path.
    again = await finish_all_at_once(aws, db, images[:4], failing=set())
    assert again == [None] * 4
    row = await fetch_row(db, "SELECT * FROM products WHERE id = $1", product)
    assert (row["images_ready"], row["images_failed"]) == (len(images) - len(failing), len(failing))
