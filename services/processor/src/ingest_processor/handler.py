"""What one render message does.

the SVG (carried by the message if small, else the original from S3) → every width × format
in a worker process, which puts the renditions to S3 with immutable caching → the image row
ready (or failed with a reason) and the product's counters, in one transaction → if that
completed the product: product-ready, at once.

Two lanes, so that one heavy SVG never costs anyone else (README "Render isolation"): the
render queue's renders get `INGEST_RENDER_SLOW_AFTER` seconds of CPU; one that needs more
is stopped (only its worker is replaced) and its message moves to the slow lane's queue.
The processor consumes that queue too, with a pool of its own at a lower CPU priority,
where a render gets the whole `INGEST_RENDER_TIMEOUT` of CPU. A new upload's renders try
the render queue one at a time until one fits the budget; if one does not first, the
upload is heavy and its next renders go straight to the slow lane (lanes.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import ClassVar, Self

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from ingest_common.aws import ObjectTooLarge
from ingest_common.db.completion import ProductState, finish_image, product_state
from ingest_common.dead_letters import original_attributes
from ingest_common.errors import PermanentError, RetryableError
from ingest_common.garbage import reclaim_renditions
from ingest_common.notify import notify_product_ready
from ingest_common.runtime.consumer import Delivery
from ingest_common.runtime.service import Resources, ServiceHandler
from ingest_common.schemas.messages import RenderImage
from ingest_common.telemetry import metrics
from ingest_common.telemetry.tracing import tracer
from opentelemetry import trace

from ingest_processor.lanes import Uploads
from ingest_processor.pool import RenderPool, RenderTimedOut, render_pool
from ingest_processor.render import RenderRejected, RenderResult
from ingest_processor.renditions import StoreOrder, render_profile, store_order
from ingest_processor.settings import ProcessorSettings
from ingest_processor.statuses import ImageStatuses
from ingest_processor.stored import stored_entries

log = structlog.get_logger("ingest.processor")


class RenderHandler(ServiceHandler[RenderImage, ProcessorSettings]):
    """The render queue's lane."""

    message_model = RenderImage
    settings_class = ProcessorSettings
    slow: ClassVar[bool] = False

    def __init__(self, resources: Resources, pool: RenderPool) -> None:
        super().__init__(resources)
        self.pool = pool
        self.profile = render_profile(pool.spec)
        after = self.settings.render_slow_after
        # Seconds of CPU a render gets in this lane; None: all it may have, here.
        self.budget = None if self.slow or not after else after
        self.uploads = Uploads()
        self.statuses = ImageStatuses(self.db)

    @classmethod
    def lane(cls) -> str:
        """The lane's name in metrics."""
        return "slow" if cls.slow else "render"

    @classmethod
    @asynccontextmanager
    async def open(cls, resources: Resources) -> AsyncIterator[Self]:
        """The handler with its render pool, which lives as long as the service."""
        settings = resources.settings
        assert isinstance(settings, ProcessorSettings)
        puts = resources.aws.put_settings()
        async with render_pool(settings, slow=cls.slow, puts=puts) as pool:
            metrics.watch_render_pool(cls.lane(), pool.busy_seconds, pool.workers)
            try:
                yield cls(resources, pool)
            finally:
                metrics.unwatch_render_pool(cls.lane())

    async def handle(self, message: RenderImage, delivery: Delivery) -> None:
        structlog.contextvars.bind_contextvars(
            upload_id=str(message.upload_id),
            product_id=str(message.product_id),
            image_id=str(message.image_id),
        )
        image = await self.statuses.read(message.image_id)
        if image is None:
            raise PermanentError(f"image {message.image_id} does not exist")
        if image["status"] == "retired":
            log.info("processor.image_retired")  # a newer version of its set dropped it
            return
        reviving = image["status"] == "failed" and image["failure_retryable"]
        if reviving:
            # Its failure discarded its renditions: withdraw that before storing new ones,
            # so a sweep under way cannot delete what this render is about to put.
            async with self.db.acquire() as connection:
                await reclaim_renditions(
                    connection, self.settings.previews_bucket, message.image_id
                )
        if image["status"] == "pending" or reviving:
            # The state our own finish saw: only the image that completed the product sends
            # product-ready. Reading the product afresh here would let the handler of an image
            # finished a moment earlier send it too, once a concurrent image completes it.
            # A retryable failure (dead-lettered, lost) comes back to life here.
            state = await self._render(message, delivery)
        else:
            # A redelivery: if product-ready was never sent (a crash after the last image
            # finished), send it now.
            async with self.db.acquire() as connection:
                state = await product_state(connection, message.product_id)
        if state is not None:
            await notify_product_ready(self.aws, self.db, state)

    async def gave_up(self, message: RenderImage, reason: str) -> None:
        """The message failed its last try and goes to the DLQ: the image fails, for now."""
        state = await self._fail(
            message,
            f"could not be rendered ({reason}); it is kept for another try, no need to upload"
            " it again",
            retryable=True,
        )
        if state is not None:
            await notify_product_ready(self.aws, self.db, state)

    async def _render(self, message: RenderImage, delivery: Delivery) -> ProductState | None:
        """Render, store and finish the image; the product's state after that finish (None
        if the image did not change, or its render moved to the slow lane)."""
        upload = message.upload_id
        try:
            if self.budget is not None and self.uploads.heavy(upload):
                await self._to_slow_lane(delivery, "its upload is heavy")
                return None
            svg = await self._original(message)
            store = store_order(
                self.settings,
                message.image_id,
                self.profile,
                await self.aws.s3_objects.credentials(),
            )
            if self.budget is None:
                result = await self._render_in_pool(svg, store)
            else:
                async with self.uploads.trial(upload):
                    if self.uploads.heavy(upload):  # decided while this one waited its turn
                        await self._to_slow_lane(delivery, "its upload is heavy")
                        return None
                    try:
                        # Proven once rendered (the pool calls back before the result): the
                        # upload's other renders need not wait for this one's PUTs.
                        result = await self._render_in_pool(
                            svg, store, on_rendered=lambda: self.uploads.judge(upload, "proven")
                        )
                    except RenderTimedOut:
                        self.uploads.judge(upload, "heavy")
                        await self._to_slow_lane(delivery, f"over {self.budget:g} s of CPU")
                        return None
        except ObjectTooLarge as exc:
            return await self._fail(
                message, f"is {exc.size:,} bytes, over the limit of {exc.limit:,}"
            )
        except RenderRejected as exc:
            return await self._fail(message, exc.reason)
        except (BotoCoreError, ClientError) as exc:
            raise RetryableError(f"could not read the original: {exc}") from exc
        # Stored by the worker that rendered them; their PUTs' spans are drawn here.
        renditions = stored_entries(result, self.aws.s3_objects.endpoint, self.profile)
        async with self.db.acquire() as connection:
            state = await finish_image(
                connection,
                message.image_id,
                renditions_bucket=self.settings.previews_bucket,
                width=result.source_width,
                height=result.source_height,
                renditions=renditions,
                warnings=list(result.warnings),
            )
        log.info(
            "processor.image_ready",
            renditions=len(renditions),
            warnings=len(result.warnings),
            completed=bool(state and state.complete),
        )
        return state

    async def _original(self, message: RenderImage) -> bytes:
        """The SVG: carried by the message (a small one), or read from S3."""
        limit = self.settings.max_svg_bytes
        if message.svg is None:
            return await self.aws.get_bytes(
                self.settings.uploads_bucket, message.original_key, max_bytes=limit
            )
        svg = message.svg.encode()
        if len(svg) > limit:
            raise ObjectTooLarge(message.original_key, len(svg), limit)
        return svg

    async def _to_slow_lane(self, delivery: Delivery, why: str) -> None:
        """The same message, on the slow lane's queue; this one is then done."""
        await self.aws.send_raw(
            self.settings.render_slow_queue,
            delivery.body,
            original_attributes(delivery.attributes),
        )
        log.info("processor.moved_to_slow_lane", why=why)

    async def _render_in_pool(
        self, svg: bytes, store: StoreOrder, on_rendered: Callable[[], None] | None = None
    ) -> RenderResult:
        """`render svg` (in a worker, which then stores the renditions) with a child span per
        rendition, timed by the worker. The span ends with the last rendition: the worker's
        PUTs come after, and their spans go beside it (stored.py)."""
        span = tracer().start_span(
            "render svg", attributes={"ingest.svg.bytes": len(svg), "ingest.slow_lane": self.slow}
        )
        try:
            with trace.use_span(span, end_on_exit=False):
                result = await self.pool.render(
                    svg, timeout=self.budget, store=store, on_rendered=on_rendered
                )
        except BaseException:
            span.end()
            raise
        span.set_attribute("ingest.svg.width", result.source_width)
        span.set_attribute("ingest.svg.height", result.source_height)
        first_of_width: set[int] = set()
        for rendition in result.renditions:
            child = tracer().start_span(
                f"render {rendition.width}px {rendition.format}",
                context=trace.set_span_in_context(span),
                start_time=rendition.started_ns,
                attributes={
                    "ingest.rendition.width": rendition.width,
                    "ingest.rendition.height": rendition.height,
                    "ingest.rendition.format": rendition.format,
                    "ingest.rendition.bytes": rendition.size,
                    "ingest.rendition.rasterised": rendition.width not in first_of_width,
                },
            )
            child.end(end_time=rendition.ended_ns)
            first_of_width.add(rendition.width)
        # Never empty: the spec has at least one width and one format, all rendered here.
        started = min(r.started_ns for r in result.renditions)
        ended = max(r.ended_ns for r in result.renditions)
        # One record per SVG, not per rendition: a record costs the SDK as much as a span
        # (two readers, attribute hashing), and the per-rendition times are in the spans.
        metrics.render_duration.record(max(0, ended - started) / 1e9, {"lane": self.lane()})
        span.end(end_time=ended)
        return result

    async def _fail(
        self, message: RenderImage, reason: str, *, retryable: bool = False
    ) -> ProductState | None:
        log.warning("processor.image_failed", reason=reason)
        async with self.db.acquire() as connection:
            return await finish_image(
                connection,
                message.image_id,
                renditions_bucket=self.settings.previews_bucket,
                failure_reason=reason,
                retryable=retryable,
                discard_delay=self.settings.garbage_delay,
            )


class SlowRenderHandler(RenderHandler):
    """The slow lane: renders that needed more CPU than the render queue gives one."""

    slow = True
