"""Product-ready: sent to the previewer and the indexer at once, exactly when complete.

Used by the processor (the last image landed) and by the previewer's safety net (the
stragglers were failed). If the send fails, `ready_notified_at` stays empty and the
redelivered message, or the safety net, sends it again; receivers are idempotent.
"""

from __future__ import annotations

import asyncio

import asyncpg

from ingest_common.aws import Aws
from ingest_common.db.completion import ProductState, mark_notified
from ingest_common.schemas.messages import IndexProduct, PreviewFamily


async def notify_product_ready(aws: Aws, db: asyncpg.Pool, state: ProductState) -> None:
    if not state.complete or state.notified:
        return
    preview = PreviewFamily(
        reason="product_ready",
        upload_id=state.upload_id,
        product_id=state.product_id,
        family_id=state.family_id,
    )
    index = IndexProduct(upload_id=state.upload_id, product_id=state.product_id)
    await asyncio.gather(
        aws.send(aws.settings.preview_queue, [preview]),
        aws.send(aws.settings.index_queue, [index]),
    )
    async with db.acquire() as connection:
        await mark_notified(connection, state.product_id)
