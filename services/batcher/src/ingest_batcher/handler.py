"""What one S3 upload event does.

download (capped) → safe extraction → manifest → plan → one transaction (product, images)
→ originals to S3 → one render message per image → a delayed safety-net message.

Every step is repeatable: ids are derived from the S3 object version, rows are inserted
once, objects are overwritten with the same bytes, and receivers ignore duplicates. A
redelivered event therefore resumes where the last attempt stopped.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from typing import IO, TYPE_CHECKING

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from ingest_common import ids
from ingest_common.errors import RetryableError
from ingest_common.runtime.consumer import Delivery
from ingest_common.runtime.service import Resources, ServiceHandler
from ingest_common.schemas.manifest import ManifestInvalid, parse_manifest
from ingest_common.schemas.messages import PreviewFamily, RenderImage
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

from ingest_batcher.archive import ArchiveLimits, ArchiveRejected, extract_archive
from ingest_batcher.keys import KEY_RULE, contributor_of
from ingest_batcher.plan import UploadPlan, plan_upload
from ingest_batcher.settings import BatcherSettings
from ingest_batcher.store import (
    FamilyTaken,
    create_product,
    mark_dispatched,
    original_key,
    pending_images,
    record_upload,
    reject_upload,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3.type_defs import GetObjectOutputTypeDef

log = structlog.get_logger("ingest.batcher")

ORIGINALS_PREFIX = "originals/"
SVG_CONTENT_TYPE = "image/svg+xml"
PRIVATE_CACHE = "private, max-age=31536000, immutable"


class Rejected(Exception):
    """The whole set is refused; the reason is stored on the upload for the contributor."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BatchHandler(ServiceHandler[S3Event, BatcherSettings]):
    message_model = S3Event
    settings_class = BatcherSettings

    def __init__(self, resources: Resources) -> None:
        super().__init__(resources)
        settings = self.settings
        self.limits = ArchiveLimits(
            max_archive_bytes=settings.max_archive_bytes,
            max_entries=settings.max_entries,
            max_file_bytes=settings.max_file_bytes,
            max_total_bytes=settings.max_total_bytes,
            max_compression_ratio=settings.max_compression_ratio,
            max_manifest_bytes=settings.max_manifest_bytes,
        )

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
        product = ids.product_id(upload)
        with structlog.contextvars.bound_contextvars(
            upload_id=str(upload), product_id=str(product), key=key
        ):
            contributor = contributor_of(key)
            # Only the object's headers are read here: its metadata names the upload's trace.
            # The body is read only if the upload still needs its product (below); on every
            # other path it is closed unread.
            response = await self._open(bucket, key) if contributor else None
            metadata = dict(response.get("Metadata", {})) if response else {}
            carrier = {k: v for k, v in metadata.items() if k in TRACE_KEYS}
            # Everything else runs in the upload's trace, started by the client (or here,
            # if the client sent no traceparent); the consumer span is linked.
            with tracer().start_as_current_span(
                "batch upload",
                context=context_from_carrier(carrier),
                links=links_to(trace.get_current_span().get_span_context()),
                attributes={
                    "ingest.upload_id": str(upload),
                    "ingest.product_id": str(product),
                    "ingest.object_key": key,
                },
            ) as span:
                if response is None and contributor:
                    log.warning("batcher.object_gone")
                spooling = False  # once True, _spool reads the body or closes it
                try:
                    async with self.db.acquire() as connection:
                        row = await record_upload(
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
                    if contributor is None:
                        await self._reject(upload, f"{key!r} was refused: {KEY_RULE}.")
                    elif not row.dispatched and row.status in ("received", "processing"):
                        # Also on a redelivery after a crash: the originals may be missing.
                        with tempfile.TemporaryFile() as spool:
                            if response is not None:
                                spooling = True
                                await self._spool(response, spool)
                            await self._create(upload, contributor, spool)
                finally:
                    if response is not None and not spooling:
                        # Not downloaded: a duplicate event, an upload already handled, or an
                        # error before the download. Let the connection go.
                        response["Body"].close()
                if not row.dispatched:
                    await self._dispatch(upload)

    async def _open(self, bucket: str, key: str) -> GetObjectOutputTypeDef | None:
        """GetObject: its headers (metadata, size); None if the object is gone."""
        try:
            return await self.aws.s3.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchKey", "404"):
                # Deleted since the event: nothing to ingest, and nothing to retry.
                return None
            raise RetryableError(f"could not read s3://{bucket}/{key}: {exc}") from exc
        except BotoCoreError as exc:
            raise RetryableError(f"could not read s3://{bucket}/{key}: {exc}") from exc

    async def _spool(self, response: GetObjectOutputTypeDef, spool: IO[bytes]) -> None:
        """Stream the ZIP to a temporary file, refusing it past the size limit.

        The body is read to its end or closed, whatever happens.
        """
        size = response["ContentLength"]
        if size > self.settings.max_archive_bytes:
            response["Body"].close()
            return  # extraction reports the size with the contributor's words
        with tracer().start_as_current_span("download upload", attributes={"ingest.bytes": size}):
            try:
                async with response["Body"] as stream:
                    async for chunk in stream.iter_chunks(1 << 20):
                        spool.write(chunk[0] if isinstance(chunk, tuple) else chunk)
            except (BotoCoreError, ClientError, OSError) as exc:
                raise RetryableError(f"could not download the upload: {exc}") from exc
        spool.seek(0)

    async def _create(self, upload: uuid.UUID, contributor: str, spool: IO[bytes]) -> None:
        try:
            plan = await asyncio.to_thread(self._plan, contributor, spool)
            async with self.db.acquire() as connection:
                await create_product(connection, upload, contributor, plan, ORIGINALS_PREFIX)
        except ArchiveRejected as exc:
            await self._reject(upload, exc.reason)
            return
        except ManifestInvalid as exc:
            await self._reject(upload, "manifest.json is not valid: " + "; ".join(exc.problems))
            return
        except Rejected as exc:
            await self._reject(upload, exc.reason)
            return
        except FamilyTaken as exc:
            await self._reject(
                upload, f'the family "{exc}" belongs to another contributor; choose another name'
            )
            return
        metrics.upload_images.record(len(plan.images))
        await self._store_originals(plan, contributor, upload)
        log.info("batcher.product_created", images=len(plan.images), problems=len(plan.problems))

    def _plan(self, contributor: str, spool: IO[bytes]) -> UploadPlan:
        """CPU-bound and synchronous: runs in a thread, bounded by the archive limits."""
        spool.seek(0, 2)
        if spool.tell() == 0:
            raise Rejected(
                "the ZIP could not be read: it was deleted before processing, or it is larger"
                f" than the limit of {self.settings.max_archive_bytes // 2**20} MiB"
            )
        spool.seek(0)
        archive = extract_archive(spool, self.limits)
        manifest = parse_manifest(archive.manifest)
        if manifest.contributor is not None and manifest.contributor != contributor:
            raise Rejected(
                f'manifest.json names contributor "{manifest.contributor}", but this upload '
                f'belongs to "{contributor}"'
            )
        return plan_upload(archive, manifest, max_svg_bytes=self.settings.max_file_bytes)

    async def _store_originals(self, plan: UploadPlan, contributor: str, upload: uuid.UUID) -> None:
        product = ids.product_id(upload)
        await asyncio.gather(
            *(
                self.aws.put_bytes(
                    self.settings.uploads_bucket,
                    original_key(ORIGINALS_PREFIX, contributor, product, image.content_hash),
                    image.data,
                    content_type=SVG_CONTENT_TYPE,
                    cache_control=PRIVATE_CACHE,
                )
                for image in plan.images
            )
        )

    async def _dispatch(self, upload: uuid.UUID) -> None:
        """One render message per pending image, then the safety net, then done."""
        product = ids.product_id(upload)
        async with self.db.acquire() as connection:
            family = await connection.fetchval(
                "SELECT family_id FROM products WHERE id = $1", product
            )
            images = await pending_images(connection, product) if family else []
        if family is not None:
            await self.aws.send(
                self.settings.render_queue,
                [
                    RenderImage(
                        upload_id=upload,
                        product_id=product,
                        image_id=image.id,
                        original_key=image.original_key,
                    )
                    for image in images
                ],
            )
            safety_net = PreviewFamily(
                reason="safety_net", upload_id=upload, product_id=product, family_id=family
            )
            await self.aws.send(
                self.settings.preview_queue,
                [safety_net],
                delay_seconds=self.settings.safety_net_delay,
            )
        async with self.db.acquire() as connection:
            await mark_dispatched(connection, upload)

    async def _reject(self, upload: uuid.UUID, reason: str) -> None:
        log.warning("batcher.upload_rejected", reason=reason)
        async with self.db.acquire() as connection:
            await reject_upload(connection, upload, reason)
