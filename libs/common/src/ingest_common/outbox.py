"""The outbox's publisher: every committed event, in order, to the SNS topic and the bus.

One process publishes at a time: the one whose connection holds the outbox's advisory lock
(the batcher hosts the publisher; its other processes wait to take over, which they do the
moment the holder's connection ends, crash included). It wakes on each commit that wrote an
event (LISTEN/NOTIFY), and looks every `poll_interval` seconds anyway. Woken, it lets the
events of the next `batch_window` seconds commit too before it reads: a burst of uploads
commits its events one at a time, a few hundred milliseconds apart, and without the window
each went out alone, a PublishBatch, a PutEvents and two statements apiece.

Order: rows are published in id order, and a batch holds at most one event per subject, so
a subject's next event goes out only after its previous one was accepted by both the topic
and the bus. A subject's events also commit in id order: the changes they report are
serialised by the subject's row lock (a product's counters, a family's revision), or follow
one another through a queue (ready → mosaic → indexed), so a later id of the same subject
never becomes visible before an earlier one.

At least once: a row is marked published after both accepted it; a failure, a crash or an
outage of PostgreSQL, SNS or EventBridge leaves it unpublished, to be sent again (consumers
deduplicate on the event's `id`). Nothing is skipped: the publisher never moves past an
event it could not publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import asyncpg
import structlog
from botocore.exceptions import BotoCoreError, ClientError

from ingest_common.aws import SQS_BATCH, Aws, UnknownTopic
from ingest_common.db.pool import Connection, connect
from ingest_common.events import NOTIFY_CHANNEL, SOURCE
from ingest_common.runtime.dependencies import Dependencies
from ingest_common.settings import IngestSettings
from ingest_common.telemetry import metrics

log = structlog.get_logger("ingest.outbox")

_LOCK = 0x1A6E58  # the outbox's advisory lock: whoever holds it publishes
_ROWS = 100  # rows read per look; a batch takes up to SQS_BATCH (SNS's and EventBridge's limit)
_RETRY = 2.0  # seconds before trying again after a failure, or to become the publisher


class PublishFailed(Exception):
    """The topic or the bus refused an event: it stays unpublished, to be sent again."""


class OutboxPublisher:
    def __init__(
        self,
        settings: IngestSettings,
        aws: Aws,
        dependencies: Dependencies,
        *,
        poll_interval: float = 1.0,
        batch_window: float = 0.0,
    ) -> None:
        self.settings = settings
        self.aws = aws
        self.dependencies = dependencies
        self.poll_interval = poll_interval
        self.batch_window = batch_window
        self.published = 0  # events sent by this process (for tests and logs)
        self.batches = 0  # the batches they went in
        self.lag = metrics.Reading()  # the oldest unpublished event's age, for the gauge

    async def run(self) -> None:
        """Forever (cancel to stop): publish while this process holds the lock."""
        while True:
            try:
                await self._lead()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("outbox.database_unavailable", error=str(exc) or repr(exc))
            except (BotoCoreError, ClientError, PublishFailed) as exc:
                log.warning("outbox.publish_failed", error=str(exc))
            except Exception:
                # A defect, not an outage: said loudly, and tried again (the events wait in
                # the outbox; a publisher that stopped for good would hold them silently).
                log.exception("outbox.publisher_failed")
            await asyncio.sleep(_RETRY)

    async def _lead(self) -> None:
        connection = await connect(
            self.settings.database_url, connect_timeout=self.settings.db_connect_timeout
        )
        try:
            if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK):
                return  # another process publishes; look again later
            log.info("outbox.publishing")
            wake = asyncio.Event()
            await connection.add_listener(NOTIFY_CHANNEL, lambda *_: wake.set())
            metrics.watch_outbox(self.lag)
            while True:
                if not self.dependencies.up:
                    self.lag.value = await oldest_unpublished(connection)
                    await asyncio.sleep(self.settings.outage_probe_interval)
                    continue
                # Cleared before reading: an event committed from here on sets it again.
                wake.clear()
                if await self.publish_some(connection):
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_interval):
                        await wake.wait()
                if wake.is_set() and self.batch_window > 0:
                    await asyncio.sleep(self.batch_window)
        finally:
            metrics.unwatch_outbox(self.lag)
            # terminate: a graceful close waits for a server that may not answer, and the
            # lock goes with the connection either way.
            connection.terminate()

    async def publish_some(self, connection: Connection) -> bool:
        """Publish the next batch of unpublished events; whether others wait behind it.

        One statement reads the batch and the outbox's lag: each query counts, as the
        publisher runs once for every few events.
        """
        rows = await connection.fetch(
            "SELECT id, subject, envelope, extract(epoch FROM now() - created_at) AS age"
            " FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1",
            _ROWS,
        )
        self.lag.value = max((float(row["age"]) for row in rows), default=0.0)
        batch: list[asyncpg.Record] = []
        for row in rows:
            if len(batch) == SQS_BATCH or any(r["subject"] == row["subject"] for r in batch):
                break  # a subject's next event waits for the one before it
            batch.append(row)
        if not batch:
            return False
        events = [{**row["envelope"], "sequence": row["id"]} for row in batch]
        try:
            await self._to_topic(events)
            await self._to_bus(events)
        except (BotoCoreError, ClientError, PublishFailed):
            await connection.execute(
                "UPDATE outbox SET attempts = attempts + 1 WHERE id = ANY($1::bigint[])",
                [row["id"] for row in batch],
            )
            raise
        await connection.execute(
            "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
            [row["id"] for row in batch],
        )
        self.published += len(batch)
        self.batches += 1
        for event in events:
            metrics.events_published.add(1, {"type": event["type"]})
        waiting = len(rows) > len(batch)  # fewer than _ROWS read: nothing beyond them
        if not waiting:
            self.lag.value = 0.0
        return waiting

    async def _to_topic(self, events: list[dict[str, Any]]) -> None:
        try:
            topic = await self.aws.topic_arn(self.settings.events_topic)
        except UnknownTopic as exc:
            raise PublishFailed(str(exc)) from exc
        response = await self.aws.sns_publisher.publish_batch(
            topic,
            [
                {
                    "Id": str(i),
                    "Message": json.dumps(event),
                    # Subscriptions filter on these (Slack: product.failed only, ...).
                    "MessageAttributes": {
                        "type": {"DataType": "String", "StringValue": event["type"]},
                        "subject": {"DataType": "String", "StringValue": event["subject"]},
                    },
                }
                for i, event in enumerate(events)
            ],
        )
        if failed := response.get("Failed"):
            raise PublishFailed(f"the topic refused {len(failed)} event(s): {failed[0]}")

    async def _to_bus(self, events: list[dict[str, Any]]) -> None:
        entries = [
            {
                "Source": SOURCE,
                "DetailType": event["type"],
                "Detail": json.dumps(event),
                "EventBusName": self.settings.event_bus,
            }
            for event in events
        ]
        response = await self.aws.bus.call("PutEvents", {"Entries": entries})
        if response.get("FailedEntryCount"):
            failed = [e for e in response.get("Entries", []) if e.get("ErrorCode")]
            raise PublishFailed(f"the bus refused {len(failed)} event(s): {failed[:1]}")


async def oldest_unpublished(connection: Connection) -> float:
    """Seconds the oldest unpublished event has waited (0: none waits)."""
    age = await connection.fetchval(
        "SELECT extract(epoch FROM now() - min(created_at)) FROM outbox WHERE published_at IS NULL"
    )
    return float(age or 0.0)


async def prune_outbox(db: asyncpg.Pool, retention: float) -> int:
    """Delete events published more than `retention` seconds ago; how many went."""
    deleted = await db.fetchval(
        "WITH gone AS (DELETE FROM outbox WHERE published_at < now() - make_interval(secs => $1)"
        " RETURNING 1) SELECT count(*) FROM gone",
        retention,
    )
    return int(deleted)
