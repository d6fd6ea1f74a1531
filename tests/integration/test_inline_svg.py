"""Small SVGs travel in their render message; the processor reads large ones from S3."""

from __future__ import annotations

import json

import asyncpg
from ingest_batcher.settings import BatcherSettings
from ingest_common.aws import Aws

from tests.integration.pipeline import Pipeline, make_zip, manifest, put_upload
from tests.svgs import BOOTSTRAP_CARET_UP_FILL, paths

LARGE = paths(BatcherSettings.model_fields["inline_svg_bytes"].default + 1000, seed=7)


async def test_small_svgs_ride_in_their_message_and_large_ones_are_read_from_s3(
    aws: Aws, db: asyncpg.Pool
) -> None:
    files = {"small.svg": BOOTSTRAP_CARET_UP_FILL, "large.svg": LARGE}
    await put_upload(aws, "acme", make_zip({"manifest.json": manifest(list(files)), **files}))
    pipeline = Pipeline(aws, db)
    await pipeline.drain("batch")

    url = await aws.queue_url(aws.settings.render_queue)
    received = await aws.sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0
    )
    bodies = [json.loads(m["Body"]) for m in received.get("Messages", [])]
    rows = await db.fetch("SELECT path, original_key FROM images")
    key_of = {row["path"]: row["original_key"] for row in rows}
    carried = {body["original_key"]: body.get("svg") for body in bodies}
    assert carried == {
        key_of["small.svg"]: BOOTSTRAP_CARET_UP_FILL.decode(),
        key_of["large.svg"]: None,
    }
    # The originals are stored all the same (a later re-render reads them).
    for path, data in files.items():
        assert await aws.get_bytes(aws.settings.uploads_bucket, key_of[path]) == data

    # Without its original in S3 the small image still renders: the processor read nothing.
    await aws.s3.delete_object(Bucket=aws.settings.uploads_bucket, Key=key_of["small.svg"])
    await pipeline.drain("render")
    rows = await db.fetch("SELECT path, status::text AS status FROM images")
    statuses = {row["path"]: row["status"] for row in rows}
    assert statuses == {"small.svg": "ready", "large.svg": "ready"}
