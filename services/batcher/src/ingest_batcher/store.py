"""The batcher's writes to PostgreSQL: the upload row, and what an upload does to products.

An upload is one PUT of one object version (its id comes from bucket, key and ETag). A
product is the set stored at one key. So an upload either creates its key's product,
becomes the next version of it, repeats a product that already shows the same bytes
(`duplicate`), or arrives after a newer version of its key was applied (`superseded`).
The same bytes sent again to the same key (same upload id, a later event) process anew
what did not succeed: a rejected upload is reconsidered, failed images are rendered again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from ingest_common import ids
from ingest_common.db.completion import emit_product_outcome
from ingest_common.db.pool import Connection
from ingest_common.errors import Refused
from ingest_common.events import FileProblem as EventFileProblem
from ingest_common.events import UploadReceived, UploadRejected, emit
from ingest_common.garbage import discard, discard_renditions, reclaim, reclaim_renditions

from ingest_batcher.archive import FileProblem
from ingest_batcher.plan import UploadPlan


@dataclass(frozen=True)
class UploadRow:
    id: uuid.UUID
    status: str
    dispatched: bool
    product_id: uuid.UUID | None
    uploaded_at: datetime | None  # the event time this row was last (re)started by


@dataclass(frozen=True)
class PendingImage:
    id: uuid.UUID
    original_key: str


@dataclass(frozen=True)
class Applied:
    """What applying a plan did: the product, and the images whose originals are needed."""

    product_id: uuid.UUID
    outcome: str  # created, updated, already applied, superseded
    new_images: frozenset[str]  # content hashes of images this version added


class FamilyTaken(Refused):
    """The manifest names a family that another contributor owns."""

    def __init__(self, family: str) -> None:
        super().__init__(
            f'the family "{family}" belongs to another contributor; choose another name'
        )


class FamilyMoved(Refused):
    """A new version names another family than its product's."""

    def __init__(self, family: str) -> None:
        super().__init__(
            f'a new version cannot move the set out of its family "{family}"; upload it'
            " under a new name to start another set"
        )


_UPLOAD = """
SELECT id, status::text AS status, dispatched_at IS NOT NULL AS dispatched, product_id,
       uploaded_at
  FROM uploads WHERE id = $1
"""


async def record_upload(
    connection: Connection,
    upload: uuid.UUID,
    *,
    bucket: str,
    key: str,
    etag: str,
    size: int,
    uploaded_at: datetime,
    contributor: str | None,
    traceparent: str | None,
    trace_id: str | None,
) -> tuple[UploadRow, bool]:
    """Insert the upload once; a redelivered event finds the row it made before.

    Returns the row and whether this event is the same bytes sent again: the row existed
    and this event is a later PUT (a redelivery carries the event time it had).
    """
    async with connection.transaction():
        if contributor is not None:
            await connection.execute(
                "INSERT INTO contributors (id) VALUES ($1) ON CONFLICT DO NOTHING", contributor
            )
        created = await connection.fetchval(
            """INSERT INTO uploads (id, bucket, object_key, etag, object_size, uploaded_at,
                                    contributor_id, traceparent, trace_id)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
               ON CONFLICT (id) DO NOTHING RETURNING true""",
            upload,
            bucket,
            key,
            etag,
            size,
            uploaded_at,
            contributor,
            traceparent,
            trace_id,
        )
        if created:
            await emit(
                connection,
                UploadReceived(
                    upload_id=upload, contributor=contributor, bucket=bucket, key=key, size=size
                ),
                subject=upload,
            )
        row = await upload_row(connection, upload)
    sent_again = not created and row.uploaded_at is not None and uploaded_at > row.uploaded_at
    return row, sent_again


async def upload_row(connection: Connection, upload: uuid.UUID) -> UploadRow:
    row = await connection.fetchrow(_UPLOAD, upload)
    assert row is not None, f"upload {upload} was recorded"
    return UploadRow(
        row["id"], row["status"], row["dispatched"], row["product_id"], row["uploaded_at"]
    )


async def start_again(
    connection: Connection,
    upload: uuid.UUID,
    uploaded_at: datetime,
    traceparent: str | None,
    *,
    previews_bucket: str,
) -> str:
    """The same bytes sent again to the same key: redo what did not succeed.

    A rejected, duplicate or superseded upload starts from the beginning (it may have been
    refused by limits since raised, or be a revert to an earlier version); an upload with
    a product renders its failed images again. Returns what was done, for the log.
    """
    async with connection.transaction():
        row = await connection.fetchrow(_UPLOAD + " FOR UPDATE", upload)
        assert row is not None
        common = "uploaded_at = $2, traceparent = coalesce($3, traceparent), updated_at = now()"
        if row["status"] in ("rejected", "duplicate", "superseded"):
            await connection.execute(
                f"""UPDATE uploads SET status = 'received', error = NULL, file_errors = '[]',
                           duplicate_of = NULL, replaced_by = NULL, dispatched_at = NULL,
                           product_id = NULL, {common}
                     WHERE id = $1""",
                upload,
                uploaded_at,
                traceparent,
            )
            return f"was {row['status']}: processed anew"
        await connection.execute(
            f"UPDATE uploads SET {common} WHERE id = $1", upload, uploaded_at, traceparent
        )
        if row["product_id"] is None:
            return "not processed yet: resumed"
        retried = await retry_failed(
            connection, row["product_id"], upload, previews_bucket=previews_bucket
        )
        if not retried:
            return "a repeat: every image is ready already"
        return f"{retried} failed image(s) to render again"


async def retry_failed(
    connection: Connection, product: uuid.UUID, upload: uuid.UUID, *, previews_bucket: str
) -> int:
    """Failed images of the product back to pending, to be rendered again by `upload`'s
    dispatch. Returns how many; 0 changes nothing."""
    reset = await connection.fetch(
        """UPDATE images SET status = 'pending', failure_reason = NULL,
                  failure_retryable = false, finished_at = NULL
            WHERE product_id = $1 AND status = 'failed' RETURNING id""",
        product,
    )
    for image in reset:
        # The failure discarded the image's renditions, and the sweeper's guard keeps them
        # only once the image is ready: a sweep while it renders again would delete the new
        # ones (same keys). Withdraw that in this transaction, before any render starts.
        await reclaim_renditions(connection, previews_bucket, image["id"])
    count = len(reset)
    if count:
        await recount(connection, product, previews_bucket=previews_bucket)
        await connection.execute(
            "UPDATE uploads SET dispatched_at = NULL, updated_at = now() WHERE id = $1", upload
        )
        await connection.execute(
            """UPDATE uploads SET status = 'processing', updated_at = now()
                WHERE id = (SELECT current_upload_id FROM products WHERE id = $1)""",
            product,
        )
    return count


async def find_repeat(
    connection: Connection, upload: uuid.UUID, contributor: str, archive_sha256: str
) -> tuple[uuid.UUID, uuid.UUID] | None:
    """(upload, product) of the contributor's product that shows these very bytes now."""
    row = await connection.fetchrow(
        """SELECT u.id, u.product_id FROM uploads u
             JOIN products p ON p.current_upload_id = u.id
            WHERE u.contributor_id = $1 AND u.archive_sha256 = $2 AND u.id <> $3
            ORDER BY u.received_at DESC LIMIT 1""",
        contributor,
        archive_sha256,
        upload,
    )
    return (row["id"], row["product_id"]) if row else None


async def mark_duplicate(
    connection: Connection,
    upload: uuid.UUID,
    of: uuid.UUID,
    product: uuid.UUID,
    *,
    previews_bucket: str,
) -> int:
    """This upload repeats `of`: point to its product, and render its failed images again
    (the contributor sent the set again because of them). Returns how many are retried."""
    async with connection.transaction():
        await connection.execute(
            """UPDATE uploads SET status = 'duplicate', duplicate_of = $2, product_id = $3,
                      dispatched_at = now(), updated_at = now()
                WHERE id = $1 AND status = 'received'""",
            upload,
            of,
            product,
        )
        return await retry_failed(connection, product, upload, previews_bucket=previews_bucket)


async def set_archive_hash(connection: Connection, upload: uuid.UUID, digest: str) -> None:
    await connection.execute("UPDATE uploads SET archive_sha256 = $2 WHERE id = $1", upload, digest)


async def reject_upload(
    connection: Connection,
    upload: uuid.UUID,
    reason: str,
    problems: list[FileProblem] | None = None,
) -> None:
    async with connection.transaction():
        row = await connection.fetchrow(
            """UPDATE uploads SET status = 'rejected', error = $2, file_errors = $3,
                      updated_at = now()
                WHERE id = $1 AND status = 'received'
            RETURNING contributor_id, object_key""",
            upload,
            reason,
            _problems_json(problems or []),
        )
        if row is not None:
            await emit(
                connection,
                UploadRejected(
                    upload_id=upload,
                    contributor=row["contributor_id"],
                    key=row["object_key"],
                    reason=reason,
                    file_problems=[
                        EventFileProblem(path=p.path, reason=p.reason) for p in problems or []
                    ],
                ),
                subject=upload,
            )


async def supersede(connection: Connection, upload: uuid.UUID, by: uuid.UUID | None) -> None:
    """A newer version of the key was applied first: this one is history, not shown."""
    await connection.execute(
        """UPDATE uploads SET status = 'superseded', replaced_by = $2, dispatched_at = now(),
                  updated_at = now()
            WHERE id = $1 AND status IN ('received', 'processing', 'ready', 'failed')""",
        upload,
        by,
    )


async def apply_plan(
    connection: Connection,
    upload: uuid.UUID,
    contributor: str,
    plan: UploadPlan,
    *,
    bucket: str,
    key: str,
    uploaded_at: datetime,
    originals_prefix: str,
    previews_bucket: str,
    discard_delay: float,
) -> Applied:
    """Create the key's product, or make this upload its next version, in one transaction.

    Raises FamilyTaken or FamilyMoved, writing nothing, when the family cannot be used.
    """
    manifest = plan.manifest
    family = ids.family_id(manifest.family)
    async with connection.transaction():
        await connection.execute(
            """INSERT INTO families (id, slug, name, contributor_id) VALUES ($1, $2, $3, $4)
               ON CONFLICT (slug) DO NOTHING""",
            family,
            manifest.family,
            manifest.family_name or manifest.family,
            contributor,
        )
        owner = await connection.fetchval(
            "SELECT contributor_id FROM families WHERE id = $1", family
        )
        if owner != contributor:
            raise FamilyTaken(manifest.family)
        current = await connection.fetchrow(
            """SELECT p.id, p.family_id, p.current_upload_id, u.uploaded_at, f.slug
                 FROM products p JOIN uploads u ON u.id = p.current_upload_id
                 JOIN families f ON f.id = p.family_id
                WHERE p.bucket = $1 AND p.object_key = $2 FOR UPDATE OF p""",
            bucket,
            key,
        )
        if current is None:
            product = ids.product_id(upload)
            await _insert_product(
                connection, product, upload, family, contributor, plan, bucket, key
            )
            new = await _insert_images(
                connection, product, upload, contributor, plan, originals_prefix
            )
            outcome = "created"
        elif current["current_upload_id"] == upload:
            product, new, outcome = current["id"], frozenset(), "already applied"
        elif current["uploaded_at"] is not None and current["uploaded_at"] > uploaded_at:
            await supersede(connection, upload, current["current_upload_id"])
            return Applied(current["id"], "superseded", frozenset())
        elif current["family_id"] != family:
            raise FamilyMoved(current["slug"])
        else:
            product = current["id"]
            await _update_product(connection, product, upload, plan)
            new = await _new_version_images(
                connection,
                product,
                upload,
                contributor,
                plan,
                originals_prefix,
                bucket,
                previews_bucket,
                discard_delay,
            )
            await supersede(connection, current["current_upload_id"], upload)
            outcome = "updated"
        await connection.execute(
            """UPDATE uploads SET status = 'processing', product_id = $2, file_errors = $3,
                      updated_at = now()
                WHERE id = $1 AND status = 'received'""",
            upload,
            product,
            _problems_json(plan.problems),
        )
        if outcome == "updated":
            # Complete at once if the version only removed or re-described images.
            await recount(connection, product, previews_bucket=previews_bucket)
    return Applied(product, outcome, new)


async def _insert_product(
    connection: Connection,
    product: uuid.UUID,
    upload: uuid.UUID,
    family: uuid.UUID,
    contributor: str,
    plan: UploadPlan,
    bucket: str,
    key: str,
) -> None:
    manifest = plan.manifest
    await connection.execute(
        """INSERT INTO products (id, upload_id, current_upload_id, family_id, contributor_id,
                                 product_type, title, description, tags, license, image_count,
                                 bucket, object_key)
           VALUES ($1, $2, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
           ON CONFLICT (id) DO NOTHING""",
        product,
        upload,
        family,
        contributor,
        manifest.product_type,
        manifest.title,
        manifest.description,
        list(manifest.tags),
        manifest.license,
        len(plan.images),
        bucket,
        key,
    )


async def _update_product(
    connection: Connection, product: uuid.UUID, upload: uuid.UUID, plan: UploadPlan
) -> None:
    manifest = plan.manifest
    await connection.execute(
        """UPDATE products SET current_upload_id = $2, product_type = $3, title = $4,
                  description = $5, tags = $6, license = $7
            WHERE id = $1""",
        product,
        upload,
        manifest.product_type,
        manifest.title,
        manifest.description,
        list(manifest.tags),
        manifest.license,
    )


async def _insert_images(
    connection: Connection,
    product: uuid.UUID,
    upload: uuid.UUID,
    contributor: str,
    plan: UploadPlan,
    originals_prefix: str,
    only: set[str] | None = None,
) -> frozenset[str]:
    """Insert the plan's images (those whose content hash is in `only`, if given).

    An image this very upload added before and a later version retired (the upload is a
    revert, sent again) has this id already: it comes back as pending, to render again.
    An active row with the id (a redelivery) is left as it is.
    """
    images = [i for i in plan.images if only is None or i.content_hash in only]
    await connection.executemany(
        """INSERT INTO images (id, product_id, position, path, title, tags, content_hash,
                               byte_size, original_key)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (id) DO UPDATE
              SET status = 'pending', retired_at = NULL, failure_reason = NULL,
                  failure_retryable = false, width = NULL, height = NULL, renditions = '[]',
                  finished_at = NULL, position = excluded.position, path = excluded.path,
                  title = excluded.title, tags = excluded.tags
            WHERE images.retired_at IS NOT NULL""",
        [
            (
                ids.image_id(product, upload, image.content_hash),
                product,
                image.position,
                image.path,
                image.title,
                list(image.tags),
                image.content_hash,
                len(image.data),
                original_key(originals_prefix, contributor, product, image.content_hash),
            )
            for image in images
        ],
    )
    return frozenset(i.content_hash for i in images)


async def _new_version_images(
    connection: Connection,
    product: uuid.UUID,
    upload: uuid.UUID,
    contributor: str,
    plan: UploadPlan,
    originals_prefix: str,
    uploads_bucket: str,
    previews_bucket: str,
    discard_delay: float,
) -> frozenset[str]:
    """Keep the images whose content is unchanged (renditions depend on content only),
    retire those the new version no longer has, add the rest as pending."""
    wanted = {image.content_hash: image for image in plan.images}
    active = await connection.fetch(
        "SELECT id, content_hash, original_key FROM images"
        " WHERE product_id = $1 AND retired_at IS NULL",
        product,
    )
    kept = {row["content_hash"]: row["id"] for row in active if row["content_hash"] in wanted}
    for row in active:
        if row["content_hash"] in wanted:
            continue
        await connection.execute(
            "UPDATE images SET status = 'retired', retired_at = now() WHERE id = $1", row["id"]
        )
        reason = f"retired by version {upload}"
        await discard_renditions(
            connection, previews_bucket, row["id"], reason=reason, delay=discard_delay
        )
        await discard(
            connection,
            "original",
            uploads_bucket,
            row["original_key"],
            reason=reason,
            delay=discard_delay,
        )
    # Kept images take the new version's path, title, tags and position. Paths may swap
    # between kept images, and the path is unique among active images: free them first.
    await connection.execute(
        "UPDATE images SET path = id::text WHERE id = ANY($1::uuid[])", list(kept.values())
    )
    await connection.executemany(
        "UPDATE images SET path = $2, title = $3, tags = $4, position = $5 WHERE id = $1",
        [
            (kept[h], image.path, image.title, list(image.tags), image.position)
            for h, image in wanted.items()
            if h in kept
        ],
    )
    # A kept image that failed for a reason not about its file (its message was lost or
    # dead-lettered) is rendered again with the new version, as a contributor expects.
    retried = await connection.fetch(
        """UPDATE images SET status = 'pending', failure_reason = NULL,
                  failure_retryable = false, finished_at = NULL
            WHERE id = ANY($1::uuid[]) AND status = 'failed' AND failure_retryable
        RETURNING id""",
        list(kept.values()),
    )
    for image in retried:
        await reclaim_renditions(connection, previews_bucket, image["id"])
    new = set(wanted) - set(kept)
    revived = await connection.fetch(
        "SELECT id FROM images WHERE id = ANY($1::uuid[]) AND retired_at IS NOT NULL",
        [ids.image_id(product, upload, content_hash) for content_hash in new],
    )
    for image in revived:
        # A revert brings back images this upload added before (same ids, so the same
        # rendition keys): their retirement discarded those keys, withdraw that before
        # _insert_images revives them, or a sweep while they render deletes the new ones.
        await reclaim_renditions(connection, previews_bucket, image["id"])
    for content_hash in new:
        # An earlier version may have dropped this very file: its original is due for
        # deletion. Withdraw that (waiting for a sweep under way) before it is stored again.
        await reclaim(
            connection,
            "original",
            uploads_bucket,
            original_key(originals_prefix, contributor, product, content_hash),
        )
    return await _insert_images(
        connection, product, upload, contributor, plan, originals_prefix, only=new
    )


async def recount(connection: Connection, product: uuid.UUID, *, previews_bucket: str) -> None:
    """Counters and state from the product's active images, after images were added,
    retired or reset. A product that is complete now is owed a product-ready, and its
    family's mosaic may have changed."""
    row = await connection.fetchrow(
        """WITH c AS (
               SELECT count(*) FILTER (WHERE status <> 'retired') AS total,
                      count(*) FILTER (WHERE status = 'ready') AS ready,
                      count(*) FILTER (WHERE status = 'failed') AS failed
                 FROM images WHERE product_id = $1)
           UPDATE products p
              SET image_count = c.total, images_ready = c.ready, images_failed = c.failed,
                  progressed_at = now(), ready_notified_at = NULL,
                  completed_at = CASE WHEN c.ready + c.failed = c.total THEN now() END,
                  status = CASE WHEN c.ready + c.failed < c.total THEN 'processing'
                                WHEN c.ready > 0 THEN 'ready'
                                ELSE 'failed' END::product_status
             FROM c WHERE p.id = $1
           RETURNING p.family_id, p.current_upload_id, p.status::text AS status,
                     p.completed_at IS NOT NULL AS complete""",
        product,
    )
    assert row is not None
    if row["complete"]:
        await connection.execute(
            "UPDATE uploads SET status = $2::text::upload_status, updated_at = now() WHERE id = $1",
            row["current_upload_id"],
            row["status"],
        )
        await connection.execute(
            "UPDATE families SET revision = revision + 1 WHERE id = $1", row["family_id"]
        )
        await emit_product_outcome(connection, product, previews_bucket)


def original_key(prefix: str, contributor: str, product: uuid.UUID, content_hash: str) -> str:
    return f"{prefix}{contributor}/{product}/{content_hash}.svg"


async def pending_images(connection: Connection, product: uuid.UUID) -> list[PendingImage]:
    rows = await connection.fetch(
        "SELECT id, original_key FROM images WHERE product_id = $1 AND status = 'pending'"
        " ORDER BY position",
        product,
    )
    return [PendingImage(row["id"], row["original_key"]) for row in rows]


async def mark_dispatched(connection: Connection, upload: uuid.UUID) -> None:
    await connection.execute(
        "UPDATE uploads SET dispatched_at = now(), updated_at = now()"
        " WHERE id = $1 AND dispatched_at IS NULL",
        upload,
    )


def _problems_json(problems: list[FileProblem]) -> list[dict[str, str]]:
    return [{"path": p.path, "reason": p.reason} for p in problems]
