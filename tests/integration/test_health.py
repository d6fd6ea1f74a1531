"""/healthz and /readyz of a real consumer against moto, read over HTTP while it works.

Liveness fails only for a stuck process (a loop of the consumer's own has died); busy
handler slots and outages are not that. Readiness follows the dependencies, and an outage
costs a message none of its tries. Outages are made with a FaultProxy between a client
and moto or PostgreSQL, which keep their state meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest
from ingest_common.aws import Aws
from ingest_common.db.pool import create_pool
from ingest_common.runtime.consumer import (
    STOP_POLL_GRACE,
    Consumer,
    ConsumerCrashed,
    Delivery,
)
from ingest_common.runtime.dependencies import (
    Dependencies,
    PostgresProbe,
    Probe,
    s3_probe,
    sqs_probe,
)
from ingest_common.runtime.health import Health, bound_port, start_health_server
from ingest_common.schemas.messages import Message
from ingest_common.settings import IngestSettings

from tests.integration.pipeline import queue_counts, sqs_only
from tests.reliability.proxy import FaultProxy

pytestmark = pytest.mark.timeout(120)

QUEUE = "ingest-index"  # any queue of the real topology
# Outage timings of the consumers here: a check a second, probes every 0.2 s while down.
OUTAGE_TIMINGS = {
    "dependency_check_interval": 1,
    "outage_probe_interval": 0.2,
    "probe_timeout": 0.5,
    "outage_requeue_delay": 1,
}
NOTICED_WITHIN = 3.0  # seconds: a check interval, a probe timeout and room for a busy machine


class Ping(Message):
    n: int


Handle = Callable[[Ping, Delivery], Awaitable[None]]


def consumer_for(
    settings: IngestSettings,
    aws: Aws,
    handle: Handle,
    health: Health,
    dependencies: Dependencies | None = None,
) -> Consumer[Ping]:
    return Consumer(
        settings,
        aws,
        QUEUE,
        Ping.model_validate_json,
        handle,
        health,
        dependencies or sqs_only(aws, QUEUE),
    )


@asynccontextmanager
async def health_endpoint(health: Health) -> AsyncIterator[Probes]:
    """The real health server on a free port, and a client that reads it."""
    runner = await start_health_server(health, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            yield Probes(session, f"http://127.0.0.1:{bound_port(runner)}")
    finally:
        await runner.cleanup()


class Probes:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def get(self, path: str) -> tuple[int, dict[str, Any]]:
        async with self.session.get(self.base + path) as response:
            body: dict[str, Any] = await response.json()
            return response.status, body

    async def wait_for(
        self, path: str, status: int, timeout: float, *, also: Callable[[dict[str, Any]], bool]
    ) -> tuple[float, dict[str, Any]]:
        """Seconds until `path` answers `status` with a body that `also` accepts."""
        started = time.monotonic()
        seen: tuple[int, dict[str, Any]] | None = None
        while time.monotonic() - started < timeout:
            seen = await self.get(path)
            if seen[0] == status and also(seen[1]):
                return time.monotonic() - started, seen[1]
            await asyncio.sleep(0.1)
        raise AssertionError(f"{path} did not answer {status} within {timeout} s; last: {seen}")


def anything(_: dict[str, Any]) -> bool:
    return True


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {what}") from None


async def dead_letter_count(aws: Aws) -> int:
    visible, in_flight, delayed = await queue_counts(aws, QUEUE + "-dlq")
    return visible + in_flight + delayed


def proxy_to(url: str) -> FaultProxy:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return FaultProxy(parts.hostname, parts.port)


@pytest.fixture
def moto_link(moto_endpoint: str) -> Iterator[FaultProxy]:
    with proxy_to(moto_endpoint) as proxy:
        yield proxy


@pytest.fixture
def postgres_link(database_url: str) -> Iterator[FaultProxy]:
    with proxy_to(database_url) as proxy:
        yield proxy


# --- liveness ------------------------------------------------------------------------------


async def test_every_slot_busy_longer_than_the_liveness_ttl_is_still_alive(aws: Aws) -> None:
    release = asyncio.Event()
    started: list[int] = []

    async def handle(message: Ping, delivery: Delivery) -> None:
        started.append(message.n)
        await release.wait()

    health = Health(QUEUE, liveness_ttl=2)
    consumer = consumer_for(aws.settings.model_copy(update={"concurrency": 2}), aws, handle, health)
    await aws.send(QUEUE, [Ping(n=0), Ping(n=1)])
    async with health_endpoint(health) as probes:
        task = asyncio.create_task(consumer.run())
        try:
            await until(lambda: len(started) == 2, 15, "both slots taken")
            # Both slots held for 2.5 liveness TTLs: the poller waits for room, nothing
            # receives, and still the process is not stuck.
            answers: list[tuple[int, int]] = []
            held_until = time.monotonic() + 5
            while time.monotonic() < held_until:
                status, body = await probes.get("/healthz")
                answers.append((status, body["in_flight"]))
                await asyncio.sleep(0.25)
            release.set()
            await until(lambda: health.succeeded == 2, 10, "both handlers finished")
        finally:
            release.set()
            consumer.stop()
            await task
    assert len(answers) >= 10, f"too few /healthz answers in 5 s: {answers}"
    assert set(answers) == {(200, 2)}, answers
    assert sorted(started) == [0, 1]
    assert await queue_counts(aws, QUEUE) == (0, 0, 0)


async def test_a_dead_poller_fails_liveness_and_run_raises_after_draining(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    release, started = asyncio.Event(), asyncio.Event()
    handled: list[int] = []

    async def handle(message: Ping, delivery: Delivery) -> None:
        started.set()
        await release.wait()
        handled.append(message.n)

    health = Health(QUEUE, liveness_ttl=60)
    consumer = consumer_for(aws.settings, aws, handle, health)
    # A bug in the poller (not in a handler): once `crash` is set its next receive raises.
    crash = asyncio.Event()
    receive = consumer._receive

    async def receive_or_crash(count: int) -> list[dict[str, Any]]:
        if crash.is_set():
            raise RuntimeError("a bug in the poller")
        return await receive(count)

    monkeypatch.setattr(consumer, "_receive", receive_or_crash)
    await aws.send(QUEUE, [Ping(n=7)])
    async with health_endpoint(health) as probes:
        task = asyncio.create_task(consumer.run())
        try:
            await asyncio.wait_for(started.wait(), 15)
            status, before = await probes.get("/healthz")
            assert (status, before["dead_loops"]) == (200, [])
            crash.set()
            # The poller's long poll (1 s) ends, its next receive raises.
            _, body = await probes.wait_for(
                "/healthz", 503, NOTICED_WITHIN, also=lambda b: b["dead_loops"] == ["poller"]
            )
            assert body["alive"] is False
            assert body["draining"] is True
            assert (await probes.get("/readyz"))[0] == 503
            # The message in work is drained before the consumer gives up.
            assert not task.done(), "run() returned with a handler still in flight"
            release.set()
            with pytest.raises(ConsumerCrashed, match="poller"):
                await asyncio.wait_for(task, 15)
        finally:
            release.set()
            consumer.stop()
            await asyncio.gather(task, return_exceptions=True)
    assert handled == [7]
    assert health.succeeded == 1
    assert await queue_counts(aws, QUEUE) == (0, 0, 0), "its delete was flushed before run() ended"


async def test_a_drain_is_not_a_death(aws: Aws) -> None:
    release, started = asyncio.Event(), asyncio.Event()

    async def handle(message: Ping, delivery: Delivery) -> None:
        started.set()
        await release.wait()

    health = Health(QUEUE, liveness_ttl=60)
    consumer = consumer_for(aws.settings, aws, handle, health)
    await aws.send(QUEUE, [Ping(n=1)])
    async with health_endpoint(health) as probes:
        task = asyncio.create_task(consumer.run())
        try:
            await asyncio.wait_for(started.wait(), 15)
            consumer.stop()  # what SIGTERM does: the handler in flight may finish
            await asyncio.sleep(STOP_POLL_GRACE + 0.5)
            assert not task.done()
            status, body = await probes.get("/healthz")
            assert body["draining"] is True
            assert (await probes.get("/readyz"))[0] == 503, "draining: no new work"
            assert status == 200, f"a drain read as a stuck process: {body}"
        finally:
            release.set()
            await task


# --- readiness and outages -------------------------------------------------------------------


async def test_readiness_follows_a_dependency_and_the_outage_costs_no_try(
    aws: Aws, moto_link: FaultProxy
) -> None:
    settings = aws.settings.model_copy(
        update={"aws_endpoint_url": moto_link.endpoint, **OUTAGE_TIMINGS}
    )
    receive_counts: list[int] = []

    async def handle(message: Ping, delivery: Delivery) -> None:
        receive_counts.append(delivery.receive_count)

    health = Health(QUEUE, liveness_ttl=60)
    async with Aws(settings) as linked, health_endpoint(health) as probes:
        consumer = consumer_for(settings, linked, handle, health)
        task = asyncio.create_task(consumer.run())
        try:
            await probes.wait_for("/readyz", 200, 15, also=anything)

            await asyncio.to_thread(moto_link.refuse)
            await probes.wait_for("/readyz", 503, NOTICED_WITHIN, also=anything)
            # The poller pauses once its receive under way has failed.
            _, body = await probes.wait_for(
                "/readyz",
                503,
                NOTICED_WITHIN + 2,
                also=lambda b: b["paused"] is True and b["dependencies"]["sqs"]["up"] is False,
            )
            assert body["dependencies"]["sqs"]["error"]
            # SQS (moto too) keeps a long poll whose client was cut open until its wait is over
            # and hands it what arrives meanwhile: send once the last one before the outage has
            # surely ended (CI saw such an orphaned poll take the message).
            await asyncio.sleep(settings.receive_wait_seconds + 1)
            # Producers keep sending while this consumer cannot reach SQS.
            await aws.send(QUEUE, [Ping(n=1)])
            await asyncio.sleep(2)
            status, body = await probes.get("/healthz")
            assert status == 200, f"an outage is not a stuck process: {body}"
            assert receive_counts == []
            assert await queue_counts(aws, QUEUE) == (1, 0, 0), "nobody received it"

            await asyncio.to_thread(moto_link.up)
            _, body = await probes.wait_for(
                "/readyz", 200, NOTICED_WITHIN, also=lambda b: b["paused"] is False
            )
            assert body["dependencies"]["sqs"]["up"] is True
            await until(lambda: health.succeeded == 1, 15, "the message handled after the outage")
        finally:
            consumer.stop()
            await task
    assert receive_counts == [1], "the outage raised its ApproximateReceiveCount"
    assert health.retried == health.failed == 0
    assert await queue_counts(aws, QUEUE) == (0, 0, 0)
    assert await dead_letter_count(aws) == 0


@pytest.mark.parametrize("target", ["postgres", "s3"])
async def test_an_outage_confirmed_during_a_handler_hands_the_message_back_at_no_cost(
    aws: Aws,
    database_url: str,
    postgres_link: FaultProxy,
    moto_link: FaultProxy,
    target: Literal["postgres", "s3"],
) -> None:
    # The handler reaches `target` through a proxy; the consumer reaches SQS directly, so
    # the copy handed back can be sent while `target` is away.
    link = postgres_link if target == "postgres" else moto_link
    settings = aws.settings.model_copy(
        update={
            **OUTAGE_TIMINGS,
            "dependency_check_interval": 3,
            "database_url": postgres_link.dsn(database_url),
            "aws_endpoint_url": moto_link.endpoint,
            "db_connect_timeout": 2,
            "db_command_timeout": 2,
        }
    )
    calls: list[tuple[str, int]] = []  # (message id, receive count) of each try
    done: list[float] = []
    link_up_at: list[float] = []

    async with Aws(settings) as linked:
        pool = await create_pool(settings)
        try:

            async def use_target() -> None:
                if target == "postgres":
                    await pool.fetchval("SELECT 1")
                else:
                    await linked.s3.head_bucket(Bucket=settings.uploads_bucket)

            async def handle(message: Ping, delivery: Delivery) -> None:
                calls.append((delivery.message_id, delivery.receive_count))
                if len(calls) == 1:
                    await asyncio.to_thread(link.refuse)
                await use_target()  # fails while the link is refused
                done.append(time.monotonic())

            probes: dict[str, Probe] = {"sqs": sqs_probe(aws, QUEUE)}
            if target == "postgres":
                probes["postgres"] = PostgresProbe(settings)
            else:
                probes["s3"] = s3_probe(linked, settings.uploads_bucket)
            health = Health(QUEUE, liveness_ttl=60)
            consumer = consumer_for(settings, aws, handle, health, Dependencies(settings, probes))
            task = asyncio.create_task(consumer.run())
            try:
                await asyncio.sleep(1.5)  # the start-up check has passed
                await aws.send(QUEUE, [Ping(n=1)])
                await until(lambda: health.handed_back == 1, 30, "the message handed back")
                assert consumer.dependencies.down() == [target]
                await until(lambda: health.paused, NOTICED_WITHIN, "the poller paused")
                await asyncio.sleep(2)  # the copy (delayed 1 s) waits out the outage
                assert len(calls) == 1, f"handled during the outage: {calls}"
                await asyncio.to_thread(link.up)
                link_up_at.append(time.monotonic())
                await until(lambda: health.succeeded == 1, 20, "the copy handled after the outage")
            finally:
                consumer.stop()
                await task
        finally:
            await pool.close()

    [(first_id, first_count), *later] = calls
    assert first_count == 1
    assert later, "the message never came back"
    assert all(count == 1 for _, count in later), f"the outage cost tries: {calls}"
    assert all(message_id != first_id for message_id, _ in later), "not a fresh copy"
    assert done[0] > link_up_at[0]
    assert health.succeeded == 1
    assert health.retried == health.failed == 0
    assert await queue_counts(aws, QUEUE) == (0, 0, 0)
    assert await dead_letter_count(aws) == 0


async def test_a_failure_just_after_a_passing_check_is_confirmed_as_an_outage(
    aws: Aws, database_url: str, postgres_link: FaultProxy
) -> None:
    settings = aws.settings.model_copy(
        update={**OUTAGE_TIMINGS, "database_url": postgres_link.dsn(database_url)}
    )
    probe = PostgresProbe(settings)
    dependencies = Dependencies(settings, {"postgres": probe})
    try:
        assert await dependencies.check()
        await asyncio.to_thread(postgres_link.refuse)
        # What a handler sees now: PostgreSQL refuses connections.
        with pytest.raises(ConnectionRefusedError):
            await asyncpg.connect(settings.database_url, timeout=2)
        assert await dependencies.confirm_outage(), "PostgreSQL refuses, yet no outage"
    finally:
        probe.close()


async def test_an_outage_found_by_a_handler_is_probed_at_the_outage_pace(
    aws: Aws, database_url: str, postgres_link: FaultProxy
) -> None:
    settings = aws.settings.model_copy(
        update={
            **OUTAGE_TIMINGS,
            "dependency_check_interval": 8,
            "database_url": postgres_link.dsn(database_url),
        }
    )
    probe = PostgresProbe(settings)
    dependencies = Dependencies(settings, {"postgres": probe})
    checks = asyncio.create_task(dependencies.run())
    try:
        assert await dependencies.check(), "PostgreSQL answers through the link"
        await asyncio.sleep(0.5)
        await asyncio.to_thread(postgres_link.refuse)
        assert await dependencies.confirm_outage()
        await asyncio.to_thread(postgres_link.up)
        # A probe every 0.2 s during an outage: noticed well within NOTICED_WITHIN.
        await until(lambda: dependencies.up, NOTICED_WITHIN, "the recovery noticed")
    finally:
        checks.cancel()
        await asyncio.gather(checks, return_exceptions=True)
        probe.close()
