"""The render handler's status reads (ingest_processor.statuses) against the real PostgreSQL:
reads asked together are one statement, each answered with its own row as it is now."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from ingest_processor.statuses import ImageStatuses

from tests.integration.test_garbage import make_image, make_product


class CountingPool:
    """The real pool, counting the connections taken from it (one per statement here)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.acquired = 0

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        self.acquired += 1
        async with self.pool.acquire() as connection:
            yield connection


async def test_reads_asked_together_are_one_statement_each_answered_with_its_row(
    db: asyncpg.Pool,
) -> None:
    product = await make_product(db, f"s-{uuid.uuid4().hex[:8]}")
    pending = [(await make_image(db, product, "pending"))[0] for _ in range(8)]
    failed, _ = await make_image(db, product, "failed")
    retired, _ = await make_image(db, product, retired=True)
    missing = uuid.uuid4()
    pool = CountingPool(db)
    statuses = ImageStatuses(pool)  # type: ignore[arg-type]
    asked = [*pending, failed, retired, missing, pending[0]]  # pending[0] asked twice
    rows = await asyncio.gather(*(statuses.read(image) for image in asked))
    assert pool.acquired == 1
    assert [row["status"] if row else None for row in rows] == [
        *["pending"] * 8, "failed", "retired", None, "pending",
    ]  # fmt: skip
    assert rows[0] is not None
    assert rows[0]["failure_retryable"] is False


async def test_a_later_read_is_a_new_statement_that_sees_the_row_as_it_is_now(
    db: asyncpg.Pool,
) -> None:
    product = await make_product(db, f"s-{uuid.uuid4().hex[:8]}")
    image, _ = await make_image(db, product, "pending")
    pool = CountingPool(db)
    statuses = ImageStatuses(pool)  # type: ignore[arg-type]
    first = await statuses.read(image)
    await db.execute("UPDATE images SET status = 'ready' WHERE id = $1", image)
    second = await statuses.read(image)
    assert (first["status"], second["status"]) == ("pending", "ready")  # type: ignore[index]
    assert pool.acquired == 2


async def test_a_database_error_reaches_every_asker() -> None:
    # Nothing listens on this port: every asker gets the refusal, as a read of its own would.
    unreachable = await asyncpg.create_pool(
        "postgresql://postgres@127.0.0.1:9/test", min_size=0, max_size=1
    )
    statuses = ImageStatuses(unreachable)
    outcomes = await asyncio.gather(
        *(statuses.read(uuid.uuid4()) for _ in range(3)), return_exceptions=True
    )
    await unreachable.close()
    assert len(outcomes) == 3
    assert all(isinstance(outcome, OSError) for outcome in outcomes), outcomes


async def test_an_asker_that_gives_up_leaves_the_others_their_answers(db: asyncpg.Pool) -> None:
    product = await make_product(db, f"s-{uuid.uuid4().hex[:8]}")
    image, _ = await make_image(db, product, "pending")
    statuses = ImageStatuses(db)
    impatient = asyncio.create_task(statuses.read(image))
    patient = asyncio.create_task(statuses.read(image))
    await asyncio.sleep(0)  # both have asked
    impatient.cancel()
    row = await patient
    assert row is not None
    assert row["status"] == "pending"
    with pytest.raises(asyncio.CancelledError):
        await impatient
