"""Re-uploads do what a contributor expects (store.py of the batcher has the rules).

The same bytes again to the same key are a repeat, or a second chance for what did not
succeed (a refused set, failed images); the same bytes to another key point to the
product that shows them; different bytes to the same key are the product's next version:
unchanged images are kept as they are, dropped ones retired and their objects swept,
new ones rendered, and a version whose event comes after a newer one's is history. Every
case ends in the complete end state of `tests/reliability/endstate.py`.

Putting the same bytes to the same key again gives moto the same ETag (so the same upload
id) and a new event whose time is later by at least a millisecond (`put_again` waits).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg
import pytest
from botocore.exceptions import ClientError
from ingest_cli.status import format_status, load_status
from ingest_common import ids
from ingest_common.aws import Aws
from ingest_common.search import PostgresSearch
from ingest_common.topology import dead_letter_queue

from tests.integration.pipeline import (
    Pipeline,
    fetch_row,
    make_zip,
    manifest,
    queue_counts,
    svgs,
)
from tests.reliability.endstate import end_state, list_keys, sweep_all

CONTRIBUTOR = "acme"
HUGE_SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="100000" height="100000">'
    b'<rect width="10" height="10"/></svg>'
)
EMPTY = (0, 0, 0)  # queue_counts of an empty queue: waiting, in flight, delayed


def set_zip(files: Mapping[str, bytes], **fields: Any) -> bytes:
    """A set's ZIP: `files` and a manifest listing them in this order, `fields` in it."""
    return make_zip({"manifest.json": manifest(list(files), **fields), **files})


async def put(aws: Aws, data: bytes, name: str = "set.zip") -> uuid.UUID:
    """PUT a set as the contributor; the id of that upload (as any client can compute it)."""
    bucket = aws.settings.uploads_bucket
    key = f"uploads/{CONTRIBUTOR}/{name}"
    etag = await aws.put_bytes(bucket, key, data, content_type="application/zip")
    return ids.upload_id(bucket, key, etag)


async def put_again(aws: Aws, data: bytes, name: str = "set.zip") -> uuid.UUID:
    """A later PUT to a key used before. moto's event times have millisecond resolution,
    and the batcher tells the same bytes sent again from a redelivered event by a later
    event time: let one pass."""
    await asyncio.sleep(0.01)
    return await put(aws, data, name)


async def finish(
    aws: Aws,
    database_url: str,
    data_lost: Callable[[int], None],
    *,
    expected_ready: int,
    expected_failed: int = 0,
) -> None:
    """The end state every case must reach, after the sweeper deleted what was discarded."""
    await sweep_all(aws, database_url)
    state = await end_state(
        aws, database_url, expected_ready=expected_ready, expected_failed=expected_failed
    )
    data_lost(state.lost)
    state.assert_complete()


async def upload_row(db: asyncpg.Pool, upload: uuid.UUID) -> asyncpg.Record:
    return await fetch_row(
        db, "SELECT *, status::text AS status FROM uploads WHERE id = $1", upload
    )


async def status_text(db: asyncpg.Pool, upload: uuid.UUID) -> str:
    async with db.acquire() as connection:
        status = await load_status(connection, upload)
    assert status is not None, f"no status for upload {upload}"
    return format_status(status)


async def images_by_path(db: asyncpg.Pool) -> dict[str, asyncpg.Record]:
    """The active images (not retired), by path."""
    rows = await db.fetch(
        "SELECT *, status::text AS status FROM images WHERE status <> 'retired' ORDER BY position"
    )
    return {row["path"]: row for row in rows}


async def stored(aws: Aws, bucket: str, key: str) -> bool:
    try:
        await aws.s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


async def search_titles(db: asyncpg.Pool, query: str) -> list[str]:
    async with db.acquire() as connection:
        return [hit.title for hit in await PostgresSearch(connection).search(query)]


async def assert_mosaic_current(db: asyncpg.Pool) -> None:
    """The family's mosaic sampled its latest revision, from active ready images only."""
    preview = await fetch_row(db, "SELECT * FROM family_previews")
    family = await fetch_row(
        db, "SELECT revision FROM families WHERE id = $1", preview["family_id"]
    )
    assert preview["revision"] == family["revision"]
    shown = await db.fetch(
        "SELECT status::text AS status FROM images WHERE id = ANY($1::uuid[])", preview["image_ids"]
    )
    assert len(shown) == len(preview["image_ids"])
    assert {row["status"] for row in shown} == {"ready"}


# --- 1. the same bytes to the same key: a repeat ---------------------------------------


async def test_the_same_bytes_to_the_same_key_again_is_a_repeat(
    aws: Aws, db: asyncpg.Pool, database_url: str, data_lost: Callable[[int], None]
) -> None:
    data = set_zip(svgs(3))
    upload = await put(aws, data)
    await Pipeline(aws, db).run_all()
    before = dict(await upload_row(db, upload))
    assert before["status"] == "ready"

    assert await put_again(aws, data) == upload
    await Pipeline(aws, db).drain("batch")
    assert await queue_counts(aws, aws.settings.render_queue) == EMPTY
    assert await queue_counts(aws, aws.settings.preview_queue) == EMPTY
    after = dict(await upload_row(db, upload))
    assert after["uploaded_at"] > before["uploaded_at"]
    # Only when it was last sent (and when the row was touched) moved.
    for column in ("uploaded_at", "updated_at"):
        del before[column], after[column]
    assert after == before
    assert await db.fetchval("SELECT count(*) FROM uploads") == 1
    assert await db.fetchval("SELECT count(*) FROM products") == 1

    await Pipeline(aws, db).run_all()
    text = await status_text(db, upload)
    assert text.splitlines()[0] == f"upload   {upload}  ready"
    assert "3 ready, 0 failed, 3 in all" in text
    await finish(aws, database_url, data_lost, expected_ready=3)


# --- 2. the same bytes to another key: a duplicate of the product that shows them -----


async def test_the_same_bytes_to_another_key_point_to_the_first_product(
    aws: Aws, db: asyncpg.Pool, database_url: str, data_lost: Callable[[int], None]
) -> None:
    data = set_zip(svgs(3), title="Lighthouse keepers")
    first = await put(aws, data, "first.zip")
    await Pipeline(aws, db).run_all()
    product = (await upload_row(db, first))["product_id"]

    second = await put_again(aws, data, "second.zip")
    await Pipeline(aws, db).drain("batch")
    assert await queue_counts(aws, aws.settings.render_queue) == EMPTY
    await Pipeline(aws, db).run_all()

    repeat = await upload_row(db, second)
    assert repeat["status"] == "duplicate"
    assert (repeat["duplicate_of"], repeat["product_id"]) == (first, product)
    assert await db.fetchval("SELECT count(*) FROM products") == 1
    assert await db.fetchval("SELECT count(*) FROM images") == 3
    assert await search_titles(db, "lighthouse") == ["Lighthouse keepers"]
    text = await status_text(db, second)
    assert f"repeat   the same archive as upload {first}" in text
    assert "3 ready, 0 failed, 3 in all" in text
    await finish(aws, database_url, data_lost, expected_ready=3)


# --- 3. a new version to the same key ---------------------------------------------------


async def test_a_new_version_keeps_unchanged_images_and_retires_the_rest(
    aws: Aws, db: asyncpg.Pool, database_url: str, data_lost: Callable[[int], None]
) -> None:
    (a, a_svg), (b, b_svg), (c, c_svg), (_, other_svg), (d, d_svg) = svgs(5).items()
    v1 = await put(aws, set_zip({a: a_svg, b: b_svg, c: c_svg}, title="Old"))
    await Pipeline(aws, db).run_all()
    product = (await upload_row(db, v1))["product_id"]
    old = await images_by_path(db)
    old_mosaic = await fetch_row(db, "SELECT png_key, webp_key FROM family_previews")

    # a unchanged, b's content changed, c removed, d added; a new title.
    v2 = await put_again(
        aws, set_zip({a: a_svg, b: other_svg, d: d_svg}, title="Harbour lighthouse")
    )
    await Pipeline(aws, db).run_all()

    assert v2 != v1
    current = await upload_row(db, v2)
    assert (current["status"], current["product_id"]) == ("ready", product)
    row = await fetch_row(db, "SELECT * FROM products")
    assert (row["id"], row["current_upload_id"], row["title"]) == (
        product,
        v2,
        "Harbour lighthouse",
    )
    assert (row["image_count"], row["images_ready"]) == (3, 3)

    new = await images_by_path(db)
    assert list(new) == [a, b, d]
    assert new[a]["id"] == old[a]["id"]
    assert new[a]["finished_at"] == old[a]["finished_at"]  # not rendered again
    for path in (b, d):
        assert new[path]["id"] not in {image["id"] for image in old.values()}
        assert new[path]["status"] == "ready"
        assert new[path]["finished_at"] > old[a]["finished_at"]
    retired = await db.fetch("SELECT * FROM images WHERE status = 'retired'")
    assert {image["id"] for image in retired} == {old[b]["id"], old[c]["id"]}
    assert all(image["retired_at"] is not None for image in retired)

    await assert_mosaic_current(db)
    mosaic = await fetch_row(db, "SELECT * FROM family_previews")
    assert mosaic["png_key"] != old_mosaic["png_key"]
    assert set(mosaic["image_ids"]) == {image["id"] for image in new.values()}
    document = await fetch_row(db, "SELECT document FROM search_documents")
    assert document["document"]["title"] == "Harbour lighthouse"
    titles = [path.removesuffix(".svg") for path in (a, b, d)]
    assert document["document"]["image_titles"] == titles
    assert await search_titles(db, "lighthouse") == ["Harbour lighthouse"]

    superseded = await upload_row(db, v1)
    assert (superseded["status"], superseded["replaced_by"]) == ("superseded", v2)
    assert f"replaced by the newer version in upload {v2}" in await status_text(db, v1)

    await finish(aws, database_url, data_lost, expected_ready=3)
    # The sweep deleted the retired images' renditions and originals, and nothing else.
    settings = aws.settings
    for image in retired:
        assert await list_keys(aws, settings.previews_bucket, f"renditions/{image['id']}/") == set()
        assert not await stored(aws, settings.uploads_bucket, image["original_key"])
    assert await stored(aws, settings.uploads_bucket, new[a]["original_key"])


# --- 4. versions out of order -----------------------------------------------------------


async def hold_back_event(aws: Aws, upload: uuid.UUID) -> str:
    """Take `upload`'s S3 event out of the batch queue, as if delayed on its way; its body."""
    batch = await aws.queue_url(aws.settings.batch_queue)
    while True:
        received = await aws.sqs.receive_message(
            QueueUrl=batch, MaxNumberOfMessages=10, WaitTimeSeconds=5
        )
        messages = received.get("Messages", [])
        assert messages, f"no S3 event for upload {upload}"
        for message in messages:
            await aws.sqs.delete_message(QueueUrl=batch, ReceiptHandle=message["ReceiptHandle"])
            # Bootstrap's s3:TestEvent is in the queue too; nothing else was put.
            if "ObjectCreated" in message["Body"]:
                return message["Body"]


async def test_a_version_whose_event_comes_after_a_newer_one_is_superseded(
    aws: Aws, db: asyncpg.Pool, database_url: str, data_lost: Callable[[int], None]
) -> None:
    files = list(svgs(4).items())
    first, second = dict(files[:2]), dict(files[2:])
    v1 = await put(aws, set_zip(first, title="Version one"))
    v1_event = await hold_back_event(aws, v1)
    v2 = await put_again(aws, set_zip(second, title="Version two"))
    await Pipeline(aws, db).drain("batch")
    batch = await aws.queue_url(aws.settings.batch_queue)
    await aws.sqs.send_message(QueueUrl=batch, MessageBody=v1_event)
    await Pipeline(aws, db).run_all()

    late = await upload_row(db, v1)
    # Its bytes are not readable any more (the batcher reads the event's ETag only).
    assert (late["status"], late["product_id"]) == ("superseded", None)
    assert "replaced by a newer upload to the same key" in await status_text(db, v1)
    assert (await upload_row(db, v2))["status"] == "ready"
    product = await fetch_row(db, "SELECT * FROM products")
    assert (product["current_upload_id"], product["title"]) == (v2, "Version two")
    assert set(await images_by_path(db)) == set(second)
    assert await db.fetchval("SELECT count(*) FROM images") == len(second)
    await finish(aws, database_url, data_lost, expected_ready=len(second))


async def test_a_new_version_while_the_last_one_still_renders(
    aws: Aws, db: asyncpg.Pool, database_url: str, data_lost: Callable[[int], None]
) -> None:
    (a, a_svg), (b, b_svg), (c, c_svg), (d, d_svg) = svgs(4).items()
    v1 = await put(aws, set_zip({a: a_svg, b: b_svg, c: c_svg}, title="Version one"))
    await Pipeline(aws, db).drain("batch")  # v1's render messages wait in the queue
    v2 = await put_again(aws, set_zip({a: a_svg, b: b_svg, d: d_svg}, title="Version two"))
    await Pipeline(aws, db).run_all()

    assert (await upload_row(db, v2))["status"] == "ready"
    assert (await upload_row(db, v1))["status"] == "superseded"
    images = await images_by_path(db)
    assert list(images) == [a, b, d]
    assert {image["status"] for image in images.values()} == {"ready"}
    retired = await fetch_row(db, "SELECT * FROM images WHERE status = 'retired'")
    assert retired["path"] == c
    await assert_mosaic_current(db)
    await finish(aws, database_url, data_lost, expected_ready=3)


# --- 5. a refused set sent again --------------------------------------------------------


async def test_a_rejected_upload_sent_again_is_processed_anew(
    aws: Aws, db: asyncpg.Pool, database_url: str, data_lost: Callable[[int], None]
) -> None:
    data = set_zip(svgs(3))  # 4 entries with the manifest
    upload = await put(aws, data)
    await Pipeline(aws, db, max_entries=3).drain("batch")
    refused = await upload_row(db, upload)
    assert refused["status"] == "rejected"
    assert "more than the limit of 3" in refused["error"]
    assert await db.fetchval("SELECT count(*) FROM products") == 0

    assert await put_again(aws, data) == upload  # the limit has been raised since
    await Pipeline(aws, db).run_all()
    accepted = await upload_row(db, upload)
    assert (accepted["status"], accepted["error"]) == ("ready", None)
    assert accepted["product_id"] == ids.product_id(upload)
    product = await fetch_row(db, "SELECT * FROM products")
    assert (product["images_ready"], product["image_count"]) == (3, 3)
    # The verdict does not stick to the object: the lifecycle rule must not expire it.
    tagging = await aws.s3.get_object_tagging(
        Bucket=aws.settings.uploads_bucket, Key=refused["object_key"]
    )
    assert tagging["TagSet"] == []
    await finish(aws, database_url, data_lost, expected_ready=3)


# --- 6. a set with failed images sent again ---------------------------------------------


@pytest.mark.parametrize("key", ["same-key", "another-key", "new-version"])
async def test_an_image_failed_by_the_pipeline_is_rendered_again_when_the_set_is_sent_again(
    aws: Aws,
    db: asyncpg.Pool,
    database_url: str,
    data_lost: Callable[[int], None],
    key: str,
) -> None:
    files = svgs(3)
    data = set_zip(files)
    upload = await put(aws, data)
    # No SVG in the render messages: the processor reads every original from S3.
    await Pipeline(aws, db, inline_svg_bytes=0).drain("batch")
    victim_path, victim_svg = next(iter(files.items()))
    victim = await fetch_row(db, "SELECT * FROM images WHERE path = $1", victim_path)
    uploads_bucket = aws.settings.uploads_bucket
    await aws.s3.delete_object(Bucket=uploads_bucket, Key=victim["original_key"])
    # Every try fails; after the last one the message goes to the DLQ and the image fails.
    await Pipeline(aws, db, retry_base_delay=0, retry_max_delay=0).run_all()

    failed = await fetch_row(
        db, "SELECT *, status::text AS status FROM images WHERE id = $1", victim["id"]
    )
    assert (failed["status"], failed["failure_retryable"]) == ("failed", True)
    dlq = dead_letter_queue(aws.settings.render_queue)
    assert (await queue_counts(aws, dlq))[0] == 1
    assert (await upload_row(db, upload))["status"] == "ready"  # 2 of 3 ready

    await aws.put_bytes(
        uploads_bucket, victim["original_key"], victim_svg, content_type="image/svg+xml"
    )
    await aws.sqs.purge_queue(QueueUrl=await aws.queue_url(dlq))
    # To the same key: the same upload, sent again. To another: a duplicate of it. A new
    # version (another title) keeps the failed image's content, and renders it again.
    if key == "new-version":
        again = await put_again(aws, set_zip(files, title="Version 2"), "set.zip")
    else:
        again = await put_again(aws, data, "set.zip" if key == "same-key" else "again.zip")
    assert (again == upload) == (key == "same-key")
    await Pipeline(aws, db).drain("batch")
    assert (await queue_counts(aws, aws.settings.render_queue))[0] == 1  # the failed one only
    # Nothing is due to delete what this render will store (the failure discarded the
    # image's renditions; a sweep while it renders must not take the new ones).
    assert not await db.fetchval(
        "SELECT count(*) FROM object_garbage WHERE image_id = $1", victim["id"]
    )
    await Pipeline(aws, db).run_all()

    image = await fetch_row(
        db, "SELECT *, status::text AS status FROM images WHERE id = $1", victim["id"]
    )
    assert (image["status"], image["failure_reason"]) == ("ready", None)
    product = await fetch_row(db, "SELECT *, status::text AS status FROM products")
    assert (product["status"], product["images_ready"], product["images_failed"]) == ("ready", 3, 0)
    current = await upload_row(db, again if key == "new-version" else upload)
    assert current["status"] == "ready"
    if key == "another-key":
        repeat = await upload_row(db, again)
        assert (repeat["status"], repeat["duplicate_of"]) == ("duplicate", upload)
    assert "3 ready, 0 failed, 3 in all" in await status_text(db, again)
    await assert_mosaic_current(db)
    await finish(aws, database_url, data_lost, expected_ready=3)


async def test_an_image_failed_for_its_own_reason_fails_again_when_the_set_is_sent_again(
    aws: Aws, db: asyncpg.Pool, database_url: str, data_lost: Callable[[int], None]
) -> None:
    files = {**svgs(2), "huge.svg": HUGE_SVG}
    data = set_zip(files)
    upload = await put(aws, data)
    await Pipeline(aws, db).run_all()
    before = await images_by_path(db)
    assert before["huge.svg"]["status"] == "failed"
    reason = before["huge.svg"]["failure_reason"]
    assert "100000" in reason

    assert await put_again(aws, data) == upload
    await Pipeline(aws, db).drain("batch")
    assert (await queue_counts(aws, aws.settings.render_queue))[0] == 1  # tried again
    await Pipeline(aws, db).run_all()

    after = await images_by_path(db)
    huge = after["huge.svg"]
    assert (huge["id"], huge["status"], huge["failure_reason"]) == (
        before["huge.svg"]["id"],
        "failed",
        reason,
    )
    assert huge["finished_at"] > before["huge.svg"]["finished_at"]
    for path in files:
        if path != "huge.svg":  # the others were not touched
            assert dict(after[path]) == dict(before[path])
    assert (await upload_row(db, upload))["status"] == "ready"
    product = await fetch_row(db, "SELECT * FROM products")
    assert (product["images_ready"], product["images_failed"], product["image_count"]) == (2, 1, 3)
    await finish(aws, database_url, data_lost, expected_ready=2, expected_failed=1)


# --- 7. removed, then added back --------------------------------------------------------


@pytest.mark.parametrize("swept_between", [False, True], ids=["not-swept", "swept-between"])
async def test_an_image_removed_then_added_back_is_rendered_again(
    aws: Aws,
    db: asyncpg.Pool,
    database_url: str,
    data_lost: Callable[[int], None],
    swept_between: bool,
) -> None:
    (a, a_svg), (b, b_svg) = svgs(2).items()
    await put(aws, set_zip({a: a_svg, b: b_svg}, title="One"))
    await Pipeline(aws, db).run_all()
    first_a = (await images_by_path(db))[a]
    await put_again(aws, set_zip({b: b_svg}, title="Two"))
    await Pipeline(aws, db).run_all()
    assert set(await images_by_path(db)) == {b}
    if swept_between:
        await sweep_all(aws, database_url)
        assert not await stored(aws, aws.settings.uploads_bucket, first_a["original_key"])

    v3 = await put_again(aws, set_zip({a: a_svg, b: b_svg}, title="Three"))
    await Pipeline(aws, db).run_all()
    assert (await upload_row(db, v3))["status"] == "ready"
    images = await images_by_path(db)
    assert list(images) == [a, b]
    assert images[a]["id"] != first_a["id"]
    assert images[a]["status"] == "ready"
    assert images[a]["original_key"] == first_a["original_key"]
    await assert_mosaic_current(db)
    await finish(aws, database_url, data_lost, expected_ready=2)
    assert await stored(aws, aws.settings.uploads_bucket, images[a]["original_key"])


@pytest.mark.parametrize("swept_between", [False, True], ids=["not-swept", "swept-between"])
async def test_a_revert_to_an_earlier_version_brings_its_images_back(
    aws: Aws,
    db: asyncpg.Pool,
    database_url: str,
    data_lost: Callable[[int], None],
    swept_between: bool,
) -> None:
    (a, a_svg), (b, b_svg) = svgs(2).items()
    one = set_zip({a: a_svg, b: b_svg}, title="One")
    v1 = await put(aws, one)
    await Pipeline(aws, db).run_all()
    first_a = (await images_by_path(db))[a]
    await put_again(aws, set_zip({b: b_svg}, title="Two"))
    await Pipeline(aws, db).run_all()
    if swept_between:
        await sweep_all(aws, database_url)

    assert await put_again(aws, one) == v1  # v1's very bytes: the same upload, sent again
    await Pipeline(aws, db).drain("batch")
    # The image v1 added comes back under its id, so its renditions under the same keys:
    # nothing may still be due to delete them while it renders.
    assert not await db.fetchval(
        "SELECT count(*) FROM object_garbage WHERE image_id = $1", first_a["id"]
    )
    await Pipeline(aws, db).run_all()
    assert (await upload_row(db, v1))["status"] == "ready"
    product = await fetch_row(db, "SELECT * FROM products")
    assert (product["current_upload_id"], product["title"]) == (v1, "One")
    images = await images_by_path(db)
    assert list(images) == [a, b]
    assert images[a]["id"] == first_a["id"]
    assert {image["status"] for image in images.values()} == {"ready"}
    await assert_mosaic_current(db)
    await finish(aws, database_url, data_lost, expected_ready=2)


# --- 8. a version that only removes -----------------------------------------------------


async def test_a_version_that_only_removes_an_image_completes_at_once(
    aws: Aws, db: asyncpg.Pool, database_url: str, data_lost: Callable[[int], None]
) -> None:
    (a, a_svg), (b, b_svg), (c, c_svg) = svgs(3).items()
    v1 = await put(aws, set_zip({a: a_svg, b: b_svg, c: c_svg}, tags=["test"]))
    await Pipeline(aws, db).run_all()
    before = await images_by_path(db)

    v2 = await put_again(aws, set_zip({a: a_svg, b: b_svg}, tags=["test", "lighthouse"]))
    await Pipeline(aws, db).drain("batch")
    assert await queue_counts(aws, aws.settings.render_queue) == EMPTY  # nothing to render
    assert (await upload_row(db, v2))["status"] == "ready"
    product = await fetch_row(db, "SELECT *, status::text AS status FROM products")
    assert product["status"] == "ready"
    assert product["completed_at"] is not None
    assert (product["image_count"], product["images_ready"]) == (2, 2)
    await Pipeline(aws, db).run_all()

    after = await images_by_path(db)
    assert list(after) == [a, b]
    for path, image in after.items():
        assert (image["id"], image["finished_at"]) == (
            before[path]["id"],
            before[path]["finished_at"],
        )
    await assert_mosaic_current(db)
    mosaic = await fetch_row(db, "SELECT image_ids FROM family_previews")
    assert set(mosaic["image_ids"]) == {image["id"] for image in after.values()}
    document = (await fetch_row(db, "SELECT document FROM search_documents"))["document"]
    assert document["tags"] == ["test", "lighthouse"]
    assert document["image_titles"] == [a.removesuffix(".svg"), b.removesuffix(".svg")]
    assert await search_titles(db, "lighthouse") == ["Test set"]
    assert (await upload_row(db, v1))["replaced_by"] == v2
    await finish(aws, database_url, data_lost, expected_ready=2)


# --- 9. a version naming another family -------------------------------------------------


async def test_a_version_naming_another_family_is_rejected_and_changes_nothing(
    aws: Aws, db: asyncpg.Pool, database_url: str, data_lost: Callable[[int], None]
) -> None:
    files = svgs(2)
    v1 = await put(aws, set_zip(files))
    await Pipeline(aws, db).run_all()
    product_before = dict(await fetch_row(db, "SELECT * FROM products"))
    images_before = [dict(image) for image in (await images_by_path(db)).values()]

    v2 = await put_again(aws, set_zip(files, family="another-family", title="Moved"))
    await Pipeline(aws, db).run_all()
    refused = await upload_row(db, v2)
    assert refused["status"] == "rejected"
    assert '"test-family"' in refused["error"]
    assert refused["product_id"] is None
    assert dict(await fetch_row(db, "SELECT * FROM products")) == product_before
    assert [dict(image) for image in (await images_by_path(db)).values()] == images_before
    assert (await upload_row(db, v1))["status"] == "ready"
    assert await db.fetchval("SELECT count(*) FROM families") == 1
    await finish(aws, database_url, data_lost, expected_ready=2)
