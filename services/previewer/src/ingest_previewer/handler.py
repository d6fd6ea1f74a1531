"""What one preview message does.

`product_ready`: N random ready images across every set of the family → one mosaic,
PNG and WebP, under a content-derived key → the family's preview row → q.index.
The mosaic is rebuilt only if the family's revision moved since it was sampled (see
migration 0004): a burst of sets in one family, or a redelivered message, reuses it. The
mosaic it replaces is discarded after `garbage_delay` (pages may still show it).

`safety_net` (sent delayed by the batcher): if the set is complete, make sure product-
ready went out; otherwise look again later, unless the set has made no progress for the
stall timeout AND no render message is left that could still render its pending images
(the render queue holds none, in flight or waiting): then its messages were lost or
dead-lettered, and the stragglers fail with a retryable reason, which completes the
product. A long queue is never a reason to fail an image; a render that lands later
brings the image back (`ingest_common.db.completion`).
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import asyncpg
import structlog
from ingest_common import events
from ingest_common.db.completion import ProductState, finish_image, product_state
from ingest_common.db.pool import Connection
from ingest_common.garbage import discard
from ingest_common.notify import notify_product_ready
from ingest_common.runtime.consumer import Delivery
from ingest_common.runtime.service import Resources, ServiceHandler
from ingest_common.s3_put_blocking import ObjectPut
from ingest_common.s3_request import object_headers
from ingest_common.schemas.messages import (
    CheckProgress,
    IndexProduct,
    PreviewFamily,
    PreviewMessage,
)
from ingest_common.telemetry.tracing import tracer
from pydantic import TypeAdapter

from ingest_previewer.mosaic import Mosaic, compose_mosaic
from ingest_previewer.settings import PreviewerSettings

log = structlog.get_logger("ingest.previewer")

# The smallest PNG rendition at least as wide as a mosaic cell, for each of N random
# ready images of the family (all its products), and whether the image's WebP renditions are
# lossless (flat; NULL if none says: rendered before renditions recorded it, or no WebP).
_PICK_TILES = """
SELECT i.id,
       (SELECT r->>'key' FROM jsonb_array_elements(i.renditions) r
         WHERE r->>'format' = 'png'
         ORDER BY ((r->>'width')::int < $3), abs((r->>'width')::int - $3) LIMIT 1) AS key,
       (SELECT bool_and((r->>'lossless')::boolean) FROM jsonb_array_elements(i.renditions) r
         WHERE r->>'format' = 'webp') AS flat
  FROM images i JOIN products p ON p.id = i.product_id
 WHERE p.family_id = $1 AND i.status = 'ready'
 ORDER BY random()
 LIMIT $2
"""


_REVISION = "SELECT revision FROM families WHERE id = $1"
_CURRENT = "SELECT png_key, webp_key, revision FROM family_previews WHERE family_id = $1"
BUILD_SLACK = 60.0  # seconds past the handler timeout before a build's objects are judged
_FAMILY_LOCK_KEY = "hashtextextended('mosaic:' || $1::uuid::text, 0)"


_PREVIEW_MESSAGE: TypeAdapter[PreviewFamily | CheckProgress] = TypeAdapter(PreviewMessage)


class PreviewHandler(ServiceHandler[PreviewFamily | CheckProgress, PreviewerSettings]):
    message_model = PreviewFamily
    settings_class = PreviewerSettings

    def __init__(self, resources: Resources) -> None:
        super().__init__(resources)
        self.spec = self.settings.mosaic_spec()

    def parse(self, body: str) -> PreviewFamily | CheckProgress:
        return _PREVIEW_MESSAGE.validate_json(body)

    async def handle(self, message: PreviewFamily | CheckProgress, delivery: Delivery) -> None:
        structlog.contextvars.bind_contextvars(
            upload_id=str(message.upload_id),
            product_id=str(message.product_id),
            family_id=str(message.family_id),
        )
        match message:
            case CheckProgress():
                await self._check_stalled(message)
            case PreviewFamily():
                await self._build_mosaic(message)

    async def _build_mosaic(self, message: PreviewFamily) -> None:
        family = message.family_id
        # One build per family at a time: a burst's other messages wait here, then find
        # the mosaic current. The lock lasts until the new mosaic's row commits.
        async with self.db.acquire() as connection, _family_lock(connection, family):
            # Read before sampling: the sample may see a later revision than this (then a
            # later message rebuilds once more), never an earlier one.
            revision = await connection.fetchval(_REVISION, family)
            current = await connection.fetchrow(_CURRENT, family)
            if current is not None and current["revision"] == revision:
                log.info("previewer.mosaic_current", revision=revision)
            else:
                await self._rebuild(connection, family, revision, current)
        async with self.db.acquire() as connection:
            await connection.execute(
                "UPDATE products SET previewed_at = now() WHERE id = $1", message.product_id
            )
        await self.aws.send(
            self.settings.index_queue,
            [IndexProduct(upload_id=message.upload_id, product_id=message.product_id)],
        )

    async def _rebuild(
        self,
        connection: Connection,
        family: uuid.UUID,
        revision: int,
        current: asyncpg.Record | None,
    ) -> None:
        rows = await connection.fetch(
            _PICK_TILES, family, self.settings.mosaic_images, self.spec.tile
        )
        rows = [row for row in rows if row["key"]]
        if not rows:
            # Nothing ready in the family any more: no mosaic rather than a stale one.
            log.info("previewer.nothing_ready")
            if current is not None:
                async with connection.transaction():
                    await connection.execute(
                        "DELETE FROM family_previews WHERE family_id = $1", family
                    )
                    await self._discard(connection, current, keep=())
                    await self._tell(connection, family, None, 0)
            return
        tiles = await self.aws.get_many(self.settings.previews_bucket, [row["key"] for row in rows])
        flat = all(row["flat"] for row in rows)
        with tracer().start_as_current_span(
            "compose mosaic", attributes={"ingest.tiles": len(tiles)}
        ) as span:
            mosaic = await asyncio.to_thread(compose_mosaic, tiles, self.spec, flat_tiles=flat)
            span.set_attribute("ingest.mosaic.webp_lossless", mosaic.webp_lossless)
        images = [row["id"] for row in rows]
        keys = await self._store(connection, family, images, mosaic)
        async with connection.transaction():
            await self._record(connection, family, images, mosaic, keys, revision)
            if current is not None:
                await self._discard(connection, current, keep=keys)

    async def _tell(
        self,
        connection: Connection,
        family: uuid.UUID,
        mosaic: events.Mosaic | None,
        images: int,
    ) -> None:
        """family.preview_updated, in the transaction that changed the family's preview."""
        slug = await connection.fetchval("SELECT slug FROM families WHERE id = $1", family)
        data = events.FamilyPreviewUpdated(
            family_id=family,
            family=slug,
            previews_bucket=self.settings.previews_bucket,
            mosaic=mosaic,
            images=images,
        )
        await events.emit(connection, data, subject=family)

    async def _discard(
        self, connection: Connection, previous: asyncpg.Record, keep: tuple[str, ...]
    ) -> None:
        """The mosaic objects a new one replaced, deleted once pages have moved on."""
        for key in (previous["png_key"], previous["webp_key"]):
            if key not in keep:
                await discard(
                    connection,
                    "mosaic",
                    self.settings.previews_bucket,
                    key,
                    reason="superseded mosaic",
                    delay=self.settings.garbage_delay,
                )

    async def _store(
        self, connection: Connection, family: uuid.UUID, images: list[uuid.UUID], mosaic: Mosaic
    ) -> tuple[str, str]:
        """The mosaic's objects in S3, under keys that name their content."""
        # The key names its content, so CDNs may cache it forever.
        digest = hashlib.sha256(
            b"".join(i.bytes for i in images) + repr(self.spec).encode()
        ).hexdigest()[:20]
        base = f"previews/families/{family}/{digest}"
        png_key, webp_key = f"{base}.png", f"{base}.webp"
        # Recorded before the objects exist, and committed at once (outside the transaction
        # that records the mosaic): should this build fail after the PUTs, its objects are
        # not left behind. The sweeper keeps them once the family's row points at them; it
        # looks only after the longest a build may take.
        for key in (png_key, webp_key):
            await discard(
                connection,
                "mosaic",
                self.settings.previews_bucket,
                key,
                reason="a mosaic being built (kept if it becomes the family's)",
                delay=self.settings.handler_timeout + BUILD_SLACK,
            )
        await self.aws.put_many(
            [
                ObjectPut(
                    self.settings.previews_bucket,
                    key,
                    data,
                    object_headers(content_type, self.settings.cache_control),
                )
                for key, data, content_type in (
                    (png_key, mosaic.png, "image/png"),
                    (webp_key, mosaic.webp, "image/webp"),
                )
            ]
        )
        return png_key, webp_key

    async def _record(
        self,
        connection: Connection,
        family: uuid.UUID,
        images: list[uuid.UUID],
        mosaic: Mosaic,
        keys: tuple[str, str],
        revision: int,
    ) -> None:
        """The family's preview row and its event (inside the caller's transaction)."""
        png_key, webp_key = keys
        await connection.execute(
            """INSERT INTO family_previews
                      (family_id, png_key, webp_key, width, height, image_ids, revision)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (family_id) DO UPDATE
               SET png_key = $2, webp_key = $3, width = $4, height = $5, image_ids = $6,
                   revision = $7, updated_at = now()""",
            family,
            png_key,
            webp_key,
            mosaic.width,
            mosaic.height,
            images,
            revision,
        )
        await self._tell(
            connection,
            family,
            events.Mosaic(png=png_key, webp=webp_key, width=mosaic.width, height=mosaic.height),
            mosaic.tiles,
        )
        log.info(
            "previewer.mosaic_stored",
            key=png_key,
            tiles=mosaic.tiles,
            webp_lossless=mosaic.webp_lossless,
        )

    async def _check_stalled(self, message: CheckProgress) -> None:
        async with self.db.acquire() as connection:
            state = await product_state(connection, message.product_id)
            if state is None:
                log.warning("previewer.safety_net_no_product")
                return
            progressed = await connection.fetchval(
                "SELECT progressed_at FROM products WHERE id = $1", message.product_id
            )
        if not state.complete:
            idle = (datetime.now(UTC) - progressed).total_seconds()
            if idle < self.settings.stall_timeout:
                await self._look_again_later(message, "rendering")
                return
            if queued := await self._render_messages_left():
                # A backlog, or a processor that is down: its messages will still come.
                await self._look_again_later(message, f"{queued} render messages queued")
                return
            state = await self._fail_stragglers(message.product_id, idle) or state
        await notify_product_ready(self.aws, self.db, state)

    async def _render_messages_left(self) -> int:
        """Render messages that could still arrive, in the render queue or its slow lane:
        waiting, in flight, or delayed."""
        left = 0
        for queue in (self.settings.render_queue, self.settings.render_slow_queue):
            response = await self.aws.sqs.get_queue_attributes(
                QueueUrl=await self.aws.queue_url(queue),
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )
            left += sum(int(value) for value in response.get("Attributes", {}).values())
        return left

    async def _look_again_later(self, message: CheckProgress, why: str) -> None:
        again = message.model_copy(update={"attempt": message.attempt + 1})
        await self.aws.send(
            self.settings.preview_queue, [again], delay_seconds=self.settings.safety_net_delay
        )
        log.info("previewer.safety_net_wait", attempt=again.attempt, why=why)

    async def _fail_stragglers(self, product: uuid.UUID, idle: float) -> ProductState | None:
        reason = (
            f"rendering stopped: nothing happened for {int(idle)} s and no render message was"
            " left for it; it is kept for another try, or upload the set again"
        )
        async with self.db.acquire() as connection:
            pending = await connection.fetch(
                "SELECT id FROM images WHERE product_id = $1 AND status = 'pending'", product
            )
            last: ProductState | None = None
            for row in pending:
                finished = await finish_image(
                    connection,
                    row["id"],
                    renditions_bucket=self.settings.previews_bucket,
                    failure_reason=reason,
                    retryable=True,
                    discard_delay=self.settings.garbage_delay,
                )
                last = finished or last
        log.warning("previewer.stragglers_failed", count=len(pending))
        return last


@asynccontextmanager
async def _family_lock(connection: Connection, family: uuid.UUID) -> AsyncIterator[None]:
    """Hold the family's build lock on this connection (a session lock, not a transaction's).

    A build commits the garbage rows of its objects before their PUTs, so it cannot run in
    one transaction, and it must not take a second pool connection while it holds the
    lock: the messages waiting for the lock hold the pool's other connections (a burst of
    one family's messages would wait for each other until the handler timeout).
    """
    await connection.execute(f"SELECT pg_advisory_lock({_FAMILY_LOCK_KEY})", family)
    yield
    # After an error the unlock is left to the pool: releasing the connection unlocks
    # every advisory lock (asyncpg's reset), and a connection cut mid-query could not run
    # it anyway.
    await connection.execute(f"SELECT pg_advisory_unlock({_FAMILY_LOCK_KEY})", family)
