"""Domain events: written with the state change, published in order to the topic and the bus."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest
from ingest_common.aws import Aws
from ingest_common.outbox import OutboxPublisher, PublishFailed, oldest_unpublished, prune_outbox
from ingest_common.runtime.dependencies import Dependencies

from tests.integration.pipeline import (
    Pipeline,
    assert_in_order_per_subject,
    make_zip,
    manifest,
    publish_events,
    put_upload,
    received_events,
    subscribe_to_events,
    svgs,
)

HUGE = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="100000" height="100000">'
    b'<rect width="10" height="10"/></svg>'
)


async def one_image_through_the_batcher(aws: Aws, db: asyncpg.Pool) -> None:
    """A one-image set, batched: its upload.received waits in the outbox."""
    files = svgs(1)
    await put_upload(aws, "acme", make_zip({"manifest.json": manifest(list(files)), **files}))
    await Pipeline(aws, db).drain("batch")


async def bus_queue(aws: Aws) -> str:
    """An SQS queue behind a rule on the bus that takes every ingest event."""
    url = (await aws.sqs.create_queue(QueueName="bus-seen"))["QueueUrl"]
    arn = (await aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))[
        "Attributes"
    ]["QueueArn"]
    bus = aws.settings.event_bus
    await aws.events.put_rule(
        Name="every-ingest-event", EventBusName=bus, EventPattern='{"source": ["ingest"]}'
    )
    await aws.events.put_targets(
        Rule="every-ingest-event", EventBusName=bus, Targets=[{"Id": "seen", "Arn": arn}]
    )
    return str(url)


async def test_a_set_tells_its_story_in_order_on_the_topic_and_the_bus(
    aws: Aws, db: asyncpg.Pool
) -> None:
    topic_seen, bus_seen = await subscribe_to_events(aws), await bus_queue(aws)
    files = {**svgs(2), "huge.svg": HUGE}
    await put_upload(aws, "acme", make_zip({"manifest.json": manifest(list(files)), **files}))
    await Pipeline(aws, db).run_all()  # and publishes the outbox

    events = await received_events(aws, topic_seen)
    assert len(events) == await db.fetchval("SELECT count(*) FROM outbox")
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
    types = [e["type"] for e in events]
    assert types == [
        "upload.received",
        "product.partially_ready",
        "family.preview_updated",
        "product.indexed",
    ]
    assert_in_order_per_subject(events)
    outcome = events[1]["data"]
    assert (outcome["images"], outcome["ready"], outcome["failed"]) == (3, 2, 1)
    failed = [i for i in outcome["listed"] if i["status"] == "failed"]
    assert [i["path"] for i in failed] == ["huge.svg"]
    assert "100000" in failed[0]["failure_reason"]
    ready = [i for i in outcome["listed"] if i["status"] == "ready"]
    for image in ready:
        listing = await aws.s3.list_objects_v2(
            Bucket=outcome["previews_bucket"], Prefix=image["renditions"]
        )
        assert listing["KeyCount"] == 8, "every rendition is under the prefix the event gives"
    trace = await db.fetchval("SELECT trace_id FROM uploads")
    assert all(trace in e["traceparent"] for e in events), "the upload's trace, end to end"
    on_the_bus = [json.loads(b) if isinstance(b, str) else b for b in await _details(aws, bus_seen)]
    assert sorted(e["id"] for e in on_the_bus) == sorted(e["id"] for e in events)


async def _details(aws: Aws, url: str) -> list[Any]:
    """EventBridge wraps each event: its `detail` is ours."""
    return [e["detail"] for e in await received_events(aws, url)]


async def test_a_rejected_upload_says_why_and_a_repeat_tells_nothing_new(
    aws: Aws, db: asyncpg.Pool
) -> None:
    seen = await subscribe_to_events(aws)
    key = await put_upload(aws, "acme", make_zip({"manifest.json": '{"licence": "mit"}'}))
    pipeline = Pipeline(aws, db)
    await pipeline.drain("batch")
    await publish_events(aws, db)
    # The same event again (at-least-once delivery): nothing changes, nothing is told.
    url = await aws.queue_url(aws.settings.batch_queue)
    upload = await db.fetchrow("SELECT * FROM uploads WHERE object_key = $1", key)
    assert upload is not None
    body = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "eventTime": upload["uploaded_at"].isoformat(),
                "s3": {
                    "bucket": {"name": aws.settings.uploads_bucket},
                    "object": {"key": key, "size": upload["object_size"], "eTag": upload["etag"]},
                },
            }
        ]
    }
    await aws.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))
    await pipeline.drain("batch")
    await publish_events(aws, db)

    events = await received_events(aws, seen)
    assert [e["type"] for e in events] == ["upload.received", "upload.rejected"]
    assert 'unknown field "licence"' in events[1]["data"]["reason"]


async def test_the_outbox_tells_its_lag_and_keeps_published_events_for_the_retention(
    aws: Aws, db: asyncpg.Pool
) -> None:
    await one_image_through_the_batcher(aws, db)
    async with db.acquire() as connection:
        await connection.execute("UPDATE outbox SET created_at = now() - interval '90 seconds'")
        assert 89 < await oldest_unpublished(connection) < 120, "an event waits 90 s"
    await publish_events(aws, db)
    async with db.acquire() as connection:
        assert await oldest_unpublished(connection) == 0
    written = await db.fetchval("SELECT count(*) FROM outbox")
    await db.execute(
        "UPDATE outbox SET published_at = now() - interval '8 days'"
        " WHERE id = (SELECT min(id) FROM outbox)"
    )
    assert await prune_outbox(db, 7 * 86400) == 1, "only the event published 8 days ago"
    assert await db.fetchval("SELECT count(*) FROM outbox") == written - 1


async def test_the_publisher_reads_the_lag_with_its_batch_and_says_when_more_wait(
    aws: Aws, db: asyncpg.Pool
) -> None:
    await one_image_through_the_batcher(aws, db)
    # A second event of the same subject: it must wait for the first one's batch.
    await db.execute(
        "INSERT INTO outbox (event_id, type, subject, envelope)"
        " SELECT gen_random_uuid(), type, subject, envelope FROM outbox"
    )
    await db.execute("UPDATE outbox SET created_at = now() - interval '90 seconds'")
    unpublished = "SELECT count(*) FROM outbox WHERE published_at IS NULL"
    assert await db.fetchval(unpublished) == 2

    refused = OutboxPublisher(
        aws.settings.model_copy(update={"events_topic": "no-such-topic"}),
        aws,
        Dependencies(aws.settings, {}),
    )
    async with db.acquire() as connection:
        with pytest.raises(PublishFailed):
            await refused.publish_some(connection)
    assert 89 < refused.lag.value < 120, "read with the batch, before the topic refused it"

    publisher = OutboxPublisher(aws.settings, aws, Dependencies(aws.settings, {}))
    async with db.acquire() as connection:
        assert await publisher.publish_some(connection), "the subject's next event waits"
        assert await db.fetchval(unpublished) == 1
        assert 89 < publisher.lag.value < 120
        assert not await publisher.publish_some(connection), "nothing waits behind it"
        assert await db.fetchval(unpublished) == 0
        assert publisher.lag.value == 0
        assert not await publisher.publish_some(connection)


async def test_a_woken_publisher_sends_a_burst_of_commits_in_one_batch(
    aws: Aws, db: asyncpg.Pool
) -> None:
    await one_image_through_the_batcher(aws, db)
    publisher = OutboxPublisher(aws.settings, aws, Dependencies(aws.settings, {}), batch_window=1.0)

    async def published(count: int) -> None:
        async with asyncio.timeout(30):
            while publisher.published < count:
                assert not task.done(), "the publisher stopped"
                await asyncio.sleep(0.02)

    task = asyncio.create_task(publisher.run())
    try:
        await published(1)  # the upload's own event, read as the publisher starts
        # Then four commits, each its own transaction (and NOTIFY), 0.1 s apart.
        for n in range(4):
            await db.execute(
                "INSERT INTO outbox (event_id, type, subject, envelope)"
                " SELECT gen_random_uuid(), type, subject || $1, envelope FROM outbox"
                " WHERE id = (SELECT min(id) FROM outbox)",
                f"-{n}",
            )
            await asyncio.sleep(0.1)
        await published(5)
        assert publisher.batches == 2, "the four commits went out together"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
