"""Each service's handler on real PostgreSQL and a real S3/SQS endpoint."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest
import pyvips
from ingest_common import ids
from ingest_common.aws import Aws
from ingest_common.db.completion import ProductState, finish_image
from ingest_common.db.pool import Connection, create_pool
from ingest_common.notify import notify_product_ready
from ingest_common.runtime.consumer import Delivery
from ingest_common.runtime.service import Resources
from ingest_common.schemas.messages import IndexProduct, PreviewFamily, RenderImage
from ingest_common.search import PostgresSearch
from ingest_common.settings import IngestSettings
from ingest_common.topology import dead_letter_queue
from ingest_previewer.handler import PreviewHandler
from ingest_previewer.settings import PreviewerSettings
from ingest_processor import handler as processor_handler

from tests.conftest import SAMPLE
from tests.integration.pipeline import (
    MDI,
    Pipeline,
    assert_mosaic_decodes,
    fetch_row,
    make_zip,
    manifest,
    put_upload,
    queue_counts,
    rejected_by_batcher,
    settings_from,
    svgs,
    upload_folder,
    upload_row,
)
from tests.svgs import FLUENT_RED_CIRCLE

OPENMOJI = SAMPLE / "openmoji-sampler"


async def test_batcher_creates_rows_originals_and_one_message_per_image(
    aws: Aws, db: asyncpg.Pool
) -> None:
    files = svgs(12)
    key = await put_upload(aws, "acme", make_zip({"manifest.json": manifest(list(files)), **files}))
    await Pipeline(aws, db).drain("batch")

    upload = await upload_row(db, key)
    assert upload["status"] == "processing"
    assert upload["dispatched_at"] is not None
    product = await fetch_row(db, "SELECT * FROM products WHERE upload_id = $1", upload["id"])
    assert product["image_count"] == 12
    images = await db.fetch(
        "SELECT * FROM images WHERE product_id = $1 ORDER BY position", product["id"]
    )
    assert [i["path"] for i in images] == list(files)
    for image in images:
        original = await aws.get_bytes(aws.settings.uploads_bucket, image["original_key"])
        assert original == files[image["path"]]
    assert (await queue_counts(aws, aws.settings.render_queue))[0] == 12
    # the safety net is waiting in the preview queue
    assert sum(await queue_counts(aws, aws.settings.preview_queue)) == 1


async def test_duplicate_event_changes_nothing(aws: Aws, db: asyncpg.Pool) -> None:
    files = svgs(3)
    key = await put_upload(aws, "acme", make_zip({"manifest.json": manifest(list(files)), **files}))
    url = await aws.queue_url(aws.settings.batch_queue)
    # S3 delivered the event; deliver it a second time, as SQS may.
    received = await aws.sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2, VisibilityTimeout=0)
    [event] = received["Messages"]
    await aws.sqs.send_message(QueueUrl=url, MessageBody=event["Body"])
    await Pipeline(aws, db).drain("batch")

    assert await db.fetchval("SELECT count(*) FROM uploads WHERE object_key = $1", key) == 1
    assert await db.fetchval("SELECT count(*) FROM images") == 3
    assert (await queue_counts(aws, aws.settings.render_queue))[0] == 3


async def test_invalid_manifest_is_refused_with_the_contributors_words(
    aws: Aws, db: asyncpg.Pool
) -> None:
    files = svgs(2)
    bad = json.loads(manifest(list(files)))
    bad["colour"] = "red"
    bad["title"] = 12
    key = await put_upload(aws, "acme", make_zip({"manifest.json": json.dumps(bad), **files}))
    error = await rejected_by_batcher(aws, db, key)
    assert "colour" in error
    assert "title" in error
    assert sum(await queue_counts(aws, aws.settings.render_queue)) == 0


async def test_one_bad_file_is_reported_and_the_rest_processed(aws: Aws, db: asyncpg.Pool) -> None:
    files = svgs(4)
    files["broken.svg"] = b"<svg xmlns='http://www.w3.org/2000/svg'><path d='M0 0"
    files["renamed.svg"] = (MDI.parent / "mdi-essentials" / "LICENSE").read_bytes()
    key = await put_upload(aws, "acme", make_zip({"manifest.json": manifest(list(files)), **files}))
    pipeline = Pipeline(aws, db)
    await pipeline.run_all()
    upload = await upload_row(db, key)
    assert upload["status"] == "ready"
    refused = {e["path"]: e["reason"] for e in upload["file_errors"]}
    assert set(refused) == {"broken.svg", "renamed.svg"}
    assert all(refused.values())
    product = await fetch_row(db, "SELECT * FROM products WHERE upload_id = $1", upload["id"])
    assert (product["image_count"], product["images_ready"], product["images_failed"]) == (4, 4, 0)


async def test_processor_renders_every_size_and_format_then_completes_the_product(
    aws: Aws, db: asyncpg.Pool
) -> None:
    uploaded = await upload_folder(aws, OPENMOJI)
    pipeline = Pipeline(aws, db)
    await pipeline.drain("batch")
    await pipeline.drain("render")

    product = await fetch_row(db, "SELECT * FROM products WHERE upload_id = $1", uploaded.upload_id)
    assert product["status"] == "ready"
    assert product["images_ready"] == product["image_count"] == 12
    assert product["completed_at"] is not None
    assert product["ready_notified_at"] is not None
    image = await fetch_row(
        db, "SELECT * FROM images WHERE product_id = $1 ORDER BY position LIMIT 1", product["id"]
    )
    assert {(r["width"], r["format"]) for r in image["renditions"]} == {
        (w, f) for w in (64, 128, 256, 512) for f in ("png", "webp")
    }
    for rendition in image["renditions"]:
        head = await aws.s3.head_object(Bucket=aws.settings.previews_bucket, Key=rendition["key"])
        assert head["ContentType"] == f"image/{rendition['format']}"
        assert "immutable" in head["CacheControl"]
        data = await aws.get_bytes(aws.settings.previews_bucket, rendition["key"])
        decoded = pyvips.Image.new_from_buffer(data, "")
        assert decoded.get("vips-loader") == f"{rendition['format']}load_buffer"
        assert decoded.width == rendition["width"]
        assert decoded.hasalpha()
    # product-ready went to the previewer (which has it indexed after the mosaic), beside
    # the safety net
    assert (await queue_counts(aws, aws.settings.index_queue))[0] == 0
    assert await preview_kinds(aws) == ["check_progress", "preview_family"]
    uploaded_row = await fetch_row(
        db, "SELECT status::text FROM uploads WHERE id = $1", uploaded.upload_id
    )
    assert uploaded_row["status"] == "ready"


async def test_redelivered_render_message_does_not_count_twice(aws: Aws, db: asyncpg.Pool) -> None:
    uploaded = await upload_folder(aws, MDI)
    pipeline = Pipeline(aws, db)
    await pipeline.drain("batch")
    product = ids.product_id(uploaded.upload_id)
    image = await fetch_row(
        db, "SELECT id, original_key FROM images WHERE product_id = $1 LIMIT 1", product
    )
    again = RenderImage(
        upload_id=uploaded.upload_id,
        product_id=product,
        image_id=image["id"],
        original_key=image["original_key"],
    )
    await aws.send(aws.settings.render_queue, [again, again])
    await pipeline.drain("render")
    row = await fetch_row(db, "SELECT * FROM products WHERE id = $1", product)
    assert (row["images_ready"], row["images_failed"]) == (24, 0)
    assert (await preview_kinds(aws)).count("preview_family") == 1


async def test_only_the_image_that_completes_its_product_sends_product_ready(
    aws: Aws, db: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = svgs(2)
    await put_upload(aws, "acme", make_zip({"manifest.json": manifest(list(files)), **files}))
    pipeline = Pipeline(aws, db)
    await pipeline.drain("batch")
    first, second = await db.fetch(
        "SELECT id, product_id, original_key FROM images ORDER BY position"
    )
    # Only the first image goes through the processor; the second is finished by "another
    # handler" right after the first's finish, completing the product, as happens when two
    # images of a set finish at once. That handler then sends product-ready itself.
    await aws.sqs.purge_queue(QueueUrl=await aws.queue_url(aws.settings.render_queue))
    await aws.send(
        aws.settings.render_queue,
        [
            RenderImage(
                upload_id=(await fetch_row(db, "SELECT id FROM uploads"))["id"],
                product_id=first["product_id"],
                image_id=first["id"],
                original_key=first["original_key"],
            )
        ],
    )
    completed_by_the_other: list[ProductState | None] = []

    async def then_the_other_image_completes(
        connection: Connection, image_id: uuid.UUID, **outcome: object
    ) -> ProductState | None:
        state = await finish_image(connection, image_id, **outcome)  # type: ignore[arg-type]
        if image_id == first["id"]:
            other = await finish_image(
                connection,
                second["id"],
                renditions_bucket=aws.settings.previews_bucket,
                failure_reason="elsewhere",
            )
            completed_by_the_other.append(other)
        return state

    monkeypatch.setattr(processor_handler, "finish_image", then_the_other_image_completes)
    await pipeline.drain("render")
    (other,) = completed_by_the_other
    assert other is not None
    assert other.complete
    await notify_product_ready(aws, db, other)  # what the other image's handler does next

    assert (await preview_kinds(aws)).count("preview_family") == 1  # product-ready once


async def test_unrenderable_svg_fails_with_a_reason_and_still_completes(
    aws: Aws, db: asyncpg.Pool
) -> None:
    files = svgs(2)
    files["huge.svg"] = (
        b'<svg xmlns="http://www.w3.org/2000/svg" width="100000" height="100000"><rect width="10" height="10"/></svg>'
    )
    key = await put_upload(aws, "acme", make_zip({"manifest.json": manifest(list(files)), **files}))
    pipeline = Pipeline(aws, db)
    await pipeline.run_all()
    upload = await upload_row(db, key)
    failed = await fetch_row(
        db, "SELECT status::text, failure_reason FROM images WHERE path = 'huge.svg'"
    )
    assert failed["status"] == "failed"
    assert "100000" in failed["failure_reason"]
    assert upload["status"] == "ready"
    product = await fetch_row(db, "SELECT * FROM products WHERE upload_id = $1", upload["id"])
    assert (product["images_ready"], product["images_failed"]) == (2, 1)


async def test_mosaic_draws_from_every_set_of_the_family(aws: Aws, db: asyncpg.Pool) -> None:
    first, second = svgs(3), dict(list(svgs(6).items())[3:])
    await put_upload(
        aws, "acme", make_zip({"manifest.json": manifest(list(first)), **first}), "one.zip"
    )
    await put_upload(
        aws,
        "acme",
        make_zip({"manifest.json": manifest(list(second), title="Second"), **second}),
        "two.zip",
    )
    await Pipeline(aws, db, mosaic_images=50).run_all()

    preview = await fetch_row(db, "SELECT * FROM family_previews")
    products = await db.fetch(
        "SELECT DISTINCT product_id FROM images WHERE id = ANY($1::uuid[])", preview["image_ids"]
    )
    assert len(preview["image_ids"]) == 6
    assert len(products) == 2
    await assert_mosaic_decodes(aws, preview)


async def test_a_family_of_flat_icons_gets_a_lossless_mosaic_and_gradients_a_lossy_one(
    aws: Aws, db: asyncpg.Pool
) -> None:
    flat = svgs(3)
    await put_upload(aws, "acme", make_zip({"manifest.json": manifest(list(flat)), **flat}))
    pipeline = Pipeline(aws, db, mosaic_images=50)
    await pipeline.run_all()
    png, webp = await assert_mosaic_decodes(
        aws, await fetch_row(db, "SELECT * FROM family_previews")
    )
    # Every tile's WebP was lossless, so the mosaic's is: the PNG's pixels exactly.
    assert (png - webp).abs().max() == 0

    # One icon with gradients joins the family: its WebP is lossy, and so is the next mosaic.
    second = {"circle.svg": FLUENT_RED_CIRCLE}
    body = make_zip({"manifest.json": manifest(list(second), title="Second"), **second})
    await put_upload(aws, "acme", body, "two.zip")
    await pipeline.run_all()
    preview = await fetch_row(db, "SELECT * FROM family_previews")
    assert len(preview["image_ids"]) == 4
    png, webp = await assert_mosaic_decodes(aws, preview)
    assert (png - webp).abs().max() > 0
    renditions = await db.fetchval(
        "SELECT renditions FROM images WHERE path = 'circle.svg' AND status = 'ready'"
    )
    assert {r["lossless"] for r in renditions if r["format"] == "webp"} == {False}


async def test_a_mosaic_is_rebuilt_only_when_the_family_changed_since_it_was_sampled(
    aws: Aws, db: asyncpg.Pool
) -> None:
    files = list(svgs(9).items())
    sets = [dict(files[k : k + 3]) for k in (0, 3, 6)]

    async def upload(k: int) -> None:
        body = make_zip({"manifest.json": manifest(list(sets[k]), title=f"Set {k}"), **sets[k]})
        await put_upload(aws, "acme", body, f"set-{k}.zip")

    await upload(0)
    await upload(1)
    pipeline = Pipeline(aws, db, mosaic_images=50)
    await pipeline.drain("batch")
    await pipeline.drain("render")  # both sets complete before the previewer runs: a burst
    await pipeline.drain("preview")
    built = await fetch_row(db, "SELECT * FROM family_previews")
    assert built["revision"] == await db.fetchval("SELECT revision FROM families")
    assert len(built["image_ids"]) == 6  # the one build drew from both sets

    # A redelivered product-ready (or the second set's own) finds the mosaic current.
    product = await fetch_row(db, "SELECT * FROM products ORDER BY created_at LIMIT 1")
    again = PreviewFamily(
        upload_id=product["upload_id"],
        product_id=product["id"],
        family_id=product["family_id"],
    )
    await aws.send(aws.settings.preview_queue, [again])
    await pipeline.drain("preview")
    assert await fetch_row(db, "SELECT * FROM family_previews") == built
    mosaics = await aws.s3.list_objects_v2(
        Bucket=aws.settings.previews_bucket, Prefix="previews/families/"
    )
    assert len(mosaics["Contents"]) == 2  # one PNG, one WebP: built once

    # A third set completes after the sample: the next product-ready rebuilds.
    await upload(2)
    await pipeline.run_all()
    rebuilt = await fetch_row(db, "SELECT * FROM family_previews")
    assert rebuilt["revision"] > built["revision"]
    assert len(rebuilt["image_ids"]) == 9
    assert rebuilt["updated_at"] > built["updated_at"]
    await assert_mosaic_decodes(aws, rebuilt)


async def test_a_burst_of_one_familys_messages_fits_a_pool_smaller_than_the_burst(
    aws: Aws, db: asyncpg.Pool, settings: IngestSettings
) -> None:
    """Messages waiting for the family's build lock hold pool connections: the build that
    holds the lock must not need one more, or the burst waits out the handler timeout."""
    files = svgs(3)
    await put_upload(aws, "acme", make_zip({"manifest.json": manifest(list(files)), **files}))
    pipeline = Pipeline(aws, db)
    await pipeline.drain("batch")
    await pipeline.drain("render")
    product = await fetch_row(db, "SELECT * FROM products")
    message = PreviewFamily(
        upload_id=product["upload_id"], product_id=product["id"], family_id=product["family_id"]
    )
    small = settings_from(PreviewerSettings, settings, db_pool_min=1, db_pool_max=3)
    pool = await create_pool(small)
    try:
        async with PreviewHandler.open(Resources(small, aws, pool)) as handler:
            delivery = Delivery("burst", "receipt", message.model_dump_json(), {}, 1, 0.0)
            # A deadlock would last until the handler timeout (60 s); a build takes well
            # under a second.
            async with asyncio.timeout(30):
                await asyncio.gather(*(handler.handle(message, delivery) for _ in range(8)))
    finally:
        await pool.close()
    built = await fetch_row(db, "SELECT * FROM family_previews")
    assert len(built["image_ids"]) == 3
    mosaics = await aws.s3.list_objects_v2(
        Bucket=aws.settings.previews_bucket, Prefix="previews/families/"
    )
    assert len(mosaics["Contents"]) == 2  # one build for the burst: one PNG, one WebP


async def test_safety_net_fails_lost_stragglers_and_a_late_render_brings_them_back(
    aws: Aws, db: asyncpg.Pool
) -> None:
    files = svgs(3)
    key = await put_upload(aws, "acme", make_zip({"manifest.json": manifest(list(files)), **files}))
    pipeline = Pipeline(aws, db, stall_timeout=1)
    await pipeline.drain("batch")
    # The render messages are lost (kept aside here, to deliver late below).
    url = await aws.queue_url(aws.settings.render_queue)
    lost = await aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    await aws.sqs.purge_queue(QueueUrl=url)
    upload = await upload_row(db, key)
    await db.execute("UPDATE products SET progressed_at = now() - interval '1 hour'")
    await pipeline.drain("preview")

    product = await fetch_row(db, "SELECT * FROM products WHERE upload_id = $1", upload["id"])
    assert product["status"] == "failed"
    assert product["images_failed"] == 3
    reasons = await db.fetch("SELECT failure_reason FROM images")
    assert all("rendering stopped" in r["failure_reason"] for r in reasons)
    # product-ready reached the previewer, which had the product indexed once
    assert (await queue_counts(aws, aws.settings.index_queue))[0] == 1
    assert await db.fetchval("SELECT count(*) FROM object_garbage WHERE kind = 'renditions'") == 3

    # The messages turn up after all: their renders bring the images back, and the product,
    # its mosaic and its search document follow.
    for message in lost["Messages"]:
        await aws.sqs.send_message(QueueUrl=url, MessageBody=message["Body"])
    await pipeline.run_all()
    product = await fetch_row(db, "SELECT * FROM products WHERE upload_id = $1", upload["id"])
    assert (product["status"], product["images_ready"], product["images_failed"]) == ("ready", 3, 0)
    assert (await upload_row(db, key))["status"] == "ready"
    document = await db.fetchval("SELECT document FROM search_documents")
    assert document["images_ready"] == 3
    preview = await fetch_row(db, "SELECT * FROM family_previews")
    assert len(preview["image_ids"]) == 3
    # Their renders withdrew the deletions their failure had recorded.
    assert await db.fetchval("SELECT count(*) FROM object_garbage WHERE kind = 'renditions'") == 0


async def test_indexer_ranks_title_over_description(aws: Aws, db: asyncpg.Pool) -> None:
    a, b = svgs(2), dict(list(svgs(4).items())[2:])
    await put_upload(
        aws,
        "acme",
        make_zip(
            {
                "manifest.json": manifest(
                    list(a), title="Weather forecast", description="Sunny things"
                ),
                **a,
            }
        ),
        "a.zip",
    )
    await put_upload(
        aws,
        "acme",
        make_zip(
            {
                "manifest.json": manifest(list(b), title="Office", description="Some weather too"),
                **b,
            }
        ),
        "b.zip",
    )
    await Pipeline(aws, db).run_all()
    async with db.acquire() as connection:
        hits = await PostgresSearch(connection).search("weather")
    assert [h.title for h in hits] == ["Weather forecast", "Office"]
    assert hits[0].rank > hits[1].rank
    assert hits[0].renditions is not None
    assert hits[0].renditions.startswith("renditions/")
    assert hits[0].renditions.endswith(".png")


@pytest.mark.parametrize("body", ['{"kind": "index_product"}', "not json"])
async def test_index_message_that_is_not_the_model_goes_to_the_dlq(
    aws: Aws, db: asyncpg.Pool, body: str
) -> None:
    url = await aws.queue_url(aws.settings.index_queue)
    await aws.sqs.send_message(QueueUrl=url, MessageBody=body)
    health = await Pipeline(aws, db).drain("index")
    assert health.invalid == 1
    assert (await queue_counts(aws, dead_letter_queue(aws.settings.index_queue)))[0] == 1


async def test_index_of_unknown_product_is_a_permanent_failure(aws: Aws, db: asyncpg.Pool) -> None:
    await aws.send(
        aws.settings.index_queue, [IndexProduct(upload_id=uuid.uuid4(), product_id=uuid.uuid4())]
    )
    health = await Pipeline(aws, db).drain("index")
    assert health.failed == 1


async def preview_kinds(aws: Aws) -> list[str]:
    """The kinds of the messages waiting on the preview queue, sorted; they stay there."""
    url = await aws.queue_url(aws.settings.preview_queue)
    seen: dict[str, str] = {}
    for _ in range(5):
        response = await aws.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=5, WaitTimeSeconds=1
        )
        for message in response.get("Messages", []):
            seen[message["MessageId"]] = json.loads(message["Body"])["kind"]
            await aws.sqs.change_message_visibility(
                QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
    return sorted(seen.values())
