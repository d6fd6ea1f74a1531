"""What one preview message does.

`product_ready`: N random ready images across every set of the family → one mosaic,
PNG and WebP, under a content-derived key → the family's preview row → q.index.
The mosaic is rebuilt only if a product of the family completed since it was sampled
(see migration 0003): a burst of sets in one family, or a redelivered message, reuses it.

`safety_net` (sent delayed by the batcher): if the set is complete, make sure product-
ready went out; if it is still rendering, look again later; if it stalled past the
stall timeout, fail the stragglers with a reason, which completes the product.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime

import structlog
from ingest_common.db.completion import ProductState, finish_image, product_state
from ingest_common.db.pool import Connection
from ingest_common.notify import notify_product_ready
from ingest_common.runtime.consumer import Delivery
from ingest_common.runtime.service import Resources, ServiceHandler
from ingest_common.schemas.messages import IndexProduct, PreviewFamily
from ingest_common.telemetry.tracing import tracer

from ingest_previewer.mosaic import Mosaic, MosaicSpec, compose_mosaic
from ingest_previewer.settings import PreviewerSettings

log = structlog.get_logger("ingest.previewer")

# The smallest PNG rendition at least as wide as a mosaic cell, for each of N random
# ready images of the family (all its products).
_PICK_TILES = """
SELECT i.id,
       (SELECT r->>'key' FROM jsonb_array_elements(i.renditions) r
         WHERE r->>'format' = 'png'
         ORDER BY ((r->>'width')::int < $3), abs((r->>'width')::int - $3) LIMIT 1) AS key
  FROM images i JOIN products p ON p.id = i.product_id
 WHERE p.family_id = $1 AND i.status = 'ready'
 ORDER BY random()
 LIMIT $2
"""


_COMPLETE_PRODUCTS = """
SELECT count(*) FROM products WHERE family_id = $1 AND completed_at IS NOT NULL
"""
_COVERED = "SELECT complete_products FROM family_previews WHERE family_id = $1"
_LOCK_FAMILY = "SELECT pg_advisory_xact_lock(hashtextextended('mosaic:' || $1::uuid::text, 0))"


class PreviewHandler(ServiceHandler[PreviewFamily, PreviewerSettings]):
    message_model = PreviewFamily
    settings_class = PreviewerSettings

    def __init__(self, resources: Resources) -> None:
        super().__init__(resources)
        settings = self.settings
        self.spec = MosaicSpec(
            tile=settings.mosaic_tile,
            gap=settings.mosaic_gap,
            padding=settings.mosaic_padding,
            webp_quality=settings.mosaic_webp_quality,
        )

    async def handle(self, message: PreviewFamily, delivery: Delivery) -> None:
        structlog.contextvars.bind_contextvars(
            upload_id=str(message.upload_id),
            product_id=str(message.product_id),
            family_id=str(message.family_id),
        )
        if message.reason == "safety_net":
            await self._check_stalled(message)
        else:
            await self._build_mosaic(message)

    async def _build_mosaic(self, message: PreviewFamily) -> None:
        family = message.family_id
        # One build per family at a time: a burst's other messages wait here, then find
        # the mosaic current. The lock lasts until the new mosaic's row commits.
        async with self.db.acquire() as connection, connection.transaction():
            await connection.execute(_LOCK_FAMILY, family)
            # Counted before sampling: the sample may see more completions than the count
            # (then a later message rebuilds once more), never fewer.
            complete = await connection.fetchval(_COMPLETE_PRODUCTS, family)
            if complete == await connection.fetchval(_COVERED, family):
                log.info("previewer.mosaic_current", complete_products=complete)
            else:
                await self._rebuild(connection, family, complete)
        async with self.db.acquire() as connection:
            await connection.execute(
                "UPDATE products SET previewed_at = now() WHERE id = $1", message.product_id
            )
        await self.aws.send(
            self.settings.index_queue,
            [IndexProduct(upload_id=message.upload_id, product_id=message.product_id)],
        )

    async def _rebuild(self, connection: Connection, family: uuid.UUID, complete: int) -> None:
        rows = await connection.fetch(
            _PICK_TILES, family, self.settings.mosaic_images, self.spec.tile
        )
        rows = [row for row in rows if row["key"]]
        if not rows:
            log.info("previewer.nothing_ready")
            return
        tiles = await asyncio.gather(
            *(self.aws.get_bytes(self.settings.previews_bucket, row["key"]) for row in rows)
        )
        with tracer().start_as_current_span(
            "compose mosaic", attributes={"ingest.tiles": len(tiles)}
        ):
            mosaic = await asyncio.to_thread(compose_mosaic, tiles, self.spec)
        await self._store(connection, family, [row["id"] for row in rows], mosaic, complete)

    async def _store(
        self,
        connection: Connection,
        family: uuid.UUID,
        images: list[uuid.UUID],
        mosaic: Mosaic,
        complete_products: int,
    ) -> None:
        # The key names its content, so CDNs may cache it forever.
        digest = hashlib.sha256(
            b"".join(i.bytes for i in images) + repr(self.spec).encode()
        ).hexdigest()[:20]
        base = f"previews/families/{family}/{digest}"
        png_key, webp_key = f"{base}.png", f"{base}.webp"
        await asyncio.gather(
            *(
                self.aws.put_bytes(
                    self.settings.previews_bucket,
                    key,
                    data,
                    content_type=content_type,
                    cache_control=self.settings.cache_control,
                )
                for key, data, content_type in (
                    (png_key, mosaic.png, "image/png"),
                    (webp_key, mosaic.webp, "image/webp"),
                )
            )
        )
        await connection.execute(
            """INSERT INTO family_previews
                      (family_id, png_key, webp_key, width, height, image_ids, complete_products)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (family_id) DO UPDATE
               SET png_key = $2, webp_key = $3, width = $4, height = $5, image_ids = $6,
                   complete_products = $7, updated_at = now()""",
            family,
            png_key,
            webp_key,
            mosaic.width,
            mosaic.height,
            images,
            complete_products,
        )
        log.info("previewer.mosaic_stored", key=png_key, tiles=mosaic.tiles)

    async def _check_stalled(self, message: PreviewFamily) -> None:
        async with self.db.acquire() as connection:
            state = await product_state(connection, message.product_id)
            if state is None:
                log.warning("previewer.safety_net_no_product")
                return
            if not state.complete:
                created = await connection.fetchval(
                    "SELECT created_at FROM products WHERE id = $1", message.product_id
                )
                waited = (datetime.now(UTC) - created).total_seconds()
                if waited < self.settings.stall_timeout:
                    await self._look_again_later(message)
                    return
                state = await self._fail_stragglers(message.product_id, waited) or state
        await notify_product_ready(self.aws, self.db, state)

    async def _look_again_later(self, message: PreviewFamily) -> None:
        again = message.model_copy(update={"attempt": message.attempt + 1})
        await self.aws.send(
            self.settings.preview_queue, [again], delay_seconds=self.settings.safety_net_delay
        )
        log.info("previewer.safety_net_wait", attempt=again.attempt)

    async def _fail_stragglers(self, product: uuid.UUID, waited: float) -> ProductState | None:
        reason = f"rendering did not finish within {int(waited)} s; please upload it again"
        async with self.db.acquire() as connection:
            pending = await connection.fetch(
                "SELECT id FROM images WHERE product_id = $1 AND status = 'pending'", product
            )
            last: ProductState | None = None
            for row in pending:
                last = await finish_image(connection, row["id"], failure_reason=reason) or last
        log.warning("previewer.stragglers_failed", count=len(pending))
        return last
