"""Product-ready: sent to the previewer, exactly when a product completes (or changes after).

The flow runs forward: the previewer brings the family's mosaic up to date, then has the
product indexed, so each product change reaches the indexer once, with its mosaic.

Used by the processor (the last image landed), the batcher (a version that renders nothing)
and the previewer's safety net (the stragglers were failed). If the send fails,
`ready_notified_at` stays empty and the redelivered message, or the safety net, sends it
again; receivers are idempotent.
"""

from __future__ import annotations

import asyncpg

from ingest_common.aws import Aws
from ingest_common.db.completion import ProductState, mark_notified
from ingest_common.schemas.messages import PreviewFamily


async def notify_product_ready(aws: Aws, db: asyncpg.Pool, state: ProductState) -> None:
    if not state.complete or state.notified:
        return
    preview = PreviewFamily(
        upload_id=state.upload_id, product_id=state.product_id, family_id=state.family_id
    )
    await aws.send(aws.settings.preview_queue, [preview])
    async with db.acquire() as connection:
        await mark_notified(connection, state.product_id)
