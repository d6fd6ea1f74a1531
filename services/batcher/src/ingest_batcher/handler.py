"""What one S3 upload event does.

download exactly the event's version (capped, hashed) → a repeat of a product the
contributor already has? point to it → safe extraction → manifest → plan → one
transaction: create the key's product, or make this upload its next version (see store.py)
→ the new originals to S3 → one render message per pending image → a delayed safety-net
message (or product-ready at once, for a version that renders nothing).

Every step is repeatable: ids are derived from the S3 object version, rows are inserted
once, objects are overwritten with the same bytes, and receivers ignore duplicates. A
redelivered event therefore resumes where the last attempt stopped.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import uuid
from collections.abc import Coroutine
from typing import IO, TYPE_CHECKING, Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from ingest_common import ids
from ingest_common.db.completion import product_state
from ingest_common.errors import Refused, RetryableError
from ingest_common.garbage import sweep, tag_rejected_upload
from ingest_common.notify import notify_product_ready
from ingest_common.outbox import OutboxPublisher, prune_outbox
from ingest_common.runtime.consumer import Delivery
from ingest_common.runtime.dependencies import Dependencies
from ingest_common.runtime.periodic import Periodic
from ingest_common.runtime.service import Resources, ServiceHandler
from ingest_common.s3_put_blocking import ObjectPut
from ingest_common.s3_request import object_headers
from ingest_common.schemas.manifest import parse_manifest
from ingest_common.schemas.messages import CheckProgress, RenderImage
from ingest_common.schemas.s3_event import S3Event, S3EventRecord
from ingest_common.telemetry import metrics
from ingest_common.telemetry.tracing import (
    TRACE_KEYS,
    context_from_carrier,
    format_trace_id,
    links_to,
    tracer,
)
from opentelemetry import trace

from ingest_batcher.archive import extract_archive
from ingest_batcher.keys import KEY_RULE, contributor_of, is_folder_marker, key_problem
from ingest_batcher.plan import UploadPlan, plan_upload
from ingest_batcher.reconcile import reconcile
from ingest_batcher.settings import BatcherSettings
from ingest_batcher.store import (
    UploadRow,
    apply_plan,
    find_repeat,
    mark_dispatched,
    mark_duplicate,
    original_key,
    pending_images,
    record_upload,
    reject_upload,
    set_archive_hash,
    start_again,
    supersede,
    upload_row,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3.type_defs import GetObjectOutputTypeDef

log = structlog.get_logger("ingest.batcher")

ORIGINALS_PREFIX = "originals/"
SVG_CONTENT_TYPE = "image/svg+xml"
PRIVATE_CACHE = "private, max-age=31536000, immutable"
SWEEPS_PER_TURN = 10  # sweeps of up to 1000 rows each per turn of the periodic task
# Upload states whose product may still need its render messages sent.
_DISPATCHED_STATES = ("processing", "ready", "failed", "duplicate")


class BatchHandler(ServiceHandler[S3Event, BatcherSettings]):
    message_model = S3Event
    settings_class = BatcherSettings

    def __init__(self, resources: Resources) -> None:
        super().__init__(resources)
        self.limits = self.settings.archive_limits()

    def periodic(self) -> list[Periodic]:
        """The batcher hosts the pipeline's housekeeping (one process at a time runs each)."""
        return [
            Periodic("reconcile uploads", self.settings.reconcile_interval, self._reconcile),
            Periodic("sweep garbage", self.settings.sweep_interval, self._sweep),
            Periodic("prune outbox", self.settings.sweep_interval, self._prune_outbox),
        ]

    def background(self, dependencies: Dependencies) -> list[Coroutine[Any, Any, None]]:
        """The batcher publishes the domain events (one process at a time, see outbox.py)."""
        publisher = OutboxPublisher(
            self.settings,
            self.aws,
            dependencies,
            poll_interval=self.settings.outbox_poll_interval,
            batch_window=self.settings.outbox_batch_window,
        )
        return [publisher.run()]

    async def _prune_outbox(self) -> dict[str, object]:
        return {"deleted": await prune_outbox(self.db, self.settings.outbox_retention)}

    async def _reconcile(self) -> dict[str, object]:
        report = await reconcile(
            self.aws, self.db, self.settings, grace=self.settings.reconcile_grace
        )
        return {"listed": report.listed, "reannounced": report.reannounced}

    async def _sweep(self) -> dict[str, object]:
        # Until a sweep finds nothing more that is due (bounded: the next turn goes on).
        total: dict[str, object] = {}
        for _ in range(SWEEPS_PER_TURN):
            report = await sweep(self.aws, self.db)
            total = dict(report.summary())
            if not report.busy:
                break
        return total

    async def handle(self, event: S3Event, delivery: Delivery) -> None:
        if event.is_test_event:
            log.info("batcher.test_event_ignored")
            return
        for record in event.records:
            if record.event_name.startswith("ObjectCreated"):
                await self._handle_record(record)

    async def _handle_record(self, record: S3EventRecord) -> None:
        bucket, key = record.s3.bucket.name, record.s3.object.decoded_key
        etag = record.s3.object.etag.strip('"')
        upload = ids.upload_id(bucket, key, etag)
        if is_folder_marker(key):
            log.info("batcher.folder_marker_ignored", key=key)
            return
        with structlog.contextvars.bound_contextvars(upload_id=str(upload), key=key):
            contributor = contributor_of(key)
            problem = key_problem(key)
            # Only the object's headers are read here: its metadata names the upload's trace.
            # The body is read only if the upload still needs processing (below); on every
            # other path it is closed unread.
            opened = await self._open(bucket, key, etag) if problem is None else None
            response = None if isinstance(opened, str) else opened
            metadata = dict(response.get("Metadata", {})) if response else {}
            carrier = {k: v for k, v in metadata.items() if k in TRACE_KEYS}
            # Everything else runs in the upload's trace, started by the client (or here,
            # if the client sent no traceparent); the consumer span is linked.
            with tracer().start_as_current_span(
                "batch upload",
                context=context_from_carrier(carrier),
                links=links_to(trace.get_current_span().get_span_context()),
                attributes={"ingest.upload_id": str(upload), "ingest.object_key": key},
            ) as span:
                spooling = False  # once True, _spool reads the body or closes it
                inline: dict[str, str] = {}  # original key → the SVG, for its render message
                try:
                    async with self.db.acquire() as connection:
                        row, sent_again = await record_upload(
                            connection,
                            upload,
                            bucket=bucket,
                            key=key,
                            etag=etag,
                            size=record.s3.object.size,
                            uploaded_at=record.event_time,
                            contributor=contributor,
                            traceparent=carrier.get("traceparent"),
                            trace_id=format_trace_id(span.get_span_context()),
                        )
                        if sent_again and contributor is not None:
                            done = await start_again(
                                connection,
                                upload,
                                record.event_time,
                                carrier.get("traceparent"),
                                previews_bucket=self.settings.previews_bucket,
                            )
                            log.info("batcher.sent_again", outcome=done)
                            row = await upload_row(connection, upload)
                    if problem is not None or contributor is None:
                        await self._reject(upload, problem or KEY_RULE, record)
                    elif isinstance(opened, str):
                        await self._unreadable(row, opened)
                    elif (
                        response is not None
                        and not row.dispatched
                        and row.status
                        in (
                            "received",
                            "processing",
                        )
                    ):
                        # Also on a redelivery after a crash: the originals may be missing.
                        with tempfile.TemporaryFile() as spool:
                            spooling = True
                            digest = await self._spool(response, spool)
                            inline = await self._ingest(row, contributor, spool, digest, record)
                finally:
                    if response is not None and not spooling:
                        # Not downloaded: a duplicate event, an upload already handled, or an
                        # error before the download. Let the connection go.
                        response["Body"].close()
                async with self.db.acquire() as connection:
                    row = await upload_row(connection, upload)
                if row.product_id is not None:
                    span.set_attribute("ingest.product_id", str(row.product_id))
                if not row.dispatched and row.status in _DISPATCHED_STATES:
                    await self._dispatch(row, inline)

    async def _open(self, bucket: str, key: str, etag: str) -> GetObjectOutputTypeDef | str:
        """GetObject of exactly the event's version: its headers (metadata, size), or why
        that version cannot be read (deleted since the event, or replaced by a newer PUT)."""
        try:
            return await self.aws.s3.get_object(Bucket=bucket, Key=key, IfMatch=etag)
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code in ("NoSuchKey", "404"):
                return "gone"  # deleted since the event: nothing to ingest, nothing to retry
            if code in ("PreconditionFailed", "412"):
                return "replaced"
            raise RetryableError(f"could not read s3://{bucket}/{key}: {exc}") from exc
        except BotoCoreError as exc:
            raise RetryableError(f"could not read s3://{bucket}/{key}: {exc}") from exc

    async def _spool(self, response: GetObjectOutputTypeDef, spool: IO[bytes]) -> str:
        """Stream the ZIP to a temporary file, refusing it past the size limit; its SHA-256.

        The body is read to its end or closed, whatever happens.
        """
        size = response["ContentLength"]
        digest = hashlib.sha256()
        if size > self.settings.max_archive_bytes:
            response["Body"].close()
            return digest.hexdigest()  # extraction reports the size with the contributor's words
        with tracer().start_as_current_span("download upload", attributes={"ingest.bytes": size}):
            try:
                async with response["Body"] as stream:
                    async for chunk in stream.iter_chunks(1 << 20):
                        data = chunk[0] if isinstance(chunk, tuple) else chunk
                        spool.write(data)
                        digest.update(data)
            except (BotoCoreError, ClientError, OSError) as exc:
                raise RetryableError(f"could not download the upload: {exc}") from exc
        spool.seek(0)
        return digest.hexdigest()

    async def _unreadable(self, row: UploadRow, why: str) -> None:
        if row.status != "received":
            return
        if why == "replaced":
            log.info("batcher.superseded_before_read")
            async with self.db.acquire() as connection:
                await supersede(connection, row.id, None)
            return
        log.warning("batcher.object_gone")
        await self._reject(
            row.id, "the ZIP could not be read: it was deleted before processing", None
        )

    async def _ingest(
        self,
        row: UploadRow,
        contributor: str,
        spool: IO[bytes],
        digest: str,
        record: S3EventRecord,
    ) -> dict[str, str]:
        """Plan, record and store the set; the SVGs its render messages may carry (by their
        original's key)."""
        upload = row.id
        async with self.db.acquire() as connection:
            await set_archive_hash(connection, upload, digest)
            repeat = (
                await find_repeat(connection, upload, contributor, digest)
                if row.status == "received"
                else None
            )
            if repeat is not None:
                retried = await mark_duplicate(
                    connection, upload, *repeat, previews_bucket=self.settings.previews_bucket
                )
                log.info("batcher.repeat", of=str(repeat[0]), retried_images=retried)
                return {}
        bucket, key = record.s3.bucket.name, record.s3.object.decoded_key
        try:
            plan = await asyncio.to_thread(self._plan, contributor, spool)
            async with self.db.acquire() as connection:
                applied = await apply_plan(
                    connection,
                    upload,
                    contributor,
                    plan,
                    bucket=bucket,
                    key=key,
                    uploaded_at=record.event_time,
                    originals_prefix=ORIGINALS_PREFIX,
                    previews_bucket=self.settings.previews_bucket,
                    discard_delay=self.settings.garbage_delay,
                )
        except Refused as exc:  # the archive, the manifest, the family: one effect
            await self._reject(upload, exc.reason, record)
            return {}
        log.info(
            "batcher.plan_applied", outcome=applied.outcome, product_id=str(applied.product_id)
        )
        if applied.outcome == "superseded":
            return {}
        metrics.upload_images.record(len(plan.images))
        # A redelivery after a crash may have lost any of them: store them all again then.
        needed = None if applied.outcome == "already applied" else applied.new_images
        await self._store_originals(plan, contributor, applied.product_id, needed)
        log.info(
            "batcher.product_ready_to_render",
            images=len(plan.images),
            new=len(applied.new_images),
            problems=len(plan.problems),
        )
        return self._inline_svgs(plan, contributor, applied.product_id)

    def _inline_svgs(
        self, plan: UploadPlan, contributor: str, product: uuid.UUID
    ) -> dict[str, str]:
        """The small SVGs, as text (an SVG that is not UTF-8 is read from S3 instead)."""
        inline: dict[str, str] = {}
        for image in plan.images:
            if len(image.data) > self.settings.inline_svg_bytes:
                continue
            try:
                text = image.data.decode()
            except UnicodeDecodeError:
                continue
            key = original_key(ORIGINALS_PREFIX, contributor, product, image.content_hash)
            inline[key] = text
        return inline

    def _plan(self, contributor: str, spool: IO[bytes]) -> UploadPlan:
        """CPU-bound and synchronous: runs in a thread, bounded by the archive limits."""
        spool.seek(0, 2)
        if spool.tell() == 0:
            raise Refused(
                "the ZIP could not be read: it was deleted before processing, or it is larger"
                f" than the limit of {self.settings.max_archive_bytes // 2**20} MiB"
            )
        spool.seek(0)
        archive = extract_archive(spool, self.limits)
        # manifest.json is one of the ZIP's entries: the rest is what a set may list.
        manifest = parse_manifest(archive.manifest, max_files=self.limits.max_entries - 1)
        if manifest.contributor is not None and manifest.contributor != contributor:
            raise Refused(
                f'manifest.json names contributor "{manifest.contributor}", but this upload '
                f'belongs to "{contributor}"'
            )
        return plan_upload(archive, manifest, max_svg_bytes=self.settings.max_file_bytes)

    async def _store_originals(
        self,
        plan: UploadPlan,
        contributor: str,
        product: uuid.UUID,
        only: frozenset[str] | None,
    ) -> None:
        headers = object_headers(SVG_CONTENT_TYPE, PRIVATE_CACHE)
        await self.aws.put_many(
            [
                ObjectPut(
                    self.settings.uploads_bucket,
                    original_key(ORIGINALS_PREFIX, contributor, product, image.content_hash),
                    image.data,
                    headers,
                )
                for image in plan.images
                if only is None or image.content_hash in only
            ]
        )

    async def _dispatch(self, row: UploadRow, inline: dict[str, str]) -> None:
        """One render message per pending image (carrying its SVG if `inline` has it), the
        safety net, product-ready if the product is complete already (a version that only
        removed images), then done."""
        assert row.product_id is not None
        product = row.product_id
        async with self.db.acquire() as connection:
            images = await pending_images(connection, product)
            state = await product_state(connection, product)
        assert state is not None, "a dispatched upload has its product"
        await self.aws.send(
            self.settings.render_queue,
            [
                RenderImage(
                    upload_id=row.id,
                    product_id=product,
                    image_id=image.id,
                    original_key=image.original_key,
                    svg=inline.get(image.original_key),
                )
                for image in images
            ],
        )
        if images:
            safety_net = CheckProgress(
                upload_id=row.id, product_id=product, family_id=state.family_id
            )
            await self.aws.send(
                self.settings.preview_queue,
                [safety_net],
                delay_seconds=self.settings.safety_net_delay,
            )
        await notify_product_ready(self.aws, self.db, state)
        async with self.db.acquire() as connection:
            await mark_dispatched(connection, row.id)

    async def _reject(self, upload: uuid.UUID, reason: str, record: S3EventRecord | None) -> None:
        log.warning("batcher.upload_rejected", reason=reason)
        if record is not None:
            # Before the row: a redelivery must find the tag missing, not the row done. With
            # the ETag, only this version expires, never a newer upload to the same key.
            await tag_rejected_upload(
                self.aws,
                record.s3.bucket.name,
                record.s3.object.decoded_key,
                etag=record.s3.object.etag.strip('"'),
            )
        async with self.db.acquire() as connection:
            await reject_upload(connection, upload, reason)
