"""Faults: duplicates, crashes, SIGTERM, lost database connections, an AWS outage, poison.

Each ends with the full expected state: every image ready exactly once, no duplicate
rows, every rendition object present, the mosaic and the index consistent, and nothing
left in a dead-letter queue (except where a poison message belongs there).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import asyncpg
import pytest
from ingest_common.aws import Aws
from ingest_common.dead_letters import dead_letter_reason, original_attributes
from ingest_common.runtime.consumer import Delivery
from ingest_common.schemas.messages import Message
from ingest_common.topology import load_topology
from ingest_devstack.local import local_env

from tests.integration.pipeline import SERVICES, Pipeline, fetch_row, queue_counts, run_ingest
from tests.reliability.faults import (
    FAST,
    IMAGES,
    count_ready,
    finish_and_check,
    stack,
    until,
    upload_sets,
    wait_finished,
)
from tests.reliability.proxy import FaultProxy


async def test_every_message_delivered_twice(
    aws: Aws, db: asyncpg.Pool, database_url: str, data_lost: Callable[[int], None]
) -> None:
    """Each send is doubled and each delivery handled twice at once: nothing changes."""
    send = aws.send

    async def send_twice(queue: str, messages: Any, **kwargs: Any) -> None:
        await send(queue, [*messages, *messages], **kwargs)

    aws.send = send_twice  # type: ignore[method-assign]
    doubled = {role: _doubled(build) for role, (_, build) in SERVICES.items()}
    uploads = await upload_sets(aws)
    # S3 delivers its event once; deliver it a second time too.
    url = await aws.queue_url(aws.settings.batch_queue)
    received = await aws.sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2
    )
    for message in received.get("Messages", []):
        await aws.sqs.send_message(QueueUrl=url, MessageBody=message["Body"])
        await aws.sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    original = dict(SERVICES)
    SERVICES.update({role: (settings, doubled[role]) for role, (settings, _) in original.items()})
    try:
        await Pipeline(aws, db).run_all(timeout=120)
    finally:
        SERVICES.update(original)
        aws.send = send  # type: ignore[method-assign]
    await finish_and_check(aws, database_url, uploads, data_lost)


def _doubled(build: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A handler factory whose handler runs every message twice, concurrently."""

    @asynccontextmanager
    async def open_doubled(resources: Any) -> Any:
        async with build(resources) as handler:
            handle = handler.handle

            async def twice(message: Message, delivery: Delivery) -> None:
                await asyncio.gather(handle(message, delivery), handle(message, delivery))

            handler.handle = twice
            yield handler

    return open_doubled


async def test_processor_killed_mid_set_then_restarted(
    aws: Aws, db: asyncpg.Pool, database_url: str, tmp_path: Path, data_lost: Callable[[int], None]
) -> None:
    env = local_env(aws.settings.aws_endpoint_url or "", database_url, **FAST)
    async with stack(env, tmp_path / "logs") as running:
        uploads = await upload_sets(aws)
        await until(lambda: _ready_at_least(database_url, 4))
        processor = running.processes["processor"]
        workers = _children(processor.pid)
        os.kill(processor.pid, signal.SIGKILL)
        processor.wait()
        assert await count_ready(database_url) < IMAGES, "killed in the middle of the set"
        await asyncio.sleep(1)
        for pid in workers:  # the render workers notice their parent is gone
            assert not _alive(pid), f"render worker {pid} outlived its processor"
        running.start("processor")
        await asyncio.to_thread(running.wait_ready)
        await finish_and_check(aws, database_url, uploads, data_lost)


async def test_publisher_killed_while_events_flow_then_restarted(
    aws: Aws, db: asyncpg.Pool, database_url: str, tmp_path: Path, data_lost: Callable[[int], None]
) -> None:
    """The batcher hosts the outbox's publisher: SIGKILLed mid-set, the other services go on
    writing events that nobody publishes; restarted, it sends every one, in order."""
    env = local_env(aws.settings.aws_endpoint_url or "", database_url, **FAST)
    async with stack(env, tmp_path / "logs") as running:
        # The indexer is held (SIGSTOP) until the publisher is dead, so each set's
        # product.indexed is certainly written while nobody publishes: the rest of a small
        # set can be through, and its events published, before the kill (CI saw that).
        indexer = running.processes["indexer"]
        os.kill(indexer.pid, signal.SIGSTOP)
        try:
            uploads = await upload_sets(aws)
            # Killed once both sets are dispatched, the rest of their events come from the
            # other services: killed mid-set, what was left could wait for the batcher itself.
            # Dispatched is dispatched_at, set once the render messages are sent: the set's
            # upload.received can be published before that (CI saw a kill between the two,
            # and then nothing wrote an event for the wait below).
            await until(lambda: _published_at_least(db, len(uploads), kind="upload.received"))
            await until(lambda: _dispatched_at_least(db, len(uploads)))
            batcher = running.processes["batcher"]
            os.kill(batcher.pid, signal.SIGKILL)
            batcher.wait()
        finally:
            os.kill(indexer.pid, signal.SIGCONT)
        # Each set's product.indexed at least, written while nobody publishes.
        await until(lambda: _unpublished_at_least(db, len(uploads)))
        running.start("batcher")
        await asyncio.to_thread(running.wait_ready)
        await finish_and_check(aws, database_url, uploads, data_lost)


async def _published_at_least(db: asyncpg.Pool, count: int, *, kind: str) -> bool:
    published = await db.fetchval(
        "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL AND type = $1", kind
    )
    return int(published) >= count


async def _dispatched_at_least(db: asyncpg.Pool, count: int) -> bool:
    dispatched = await db.fetchval("SELECT count(*) FROM uploads WHERE dispatched_at IS NOT NULL")
    return int(dispatched) >= count


async def _unpublished_at_least(db: asyncpg.Pool, count: int) -> bool:
    return int(await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")) >= count


async def test_sigterm_during_work_finishes_in_flight_and_exits_in_time(
    aws: Aws, db: asyncpg.Pool, database_url: str, tmp_path: Path, data_lost: Callable[[int], None]
) -> None:
    env = local_env(
        aws.settings.aws_endpoint_url or "", database_url, **{**FAST, "visibility_timeout": "120"}
    )
    async with stack(env, tmp_path / "logs") as running:
        uploads = await upload_sets(aws)
        await until(lambda: _ready_at_least(database_url, 2))
        processor = running.processes["processor"]
        started = time.monotonic()
        processor.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(processor.wait, 60)
        took = time.monotonic() - started
        assert code == 0
        assert took < 120 / 2, f"exit took {took:.1f} s, not well within the visibility timeout"
        log = (tmp_path / "logs" / "processor.log").read_text().splitlines()
        events = [json.loads(line) for line in log if line.startswith("{")]
        assert any(e["event"] == "consumer.stopped" for e in events)
        assert not any(e["event"] == "consumer.drain_cancel" for e in events), (
            "in-flight work finished"
        )
        # A new processor takes over at once: nothing waits for a visibility timeout.
        running.start("processor")
        await asyncio.to_thread(running.wait_ready)
        await finish_and_check(aws, database_url, uploads, data_lost)


async def test_database_connections_killed_mid_run(
    aws: Aws, db: asyncpg.Pool, database_url: str, tmp_path: Path, data_lost: Callable[[int], None]
) -> None:
    env = local_env(aws.settings.aws_endpoint_url or "", database_url, **FAST)
    database = urlparse(database_url).path.lstrip("/")
    async with stack(env, tmp_path / "logs"):
        uploads = await upload_sets(aws)
        killer = await asyncpg.connect(database_url)
        killed = 0
        try:
            for _ in range(6):
                killed += await killer.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                    database,
                )
                await asyncio.sleep(0.7)
        finally:
            await killer.close()
        assert killed > 0
        await finish_and_check(aws, database_url, uploads, data_lost)


async def test_aws_endpoint_unreachable_for_ten_seconds(
    aws: Aws, db: asyncpg.Pool, database_url: str, tmp_path: Path, data_lost: Callable[[int], None]
) -> None:
    endpoint = urlparse(aws.settings.aws_endpoint_url or "")
    with FaultProxy(endpoint.hostname or "127.0.0.1", endpoint.port or 80) as link:
        env = local_env(link.endpoint, database_url, **FAST)
        async with stack(env, tmp_path / "logs") as running:
            uploads = await upload_sets(aws)  # straight to S3: the services go through the link
            await until(lambda: _ready_at_least(database_url, 2))
            link.refuse()
            await asyncio.sleep(10)
            link.up()
            assert all(p.poll() is None for p in running.processes.values()), "a service died"
            await finish_and_check(aws, database_url, uploads, data_lost)


async def test_poison_message_lands_in_the_dlq_and_redrives(
    aws: Aws, db: asyncpg.Pool, database_url: str, data_lost: Callable[[int], None]
) -> None:
    uploads = await upload_sets(aws)
    # No SVG in the render messages: the processor reads every original from S3.
    pipeline = Pipeline(aws, db, retry_base_delay=0, retry_max_delay=0, inline_svg_bytes=0)
    await pipeline.drain("batch")
    # Poison: one image whose original vanished (retrying cannot help until it is back),
    # and one message that is not a render message at all.
    victim = await fetch_row(db, "SELECT id, original_key FROM images ORDER BY path LIMIT 1")
    original = await aws.get_bytes(aws.settings.uploads_bucket, victim["original_key"])
    await aws.s3.delete_object(Bucket=aws.settings.uploads_bucket, Key=victim["original_key"])
    render_url = await aws.queue_url(aws.settings.render_queue)
    await aws.sqs.send_message(QueueUrl=render_url, MessageBody='{"kind": "render_image"}')
    await pipeline.drain("render", timeout=120)

    dead = await queue_counts(aws, aws.settings.render_queue + "-dlq")
    assert dead[0] == 2, "the poison (after maxReceiveCount) and the invalid message"
    listing = run_ingest(aws.settings, "dlq", "list", aws.settings.render_queue)
    assert str(victim["id"]) in listing.stdout
    assert "invalid message" in listing.stdout
    assert "failed 5 times; the last time: could not read the original" in listing.stdout
    # Meanwhile the image is failed, for a reason that says it will be retried.
    failed = await fetch_row(db, "SELECT * FROM images WHERE id = $1", victim["id"])
    assert (failed["status"], failed["failure_retryable"]) == ("failed", True)

    # Fix the cause, throw the invalid message away, replay the rest.
    await aws.put_bytes(
        aws.settings.uploads_bucket, victim["original_key"], original, content_type="image/svg+xml"
    )
    await _discard_invalid(aws)
    replay = run_ingest(aws.settings, "dlq", "redrive", aws.settings.render_queue)
    assert "moved 1 message(s)" in replay.stdout
    await pipeline.run_all(timeout=120)
    await finish_and_check(aws, database_url, uploads, data_lost)


async def test_redrive_after_a_failure_revives_the_image(
    aws: Aws, db: asyncpg.Pool, database_url: str, tmp_path: Path, data_lost: Callable[[int], None]
) -> None:
    """An image whose render fails on every try (its original is gone) is failed for now
    and dead-lettered with the reason; once the cause is fixed, a redrive brings it back and
    the product, mosaic and index follow."""
    # No SVG in the render messages: the processor reads every original from S3.
    env = local_env(aws.settings.aws_endpoint_url or "", database_url, **FAST, inline_svg_bytes="0")
    async with stack(env, tmp_path / "logs") as running:
        running.processes["processor"].terminate()
        await asyncio.to_thread(running.processes["processor"].wait, 30)
        uploads = await upload_sets(aws)
        await until(lambda: _dispatched(database_url, len(uploads)))
        victim = await fetch_row(db, "SELECT id, original_key FROM images ORDER BY path LIMIT 1")
        bucket = aws.settings.uploads_bucket
        original = await aws.get_bytes(bucket, victim["original_key"])
        await aws.s3.delete_object(Bucket=bucket, Key=victim["original_key"])
        running.start("processor")
        await asyncio.to_thread(running.wait_ready)
        dlq = aws.settings.render_queue + "-dlq"
        await until(lambda: _in_queue(aws, dlq, 1), timeout=120)
        failed = await fetch_row(db, "SELECT * FROM images WHERE id = $1", victim["id"])
        assert (failed["status"], failed["failure_retryable"]) == ("failed", True)
        assert "could not be rendered" in failed["failure_reason"]

        await aws.put_bytes(bucket, victim["original_key"], original, content_type="image/svg+xml")
        replay = run_ingest(aws.settings, "dlq", "redrive", aws.settings.render_queue)
        assert "moved 1 message(s)" in replay.stdout
        await finish_and_check(aws, database_url, uploads, data_lost)


async def test_uploads_whose_events_never_arrive_are_ingested_by_the_reconciliation(
    aws: Aws, db: asyncpg.Pool, database_url: str, tmp_path: Path, data_lost: Callable[[int], None]
) -> None:
    """S3 never tells the batcher (the notification is gone): one batcher's periodic
    reconciliation finds the uploads with no row and announces them; nothing is lost."""
    await aws.s3.put_bucket_notification_configuration(
        Bucket=aws.settings.uploads_bucket, NotificationConfiguration={}
    )
    await aws.sqs.purge_queue(QueueUrl=await aws.queue_url(aws.settings.batch_queue))
    env = local_env(
        aws.settings.aws_endpoint_url or "",
        database_url,
        **{**FAST, "reconcile_interval": "2", "reconcile_grace": "1"},
    )
    async with stack(env, tmp_path / "logs"):
        uploads = await upload_sets(aws)
        await finish_and_check(aws, database_url, uploads, data_lost, timeout=90)
    runs = await db.fetchrow("SELECT * FROM maintenance_runs WHERE task = 'reconcile uploads'")
    assert runs is not None
    assert runs["finished_at"] is not None


async def test_poison_with_ten_attributes_is_dead_lettered_with_its_reason(
    aws: Aws, db: asyncpg.Pool, database_url: str, tmp_path: Path, data_lost: Callable[[int], None]
) -> None:
    """A message with SQS's maximum of 10 attributes, on every queue, while sets flow: each
    lands in its DLQ with its reason and its 10 attributes intact; nothing else is touched."""
    attributes: dict[str, Any] = {
        f"x-{i}": {"DataType": "String", "StringValue": f"value {i}"} for i in range(10)
    }
    env = local_env(aws.settings.aws_endpoint_url or "", database_url, **FAST)
    async with stack(env, tmp_path / "logs"):
        uploads = await upload_sets(aws)
        queues = [q.name for q in load_topology(aws.settings).queues]
        for queue in queues:
            await aws.sqs.send_message(
                QueueUrl=await aws.queue_url(queue),
                MessageBody='{"not": "a message of this queue"}',
                MessageAttributes=attributes,
            )
        for queue in queues:
            await until(lambda queue=queue: _in_queue(aws, queue + "-dlq", 1))  # type: ignore[misc]
        await wait_finished(database_url, uploads)
        # Checked with the services up: the batcher publishes the last events meanwhile.
        for queue in queues:
            url = await aws.queue_url(queue + "-dlq")
            response = await aws.sqs.receive_message(
                QueueUrl=url, MessageAttributeNames=["All"], WaitTimeSeconds=1
            )
            [dead] = response["Messages"]
            assert (dead_letter_reason(dead["MessageAttributes"]) or "").startswith(
                "invalid message"
            )
            assert original_attributes(dead["MessageAttributes"]) == attributes
            await aws.sqs.delete_message(QueueUrl=url, ReceiptHandle=dead["ReceiptHandle"])
        await finish_and_check(aws, database_url, uploads, data_lost)


async def _dispatched(dsn: str, count: int) -> bool:
    connection = await asyncpg.connect(dsn)
    try:
        done = await connection.fetchval(
            "SELECT count(*) FROM uploads WHERE dispatched_at IS NOT NULL"
        )
    finally:
        await connection.close()
    return bool(done >= count)


async def _in_queue(aws: Aws, queue: str, count: int) -> bool:
    return sum(await queue_counts(aws, queue)) >= count


async def _discard_invalid(aws: Aws) -> None:
    url = await aws.queue_url(aws.settings.render_queue + "-dlq")
    response = await aws.sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=1
    )
    for message in response.get("Messages", []):
        attribute = message.get("MessageAttributes", {}).get("ingest-error")
        error = "" if attribute is None else attribute.get("StringValue", "")
        if error.startswith("invalid message"):
            await aws.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        else:
            await aws.sqs.change_message_visibility(
                QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )


async def _ready_at_least(dsn: str, count: int) -> bool:
    return await count_ready(dsn) >= count


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


pytestmark = pytest.mark.e2e
