"""The consumer runtime against a real SQS endpoint (moto server over HTTP)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
from ingest_common.aws import Aws
from ingest_common.dead_letters import dead_letter_reason, original_attributes
from ingest_common.errors import PermanentError, RetryableError
from ingest_common.runtime.consumer import Consumer, Delivery
from ingest_common.runtime.health import Health
from ingest_common.schemas.messages import Message
from pydantic import ConfigDict

from tests.integration.pipeline import sqs_only

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

QUEUE = "ingest-index"  # any queue of the real topology


class Ping(Message):
    model_config = ConfigDict(extra="forbid", frozen=True)
    n: int


def make_consumer(
    aws: Aws, handle: Callable[[Ping, Delivery], Awaitable[None]], **overrides: object
) -> Consumer[Ping]:
    settings = aws.settings.model_copy(update=overrides)
    return Consumer(
        settings,
        aws,
        QUEUE,
        Ping.model_validate_json,
        handle,
        Health(QUEUE, 60),
        sqs_only(aws, QUEUE),
    )


async def run_until(
    consumer: Consumer[Ping], done: Callable[[], bool], timeout: float = 30
) -> None:
    task = asyncio.create_task(consumer.run())
    try:
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.05)
    finally:
        consumer.stop()
        await task


async def queue_depth(aws: Aws, queue: str) -> tuple[int, int]:
    url = await aws.queue_url(queue)
    attrs = (
        await aws.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


async def dead_letters(aws: Aws, queue: str) -> list[MessageTypeDef]:
    url = await aws.queue_url(queue + "-dlq")
    response = await aws.sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=1
    )
    return list(response.get("Messages", []))


async def test_every_message_handled_once_and_deleted(aws: Aws) -> None:
    await aws.send(QUEUE, [Ping(n=i) for i in range(25)])
    seen: Counter[int] = Counter()

    async def handle(message: Ping, delivery: Delivery) -> None:
        seen[message.n] += 1

    consumer = make_consumer(aws, handle, concurrency=4)
    await run_until(consumer, lambda: len(seen) == 25)
    assert seen == Counter(range(25))
    assert await queue_depth(aws, QUEUE) == (0, 0)
    assert consumer.health.succeeded == 25


async def test_retryable_error_leaves_the_message_for_another_try(aws: Aws) -> None:
    await aws.send(QUEUE, [Ping(n=1)])
    tries: list[int] = []

    async def handle(message: Ping, delivery: Delivery) -> None:
        tries.append(delivery.receive_count)
        if len(tries) == 1:
            raise RetryableError("database busy", delay=0)

    await run_until(make_consumer(aws, handle), lambda: len(tries) == 2)
    assert tries == [1, 2]
    assert await queue_depth(aws, QUEUE) == (0, 0)


async def test_unexpected_error_is_retried_not_lost(aws: Aws) -> None:
    await aws.send(QUEUE, [Ping(n=1)])
    tries: list[int] = []

    async def handle(message: Ping, delivery: Delivery) -> None:
        tries.append(delivery.receive_count)
        if len(tries) == 1:
            raise KeyError("a bug")

    await run_until(make_consumer(aws, handle), lambda: len(tries) == 2)
    assert tries == [1, 2]


async def test_invalid_message_goes_to_the_dead_letter_queue_with_its_reason(aws: Aws) -> None:
    url = await aws.queue_url(QUEUE)
    await aws.sqs.send_message(QueueUrl=url, MessageBody='{"n": "not a number"}')
    handled: list[Ping] = []

    async def handle(message: Ping, delivery: Delivery) -> None:
        handled.append(message)

    consumer = make_consumer(aws, handle)
    await run_until(consumer, lambda: consumer.health.invalid == 1)
    assert handled == []
    [dead] = await dead_letters(aws, QUEUE)
    assert dead["Body"] == '{"n": "not a number"}'
    reason = dead["MessageAttributes"]["ingest-error"]["StringValue"]
    assert reason.startswith("invalid message")
    assert await queue_depth(aws, QUEUE) == (0, 0)


async def test_a_poison_message_with_ten_attributes_is_dead_lettered_with_its_reason(
    aws: Aws,
) -> None:
    # Ten attributes from the sender leave no room for ingest-error and ingest-source-queue:
    # the originals are packed into one attribute, and unpacked again by the redrive.
    url = await aws.queue_url(QUEUE)
    attributes: dict[str, Any] = {
        f"a{i}": {"DataType": "String", "StringValue": f"x{i}"} for i in range(9)
    }
    attributes["blob"] = {"DataType": "Binary", "BinaryValue": b"\x00\x01"}
    await aws.sqs.send_message(QueueUrl=url, MessageBody="{}", MessageAttributes=attributes)

    async def handle(message: Ping, delivery: Delivery) -> None:
        raise AssertionError("an invalid message is never handled")

    consumer = make_consumer(aws, handle)
    await run_until(consumer, lambda: consumer.health.invalid == 1)
    [dead] = await dead_letters(aws, QUEUE)
    assert dead_letter_reason(dead["MessageAttributes"]) is not None
    assert dead_letter_reason(dead["MessageAttributes"]).startswith("invalid message")  # type: ignore[union-attr]
    assert original_attributes(dead["MessageAttributes"]) == attributes
    assert await queue_depth(aws, QUEUE) == (0, 0)  # moved, not left to SQS's redrive


async def test_permanent_error_stops_retrying(aws: Aws) -> None:
    await aws.send(QUEUE, [Ping(n=7)])
    tries: list[int] = []

    async def handle(message: Ping, delivery: Delivery) -> None:
        tries.append(message.n)
        raise PermanentError("product 7 does not exist")

    consumer = make_consumer(aws, handle)
    await run_until(consumer, lambda: consumer.health.failed == 1)
    await asyncio.sleep(1.5)  # a retry would have come back by now
    assert tries == [7]
    [dead] = await dead_letters(aws, QUEUE)
    attributes = dead["MessageAttributes"]
    assert attributes["ingest-error"]["StringValue"] == "product 7 does not exist"


async def test_heartbeat_keeps_slow_work_from_being_delivered_twice(aws: Aws) -> None:
    await aws.send(QUEUE, [Ping(n=1)])
    starts: list[int] = []
    finished = asyncio.Event()

    async def handle(message: Ping, delivery: Delivery) -> None:
        starts.append(delivery.receive_count)
        await asyncio.sleep(14)  # longer than the visibility timeout of 10 s
        finished.set()

    consumer = make_consumer(aws, handle, visibility_timeout=10, heartbeat_interval=3)
    await run_until(consumer, finished.is_set, timeout=40)
    assert starts == [1]
    assert await queue_depth(aws, QUEUE) == (0, 0)


def slow_extensions(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Every heartbeat's extension spends 0.3 s on the wire (a slow network), so it lands
    after a visibility change sent meanwhile; the event is set when the first one leaves."""
    extending = asyncio.Event()
    change_visibility = aws.change_visibility

    async def slow_extension(queue: str, handles: Any, seconds: int) -> list[tuple[int, str]]:
        if seconds:  # a heartbeat, not a release
            extending.set()
            await asyncio.sleep(0.3)
        return await change_visibility(queue, handles, seconds)

    monkeypatch.setattr(aws, "change_visibility", slow_extension)
    return extending


async def test_a_heartbeat_under_way_does_not_hide_a_retry_for_the_visibility_timeout(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler fails while a heartbeat's extension of its message is still on the wire:
    the retry's short backoff must hold, not the extension that lands after it."""
    await aws.send(QUEUE, [Ping(n=1)])
    extending = slow_extensions(aws, monkeypatch)
    tries: list[int] = []

    async def handle(message: Ping, delivery: Delivery) -> None:
        tries.append(delivery.receive_count)
        if len(tries) == 1:
            await extending.wait()
            raise RetryableError("try again in a second", delay=1)

    consumer = make_consumer(aws, handle, visibility_timeout=30, heartbeat_interval=1)
    # Without the retry waiting for the extension, the message comes back after 30 s.
    await run_until(consumer, lambda: len(tries) == 2, timeout=10)
    assert tries == [1, 2]


async def test_a_retry_between_two_batches_of_one_heartbeat_is_not_extended_after(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eleven messages in flight: one heartbeat extends them in two batches, ten and one.
    The eleventh retries while the first batch is on the wire; the second must skip it."""
    await aws.send(QUEUE, [Ping(n=i) for i in range(11)])
    extending = slow_extensions(aws, monkeypatch)
    release = asyncio.Event()
    started: list[int] = []
    tries: Counter[int] = Counter()

    async def handle(message: Ping, delivery: Delivery) -> None:
        started.append(message.n)
        tries[message.n] += 1
        if len(started) == 11:  # the last in flight: in the heartbeat's second batch
            await extending.wait()
            raise RetryableError("try again in a second", delay=1)
        if tries[message.n] == 1 and len(started) < 11:
            await release.wait()

    consumer = make_consumer(
        aws, handle, visibility_timeout=30, heartbeat_interval=1, concurrency=20
    )

    def retried() -> bool:
        if len(started) > 11:  # the eleventh came back: let the others finish
            release.set()
        return len(started) == 12

    # Extended by the second batch after its retry, it would come back after 30 s.
    await run_until(consumer, retried, timeout=10)
    assert started[11] == started[10]


async def test_stop_finishes_in_flight_work_then_returns(aws: Aws) -> None:
    await aws.send(QUEUE, [Ping(n=i) for i in range(3)])
    started, finished = asyncio.Event(), []

    async def handle(message: Ping, delivery: Delivery) -> None:
        started.set()
        await asyncio.sleep(1.5)
        finished.append(message.n)

    consumer = make_consumer(aws, handle, concurrency=3)
    task = asyncio.create_task(consumer.run())
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.sleep(0.2)
    consumer.stop()
    await asyncio.wait_for(task, 10)
    assert sorted(finished) == [0, 1, 2]
    assert await queue_depth(aws, QUEUE) == (0, 0)


async def test_deletes_of_messages_finishing_apart_share_one_request(
    aws: Aws, new_spans: Callable[[], list[ReadableSpan]]
) -> None:
    from ingest_common.telemetry.tracing import tracer

    with tracer().start_as_current_span("test") as test:
        await aws.send(QUEUE, [Ping(n=i) for i in range(5)])
    done: list[int] = []

    async def handle(message: Ping, delivery: Delivery) -> None:
        # One finishes every 60 ms: each alone, had a delete waited only 50 ms for others;
        # all five within 0.24 s of the first, well inside DELETE_LINGER.
        await asyncio.sleep(0.06 * message.n)
        done.append(message.n)

    consumer = make_consumer(aws, handle, concurrency=5)
    await run_until(consumer, lambda: len(done) == 5)
    assert await queue_depth(aws, QUEUE) == (0, 0)
    # Only this test's: a consumer an earlier test cancelled may still settle its last batch.
    ours = test.get_span_context().trace_id
    settles = [
        s
        for s in new_spans()
        if s.name == f"settle {QUEUE}" and any(link.context.trace_id == ours for link in s.links)
    ]
    assert [(s.attributes or {}).get("messaging.batch.message_count") for s in settles] == [5]


async def test_drain_timeout_releases_unfinished_messages_at_once(aws: Aws) -> None:
    await aws.send(QUEUE, [Ping(n=1)])
    started = asyncio.Event()

    async def stuck(message: Ping, delivery: Delivery) -> None:
        started.set()
        await asyncio.sleep(3600)

    consumer = make_consumer(aws, stuck, drain_timeout=0.5, visibility_timeout=600)
    task = asyncio.create_task(consumer.run())
    await asyncio.wait_for(started.wait(), 10)
    consumer.stop()
    await asyncio.wait_for(task, 10)
    # Visible again right away, not after the 600 s visibility timeout.
    assert await queue_depth(aws, QUEUE) == (1, 0)


@pytest.mark.parametrize("count", [1, 10, 11])
async def test_sends_in_batches_with_trace_context(aws: Aws, count: int) -> None:
    from ingest_common.telemetry.tracing import tracer

    with tracer().start_as_current_span("test"):
        await aws.send(QUEUE, [Ping(n=i) for i in range(count)])
    url = await aws.queue_url(QUEUE)
    received: list[MessageTypeDef] = []
    while len(received) < count:
        response = await aws.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=1
        )
        received.extend(response.get("Messages", []))
    assert len({m["Body"] for m in received}) == count
    assert all("traceparent" in m["MessageAttributes"] for m in received)


async def test_bootstrap_applies_the_declared_topology(aws: Aws) -> None:
    import json

    from ingest_common.topology import load_topology

    topology = load_topology(aws.settings)
    for queue in topology.queues:
        url = await aws.queue_url(queue.name)
        attributes = (await aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]))[
            "Attributes"
        ]
        redrive = json.loads(attributes["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"].endswith(":" + queue.dead_letter_name)
        assert int(redrive["maxReceiveCount"]) == queue.max_receive_count
        assert int(attributes["VisibilityTimeout"]) == queue.visibility_timeout
    uploads = next(b for b in topology.buckets if b.role == "uploads")
    config = await aws.s3.get_bucket_notification_configuration(Bucket=uploads.name)
    [notification] = config["QueueConfigurations"]
    assert notification["QueueArn"].endswith(":" + topology.queue("batch").name)
    rules = {r["Name"].lower(): r["Value"] for r in notification["Filter"]["Key"]["FilterRules"]}
    assert rules == {"prefix": "uploads/"}  # the batcher decides by the name (keys.py)
