"""Metrics: a service's health server answers /metrics in Prometheus text format."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
from ingest_common.aws import Aws
from ingest_common.runtime.consumer import Consumer, Delivery
from ingest_common.runtime.health import Health, bound_port, start_health_server
from ingest_common.schemas.messages import IndexProduct
from ingest_common.telemetry import metrics
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.pipeline import Pipeline, mdi_set, sqs_only, upload_folder

QUEUE = "ingest-index"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = frozenset(
                (k, v) for k, v in sample.labels.items() if not k.startswith("otel_scope")
            )
            found[(sample.name, labels)] = sample.value
    return found


async def scrape(port: int) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        return await response.text()


async def test_metrics_endpoint_counts_a_handled_message(aws: Aws) -> None:
    metrics.configure_metrics("tests")  # once per process; later calls keep the first
    health = Health(QUEUE, 60)
    runner = await start_health_server(health, "127.0.0.1", 0)
    port = bound_port(runner)
    ok = frozenset({("queue", QUEUE), ("outcome", "ok")})
    handled = asyncio.Event()

    async def handle(message: IndexProduct, delivery: Delivery) -> None:
        handled.set()

    consumer = Consumer(
        aws.settings,
        aws,
        QUEUE,
        IndexProduct.model_validate_json,
        handle,
        health,
        sqs_only(aws, QUEUE),
    )
    try:
        before = samples(await scrape(port)).get(("ingest_messages_total", ok), 0.0)
        task = asyncio.create_task(consumer.run())
        try:
            await aws.send(QUEUE, [IndexProduct(upload_id=uuid.uuid4(), product_id=uuid.uuid4())])
            async with asyncio.timeout(30):
                await handled.wait()
                while consumer.health.succeeded < 1:
                    await asyncio.sleep(0.05)
            after = samples(await scrape(port))
        finally:
            consumer.stop()
            await task
    finally:
        await runner.cleanup()

    assert after[("ingest_messages_total", ok)] == before + 1
    assert after[("ingest_message_duration_seconds_count", ok)] >= 1
    # The consumer feeds the backlog gauge while it runs: the message was seconds old at most.
    age = after[("ingest_queue_oldest_message_age_seconds", frozenset({("queue", QUEUE)}))]
    assert 0 <= age < 30
    assert any(name == "target_info" for name, _ in after)


def test_oldest_age_covers_in_flight_and_recent_messages() -> None:
    ages = metrics.OldestAge(window=60)
    assert ages.value([]) == 0.0
    ages.received(sent_at=1000.0, now=1010.0)  # 10 s old when received
    assert ages.value([]) == 10.0
    in_flight_since = time.time() - 42
    assert 41.9 <= ages.value([in_flight_since]) <= 43
    ages.received(sent_at=0)  # no SentTimestamp: ignored
    expired = metrics.OldestAge(window=0)
    expired.received(sent_at=1000.0, now=1010.0)
    assert expired.value([]) == 0.0


def test_oldest_age_stays_bounded_when_nothing_reads_it() -> None:
    # Without a scrape or an OTLP export, value() never runs: receipts must still expire.
    ages = metrics.OldestAge(window=0.05)
    for _ in range(1000):
        ages.received(time.time() - 5)
    time.sleep(0.06)
    ages.received(time.time() - 1)
    assert len(ages._received) == 1
    assert 0.9 < ages.value([]) < 1.5


async def test_render_lanes_report_the_seconds_their_workers_were_busy_and_their_count() -> None:
    metrics.configure_metrics("tests")
    runner = await start_health_server(Health("ingest-render", 60), "127.0.0.1", 0)
    port = bound_port(runner)
    render = frozenset({("lane", "render")})
    slow = frozenset({("lane", "slow")})
    busy = [2.5]
    try:
        metrics.watch_render_pool("render", lambda: busy[0], 4)
        metrics.watch_render_pool("slow", lambda: 0.0, 1)
        first = samples(await scrape(port))
        busy[0] = 4.0  # read on every scrape, not once
        second = samples(await scrape(port))
        metrics.unwatch_render_pool("slow")
        third = samples(await scrape(port))
    finally:
        metrics.unwatch_render_pool("render")
        metrics.unwatch_render_pool("slow")
        await runner.cleanup()

    assert first[("ingest_render_busy_seconds_total", render)] == 2.5
    assert first[("ingest_render_workers", render)] == 4
    assert first[("ingest_render_workers", slow)] == 1
    assert second[("ingest_render_busy_seconds_total", render)] == 4.0
    assert ("ingest_render_workers", slow) not in third


async def test_the_processor_records_one_render_time_per_svg_by_lane(
    aws: Aws, db: asyncpg.Pool, tmp_path: Path
) -> None:
    metrics.configure_metrics("tests")
    count = ("ingest_render_duration_seconds_count", frozenset({("lane", "render")}))
    total = ("ingest_render_duration_seconds_sum", frozenset({("lane", "render")}))

    def read() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        text = metrics.prometheus_text()
        assert text is not None
        return samples(text.decode())

    before = read()
    await upload_folder(aws, mdi_set(tmp_path / "set", 3))
    pipeline = Pipeline(aws, db)
    await pipeline.drain("batch")
    await pipeline.drain("render")
    after = read()

    # Three SVGs of 4 widths x 2 formats: three records, not 24.
    assert after[count] - before.get(count, 0.0) == 3
    assert 0 < after[total] - before.get(total, 0.0) < 3 * 30
    render_labels = {
        key
        for name, labels in after
        if name.startswith("ingest_render_duration")
        for key, _ in labels
    }
    assert render_labels == {"lane", "le"}
