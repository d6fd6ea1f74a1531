"""Contributor isolation: identity comes from the S3 key prefix, never from the manifest.

A manifest that names another contributor, or another contributor's family, is refused
and nothing is written; an object outside the `uploads/<contributor>/` scheme is refused.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
from ingest_common.aws import Aws

from tests.integration.pipeline import (
    Pipeline,
    make_zip,
    manifest,
    put_upload,
    rejected_by_batcher,
    svgs,
    upload_row,
)


async def test_upload_outside_the_prefix_scheme_is_refused(
    aws: Aws, db: asyncpg.Pool, data_lost: Callable[[int], None]
) -> None:
    files = svgs(1)
    key = "uploads/set-without-contributor.zip"
    await aws.put_bytes(
        aws.settings.uploads_bucket,
        key,
        make_zip({"manifest.json": manifest(list(files)), **files}),
        content_type="application/zip",
    )
    error = await rejected_by_batcher(aws, db, key)
    assert "uploads/<contributor>/<name>.zip" in error
    data_lost(0)  # refused on purpose: nothing of anyone else's was at stake


async def test_another_contributors_family_is_refused_and_nothing_written(
    aws: Aws, db: asyncpg.Pool, data_lost: Callable[[int], None]
) -> None:
    files = svgs(2)
    first = await put_upload(
        aws, "acme", make_zip({"manifest.json": manifest(list(files)), **files}), "a.zip"
    )
    await Pipeline(aws, db).drain("batch")
    second = await put_upload(
        aws, "mallory", make_zip({"manifest.json": manifest(list(files)), **files}), "b.zip"
    )
    await Pipeline(aws, db).drain("batch")
    assert (await upload_row(db, first))["status"] == "processing"
    refused = await upload_row(db, second)
    assert refused["status"] == "rejected"
    assert "belongs to another contributor" in refused["error"]
    assert await db.fetchval("SELECT count(*) FROM products WHERE contributor_id = 'mallory'") == 0
    assert await db.fetchval("SELECT count(*) FROM families WHERE contributor_id = 'mallory'") == 0
    # The owner's set is untouched by the attempt.
    owners_images = await db.fetchval(
        "SELECT count(*) FROM images i JOIN products p ON p.id = i.product_id"
        " WHERE p.contributor_id = 'acme'"
    )
    data_lost(len(files) - owners_images)
    assert owners_images == len(files)


async def test_manifest_naming_another_contributor_is_refused(
    aws: Aws, db: asyncpg.Pool, data_lost: Callable[[int], None]
) -> None:
    files = svgs(1)
    body = manifest(list(files), contributor="acme")
    key = await put_upload(aws, "mallory", make_zip({"manifest.json": body, **files}))
    error = await rejected_by_batcher(aws, db, key)
    assert '"acme"' in error
    assert '"mallory"' in error
    data_lost(0)


async def test_any_key_under_the_prefix_reaches_the_batcher_which_decides_by_suffix(
    aws: Aws, db: asyncpg.Pool, data_lost: Callable[[int], None]
) -> None:
    """The notification filters on the prefix only: `Set.ZIP` is a set like any other, a
    `.tar.gz` is refused with a reason the contributor reads, a console's folder marker is
    not an upload at all."""
    files = svgs(2)
    archive = make_zip({"manifest.json": manifest(list(files)), **files})
    upper = await put_upload(aws, "acme", archive, "Icons.ZIP")
    other = await put_upload(aws, "acme", archive, "icons.tar.gz")
    await aws.put_bytes(
        aws.settings.uploads_bucket, "uploads/acme/", b"", content_type="application/x-directory"
    )
    await Pipeline(aws, db).run_all()

    accepted = await upload_row(db, upper)
    assert accepted["status"] == "ready"
    refused = await upload_row(db, other)
    assert refused["status"] == "rejected"
    assert refused["contributor_id"] == "acme"  # still listed among the contributor's uploads
    assert refused["error"] == (
        "'icons.tar.gz' was refused: a set is uploaded as a ZIP archive whose name ends in .zip"
    )
    assert await db.fetchval("SELECT count(*) FROM uploads") == 2, "the folder marker is no upload"
    data_lost(0)
