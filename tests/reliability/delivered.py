"""The domain events' end state: every event the outbox holds was published and reached a
subscriber of the topic, none was invented, and each subject's came in order.

`listen` subscribes the queue `EVENTS_SEEN` to the events topic before a case uploads;
`events_delivered` then waits for the publisher (the batcher) to drain the outbox and
compares what the subscriber received with the outbox, row by row.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import asyncpg
from botocore.exceptions import ClientError
from ingest_common.aws import Aws
from ingest_common.db.pool import connect

from tests.integration.pipeline import (
    assert_in_order_per_subject,
    received_events,
    subscribe_to_events,
)

EVENTS_SEEN = "events-seen"
OUTCOMES = {"product.ready", "product.partially_ready", "product.failed"}


@dataclass
class Delivered:
    written: int = 0  # rows in the outbox
    unpublished: int = 0
    missing: set[str] = field(default_factory=set)  # written, never received
    invented: set[str] = field(default_factory=set)  # received, never written
    repeats: int = 0  # deliveries beyond the first (at least once allows them)
    problems: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return len(self.missing)

    def assert_complete(self) -> None:
        assert self.written, "the case wrote events"
        assert not self.unpublished, f"{self.unpublished} event(s) never published"
        assert not self.missing, f"{len(self.missing)} event(s) never delivered"
        assert not self.invented, f"{len(self.invented)} event(s) that the outbox never held"
        assert not self.problems, "\n".join(self.problems)


async def listen(aws: Aws) -> None:
    """Subscribe the events-seen queue to the topic (once per case)."""
    await subscribe_to_events(aws, EVENTS_SEEN)


async def listening(aws: Aws) -> str | None:
    try:
        return await aws.queue_url(EVENTS_SEEN)
    except ClientError:
        return None


async def events_delivered(
    aws: Aws, dsn: str, url: str, products: set[str], timeout: float = 60
) -> Delivered:
    """Wait until the outbox is published, then compare it with what the subscriber got;
    every product in `products` must have told its outcome and its indexing."""
    rows = await _published_outbox(dsn, timeout)
    state = Delivered(written=len(rows), unpublished=sum(1 for r in rows if not r["published"]))
    received = await received_events(aws, url)
    written = {str(r["event_id"]) for r in rows}
    ids = Counter(e["id"] for e in received)
    state.missing = written - set(ids)
    state.invented = set(ids) - written
    state.repeats = sum(ids.values()) - len(ids)
    try:
        assert_in_order_per_subject(received)
    except AssertionError as exc:
        state.problems.append(str(exc))
    told = {(e["subject"], e["type"]) for e in received}
    for product in products:
        if not any((product, kind) in told for kind in OUTCOMES):
            state.problems.append(f"product {product}: no outcome event")
        if (product, "product.indexed") not in told:
            state.problems.append(f"product {product}: no product.indexed event")
    return state


async def _published_outbox(dsn: str, timeout: float) -> list[asyncpg.Record]:
    """The outbox once nothing in it is unpublished (or as it is at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        connection = await connect(dsn)
        try:
            rows = await connection.fetch(
                "SELECT event_id, published_at IS NOT NULL AS published FROM outbox ORDER BY id"
            )
        finally:
            await connection.close()
        if all(r["published"] for r in rows) or time.monotonic() > deadline:
            return list(rows)
        await asyncio.sleep(0.25)
