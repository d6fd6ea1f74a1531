"""Garbage: recorded with the change that orphans an object, swept against real PostgreSQL and
the moto server; each kind's guard keeps what is wanted again."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import asyncpg
import pytest
from ingest_common.aws import Aws
from ingest_common.garbage import (
    discard,
    discard_renditions,
    reclaim,
    renditions_prefix,
    sweep,
    tag_rejected_upload,
)

PROFILE = "p1"


@dataclass(frozen=True)
class Product:
    id: uuid.UUID
    family_id: uuid.UUID
    family_slug: str


async def make_product(db: asyncpg.Pool, slug: str = "weather-line") -> Product:
    """The rows an image needs: contributor, family, upload, product."""
    family, upload, product = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    key = f"uploads/acme/{upload}.zip"
    async with db.acquire() as connection, connection.transaction():
        await connection.execute(
            "INSERT INTO contributors (id) VALUES ('acme') ON CONFLICT DO NOTHING"
        )
        await connection.execute(
            "INSERT INTO families (id, slug, name, contributor_id) VALUES ($1, $2, $2, 'acme')",
            family,
            slug,
        )
        await connection.execute(
            "INSERT INTO uploads (id, bucket, object_key, etag, contributor_id)"
            " VALUES ($1, 'ingest-uploads', $2, 'etag', 'acme')",
            upload,
            key,
        )
        await connection.execute(
            "INSERT INTO products (id, upload_id, family_id, contributor_id, product_type, title,"
            " license, image_count, bucket, object_key, current_upload_id)"
            " VALUES ($1, $2, $3, 'acme', 'icon_set', 'Set', 'standard', 100,"
            " 'ingest-uploads', $4, $2)",
            product,
            upload,
            family,
            key,
        )
    return Product(product, family, slug)


async def make_image(
    db: asyncpg.Pool, product: Product, status: str = "ready", *, retired: bool = False
) -> tuple[uuid.UUID, str]:
    """An image row; returns its id and its original's key. A retired image has the status
    `retired` and the time, as a new version of its set leaves it."""
    image = uuid.uuid4()
    digest = uuid.uuid4().hex
    original = f"originals/acme/{product.id}/{digest}.svg"
    await db.execute(
        "INSERT INTO images (id, product_id, position, path, title, content_hash, byte_size,"
        " original_key, status, retired_at)"
        " VALUES ($1, $2, 0, $3, 'Icon', $4, 10, $5, $6::image_status,"
        " CASE WHEN $7 THEN now() END)",
        image,
        product.id,
        f"{digest}.svg",
        digest,
        original,
        "retired" if retired else status,
        retired,
    )
    return image, original


async def put_objects(aws: Aws, bucket: str, keys: list[str]) -> None:
    slots = asyncio.Semaphore(32)

    async def put(key: str) -> None:
        async with slots:
            await aws.s3.put_object(Bucket=bucket, Key=key, Body=b"x")

    await asyncio.gather(*(put(key) for key in keys))


async def put_renditions(aws: Aws, image: uuid.UUID, count: int = 8) -> list[str]:
    widths = [64 * (n // 2 + 1) for n in range(count)]
    keys = [
        f"{renditions_prefix(image)}{PROFILE}/{w}.{('png', 'webp')[n % 2]}"
        for n, w in enumerate(widths)
    ]
    await put_objects(aws, aws.settings.previews_bucket, keys)
    return keys


async def existing(aws: Aws, bucket: str, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    paginator = aws.s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys.update(item["Key"] for item in page.get("Contents", []))
    return keys


async def rows(db: asyncpg.Pool) -> int:
    count = await db.fetchval("SELECT count(*) FROM object_garbage")
    assert isinstance(count, int)
    return count


def mosaic_keys(product: Product) -> tuple[str, str]:
    digest = uuid.uuid4().hex
    base = f"previews/families/{product.family_slug}/{digest}"
    return f"{base}.png", f"{base}.webp"


async def test_every_kind_is_deleted_when_due(aws: Aws, db: asyncpg.Pool) -> None:
    previews, uploads = aws.settings.previews_bucket, aws.settings.uploads_bucket
    product = await make_product(db)
    failed, failed_original = await make_image(db, product, "failed")
    survivor, survivor_original = await make_image(db, product, "ready")
    doomed = await put_renditions(aws, failed)
    kept = await put_renditions(aws, survivor)
    await put_objects(aws, uploads, [failed_original, survivor_original])
    png, webp = mosaic_keys(product)
    await put_objects(aws, previews, [png, webp])

    async with db.acquire() as connection, connection.transaction():
        # The image was retired by a new version: its renditions and its original go.
        await connection.execute("UPDATE images SET retired_at = now() WHERE id = $1", failed)
        await discard_renditions(connection, previews, failed, reason="retired")
        await discard(connection, "original", uploads, failed_original, reason="retired")
        await discard(connection, "mosaic", previews, png, reason="superseded")
        await discard(connection, "mosaic", previews, webp, reason="superseded")

    report = await sweep(aws, db)

    assert (report.renditions.deleted, report.original.deleted, report.mosaic.deleted) == (8, 1, 2)
    assert report.renditions.kept == report.original.kept == report.mosaic.kept == 0
    assert await existing(aws, previews) == set(kept)
    assert not set(doomed) & await existing(aws, previews)
    assert await existing(aws, uploads) == {survivor_original}
    assert await rows(db) == 0
    # Nothing left: a second sweep has nothing to do.
    assert not (await sweep(aws, db)).busy


async def test_nothing_is_deleted_before_it_is_due(aws: Aws, db: asyncpg.Pool) -> None:
    previews = aws.settings.previews_bucket
    product = await make_product(db)
    png, _ = mosaic_keys(product)
    await put_objects(aws, previews, [png])
    async with db.acquire() as connection:
        await discard(connection, "mosaic", previews, png, reason="superseded", delay=3600)

    report = await sweep(aws, db)
    assert not report.busy
    assert await existing(aws, previews) == {png}
    assert await rows(db) == 1

    await db.execute("UPDATE object_garbage SET due_at = now() - interval '1 second'")
    assert (await sweep(aws, db)).mosaic.deleted == 1
    assert await existing(aws, previews) == set()
    assert await rows(db) == 0


async def test_a_discard_rolls_back_with_the_change_that_orphaned_the_object(
    db: asyncpg.Pool,
) -> None:
    async def orphan_then_fail() -> None:
        async with db.acquire() as connection, connection.transaction():
            await discard(connection, "original", "b", "originals/a/b/c.svg", reason="x")
            raise RuntimeError("the state change failed")

    with pytest.raises(RuntimeError):
        await orphan_then_fail()
    assert await rows(db) == 0


async def test_each_guard_keeps_what_is_wanted_again(aws: Aws, db: asyncpg.Pool) -> None:
    previews, uploads = aws.settings.previews_bucket, aws.settings.uploads_bucket
    product = await make_product(db)
    # renditions: discarded when the image failed, but it is ready again
    again, _ = await make_image(db, product, "failed")
    # original: discarded with its retired image, but a new version's image uses it again
    _, shared_original = await make_image(db, product, retired=True)
    # mosaic: superseded, then the family's preview pointed back at it (png and webp)
    png, webp = mosaic_keys(product)
    # and the counterparts that are not wanted: a retired image; an original only retired
    # images use; a mosaic no preview points at
    retired, retired_original = await make_image(db, product, retired=True)
    other_png, _ = mosaic_keys(product)

    renditions = await put_renditions(aws, again) + await put_renditions(aws, retired)
    await put_objects(aws, previews, [png, webp, other_png])
    await put_objects(aws, uploads, [shared_original, retired_original])
    async with db.acquire() as connection, connection.transaction():
        await discard_renditions(connection, previews, again, reason="failed")
        await discard_renditions(connection, previews, retired, reason="retired")
        await discard(connection, "original", uploads, shared_original, reason="retired")
        await discard(connection, "original", uploads, retired_original, reason="retired")
        for key in (png, webp, other_png):
            await discard(connection, "mosaic", previews, key, reason="superseded")

    # What makes each wanted again, committed before the sweep.
    await db.execute("UPDATE images SET status = 'ready' WHERE id = $1", again)
    await db.execute(
        "INSERT INTO images (id, product_id, position, path, title, content_hash, byte_size,"
        " original_key, status) VALUES ($1, $2, 1, 'v2.svg', 'Icon', 'v2', 10, $3, 'ready')",
        uuid.uuid4(),
        product.id,
        shared_original,
    )
    await db.execute(
        "INSERT INTO family_previews (family_id, png_key, webp_key, width, height, image_ids)"
        " VALUES ($1, $2, $3, 10, 10, '{}')",
        product.family_id,
        png,
        webp,
    )

    report = await sweep(aws, db)

    assert (report.renditions.kept, report.original.kept, report.mosaic.kept) == (1, 1, 2)
    assert (report.renditions.deleted, report.original.deleted, report.mosaic.deleted) == (8, 1, 1)
    assert await existing(aws, previews, renditions_prefix(again)) == set(renditions[:8])
    assert await existing(aws, previews, renditions_prefix(retired)) == set()
    assert await existing(aws, previews, "previews/") == {png, webp}
    assert await existing(aws, uploads) == {shared_original}
    # A kept row is dropped, not kept for later: a new discard records it again.
    assert await rows(db) == 0


async def test_a_prefix_with_more_than_a_thousand_objects_is_fully_deleted(
    aws: Aws, db: asyncpg.Pool
) -> None:
    previews = aws.settings.previews_bucket
    product = await make_product(db)
    image, _ = await make_image(db, product, "failed")
    prefix = renditions_prefix(image)
    keys = [f"{prefix}{PROFILE}/{n}.png" for n in range(2100)]
    await put_objects(aws, previews, keys)
    async with db.acquire() as connection:
        await discard_renditions(connection, previews, image, reason="failed")

    report = await sweep(aws, db)

    assert report.renditions.deleted == 2100
    assert await existing(aws, previews, prefix) == set()
    assert await rows(db) == 0


async def test_two_sweeps_at_once_delete_each_object_once(aws: Aws, db: asyncpg.Pool) -> None:
    previews, uploads = aws.settings.previews_bucket, aws.settings.uploads_bucket
    product = await make_product(db)
    objects = 0
    async with db.acquire() as connection, connection.transaction():
        for _ in range(20):
            image, original = await make_image(db, product, retired=True)
            await put_renditions(aws, image, 4)
            await put_objects(aws, uploads, [original])
            objects += 5
            await discard_renditions(connection, previews, image, reason="retired")
            await discard(connection, "original", uploads, original, reason="retired")

    first, second = await asyncio.gather(sweep(aws, db, batch_size=3), sweep(aws, db, batch_size=3))

    deleted = [
        r.renditions.deleted + r.original.deleted + r.mosaic.deleted for r in (first, second)
    ]
    assert sum(deleted) == objects, f"each sweep deleted {deleted}, not {objects} in all once"
    assert await existing(aws, previews) == set()
    assert await existing(aws, uploads) == set()
    assert await rows(db) == 0


async def test_a_sweep_that_dies_before_its_bookkeeping_is_retried(
    aws: Aws, db: asyncpg.Pool
) -> None:
    """The sweeper's database session ends while it deletes (as when its process is
    killed): its rows roll back to due, and the next sweep finishes the job."""
    previews = aws.settings.previews_bucket
    product = await make_product(db)
    image, _ = await make_image(db, product, "failed")
    prefix = renditions_prefix(image)
    await put_objects(aws, previews, [f"{prefix}{PROFILE}/{n}.png" for n in range(2100)])
    async with db.acquire() as connection:
        await discard_renditions(connection, previews, image, reason="failed")

    async def kill_the_sweeper_mid_sweep() -> None:
        # Between its claim and its bookkeeping the sweeper is idle in its transaction.
        while True:
            pid = await db.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND state = 'idle in transaction' AND query LIKE '%FOR UPDATE OF g SKIP LOCKED%'"
            )
            if pid is not None:
                # Wait for its end too: until then the backend still holds the row's lock.
                await db.execute("SELECT pg_terminate_backend($1, 5000)", pid)
                return
            await asyncio.sleep(0.002)

    killer = asyncio.create_task(kill_the_sweeper_mid_sweep())
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)):
        await sweep(aws, db)
    await asyncio.wait_for(killer, 10)

    # The S3 deletes went on (the sweeper learns of its lost session only at its
    # bookkeeping), but the row they were for rolled back to due: nothing is forgotten.
    assert await rows(db) == 1, "the claimed row was lost with the sweeper"
    await sweep(aws, db)
    assert await existing(aws, previews, prefix) == set()
    assert await rows(db) == 0


async def test_an_object_already_gone_is_deleted(aws: Aws, db: asyncpg.Pool) -> None:
    async with db.acquire() as connection:
        await discard(
            connection, "original", aws.settings.uploads_bucket, "originals/a/b/c.svg", reason="x"
        )
    report = await sweep(aws, db)
    assert report.original.retried == 0
    assert await rows(db) == 0


async def test_a_refused_delete_is_postponed_not_dropped(aws: Aws, db: asyncpg.Pool) -> None:
    async with db.acquire() as connection:
        await discard(connection, "original", "no-such-bucket", "originals/a/b/c.svg", reason="x")
    report = await sweep(aws, db)
    assert (report.original.deleted, report.original.retried) == (0, 1)
    later = await db.fetchval("SELECT due_at > now() + interval '1 minute' FROM object_garbage")
    assert later is True
    assert not (await sweep(aws, db)).busy  # not due again yet


async def test_a_sweep_never_deletes_beyond_the_images_own_renditions(
    aws: Aws, db: asyncpg.Pool
) -> None:
    """A row written past `discard` with a wider prefix is postponed, not swept."""
    previews = aws.settings.previews_bucket
    product = await make_product(db)
    image, _ = await make_image(db, product, "failed")
    other, _ = await make_image(db, product, "ready")
    keys = await put_renditions(aws, image) + await put_renditions(aws, other)
    await db.execute(
        "INSERT INTO object_garbage (kind, bucket, key, image_id, reason)"
        " VALUES ('renditions', $1, 'renditions/', $2, 'corrupt')",
        previews,
        image,
    )
    report = await sweep(aws, db)
    assert (report.renditions.deleted, report.renditions.retried) == (0, 1)
    assert await existing(aws, previews) == set(keys)


async def test_discard_refuses_a_prefix_that_is_not_the_images(db: asyncpg.Pool) -> None:
    image = uuid.uuid4()
    async with db.acquire() as connection:
        for key in ("renditions/", "", f"renditions/{uuid.uuid4()}/"):
            with pytest.raises(ValueError, match="prefix"):
                await discard(connection, "renditions", "b", key, reason="x", image_id=image)
        with pytest.raises(ValueError, match="image_id"):
            await discard(connection, "renditions", "b", renditions_prefix(image), reason="x")
        with pytest.raises(ValueError, match="one object"):
            await discard(connection, "original", "b", "originals/a/", reason="x")
    assert await rows(db) == 0


async def test_reclaim_withdraws_a_pending_deletion(aws: Aws, db: asyncpg.Pool) -> None:
    previews = aws.settings.previews_bucket
    product = await make_product(db)
    png, _ = mosaic_keys(product)
    await put_objects(aws, previews, [png])
    async with db.acquire() as connection:
        await discard(connection, "mosaic", previews, png, reason="superseded")
        assert await reclaim(connection, "mosaic", previews, png) == 1
    assert not (await sweep(aws, db)).busy
    assert await existing(aws, previews) == {png}


async def test_tag_rejected_upload_tags_the_zip(aws: Aws) -> None:
    bucket, key = aws.settings.uploads_bucket, "uploads/acme/set.zip"
    put = await aws.s3.put_object(Bucket=bucket, Key=key, Body=b"PK")

    assert await tag_rejected_upload(aws, bucket, key) is True
    tags = await aws.s3.get_object_tagging(Bucket=bucket, Key=key)
    assert tags["TagSet"] == [{"Key": "ingest-outcome", "Value": "rejected"}]

    # With the upload's ETag: only that object, not a newer one at the same key.
    await aws.s3.delete_object_tagging(Bucket=bucket, Key=key)
    assert await tag_rejected_upload(aws, bucket, key, etag="not-this-one") is False
    assert (await aws.s3.get_object_tagging(Bucket=bucket, Key=key))["TagSet"] == []
    assert await tag_rejected_upload(aws, bucket, key, etag=put["ETag"]) is True
    assert (await aws.s3.get_object_tagging(Bucket=bucket, Key=key))["TagSet"] != []

    # An upload that is gone already is fine.
    assert await tag_rejected_upload(aws, bucket, "uploads/acme/gone.zip") is False
    assert await tag_rejected_upload(aws, bucket, "uploads/acme/gone.zip", etag="x") is False


async def test_tag_rejected_upload_tags_the_rejected_version(aws: Aws) -> None:
    bucket, key = aws.settings.uploads_bucket, "uploads/acme/set.zip"
    await aws.s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    rejected = await aws.s3.put_object(Bucket=bucket, Key=key, Body=b"PK-1")
    assert await tag_rejected_upload(aws, bucket, key, etag=rejected["ETag"]) is True
    newer = await aws.s3.put_object(Bucket=bucket, Key=key, Body=b"PK-2")

    assert await tag_rejected_upload(aws, bucket, key, etag=rejected["ETag"]) is False
    current = await aws.s3.get_object_tagging(Bucket=bucket, Key=key)
    assert current["TagSet"] == []
    assert current["VersionId"] == newer["VersionId"]
    old = await aws.s3.get_object_tagging(Bucket=bucket, Key=key, VersionId=rejected["VersionId"])
    assert old["TagSet"] == [{"Key": "ingest-outcome", "Value": "rejected"}]


async def test_bootstrap_puts_the_lifecycle_rules_that_expire_rejected_uploads(aws: Aws) -> None:
    """The `aws` fixture applied topology.json; S3 holds its lifecycle rules."""
    uploads = await aws.s3.get_bucket_lifecycle_configuration(Bucket=aws.settings.uploads_bucket)
    rules = {rule["ID"]: rule for rule in uploads["Rules"]}
    rejected = rules["expire-rejected-uploads"]
    assert rejected["Status"] == "Enabled"
    assert rejected["Expiration"] == {"Days": 30}
    assert rejected["Filter"] == {
        "And": {"Prefix": "uploads/", "Tags": [{"Key": "ingest-outcome", "Value": "rejected"}]}
    }
    for bucket in (aws.settings.uploads_bucket, aws.settings.previews_bucket):
        configuration = await aws.s3.get_bucket_lifecycle_configuration(Bucket=bucket)
        aborts = [r for r in configuration["Rules"] if "AbortIncompleteMultipartUpload" in r]
        assert [r["AbortIncompleteMultipartUpload"] for r in aborts] == [
            {"DaysAfterInitiation": 7}
        ], bucket
