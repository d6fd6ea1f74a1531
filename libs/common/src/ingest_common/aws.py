"""S3, SQS, SNS and EventBridge clients (aiobotocore) and the two sends every service does.

One `Aws` per process, opened with `async with`. It knows the queue URLs and topic ARNs by
name, sends messages in batches of 10 with the current trace context, and caps concurrent
S3 calls. The calls made per image skip botocore (`s3_objects`: an object's PUT and GET;
`s3_threads`: several objects' PUTs or GETs at once, from blocking threads, for `put_many`
and `get_many`; `sqs_messages`: a message's send, receive, delete and visibility; `bus`:
PutEvents; `sns_publisher`: PublishBatch); set-up, lookups and probes use the aiobotocore
clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError
from botocore.handlers import add_expect_header
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from ingest_common.aws_http import CallSettings
from ingest_common.aws_json import EVENTBRIDGE, SQS, JsonApi
from ingest_common.aws_query import SnsPublisher
from ingest_common.errors import RetryableError
from ingest_common.s3_put import ObjectPutter
from ingest_common.s3_put import ObjectTooLarge as ObjectTooLarge  # get_bytes raises it
from ingest_common.s3_put_blocking import (
    BlockingPutter,
    GetOutcome,
    ObjectPut,
    PutOutcome,
    PutSettings,
)
from ingest_common.s3_request import object_headers
from ingest_common.schemas.messages import Message
from ingest_common.settings import IngestSettings
from ingest_common.sigv4 import Credentials
from ingest_common.telemetry.aws_spans import draw_object_span, instrument_aws
from ingest_common.telemetry.tracing import (
    SQS_MAX_ATTRIBUTES,
    call_spans_under,
    current_carrier,
    messaging_attributes,
    sqs_attributes,
    tracer,
)

if TYPE_CHECKING:
    from types_aiobotocore_events import EventBridgeClient
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient

SQS_BATCH = 10  # SQS's limit for ReceiveMessage and every *Batch call
# The bodies of one SendMessageBatch, at most: SQS allows 256 KiB for a whole batch (a queue's
# default MaximumMessageSize), attributes included, and each message carries about 200 bytes
# of them (the trace context).
SQS_BATCH_BODY_BYTES = 240 * 1024
# SendMessageBatch calls in flight per `send_bodies`. 16, not 4: a set's batches share the
# endpoint with every consumer's requests, and at 4 a 500-image set's 50 batches queued
# behind the processor's (bench/e2e.py on the emulator: dispatch 11-17 s at 4, 7-9 s at 16).
SENDS_AT_ONCE = 16
# Per call: seconds to connect, and attempts in all. A settings class may override them
# with fields `aws_connect_timeout` and `aws_max_attempts` (the CLI fails fast).
CONNECT_TIMEOUT = 5
MAX_ATTEMPTS = 3
S3_READ_TIMEOUT = 15  # seconds without a byte from S3 before a call is retried
# Threads that send `put_many`'s and `get_many`'s requests; s3_concurrency's requests are in
# flight between them (at least one each).
OBJECT_THREADS = 2
_Object = TypeVar("_Object")
_Outcome = TypeVar("_Outcome", PutOutcome, GetOutcome)


class Aws:
    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self._stack = AsyncExitStack()
        self._queue_urls: dict[str, str] = {}
        self._topic_arns: dict[str, str] = {}
        self._s3_slots = asyncio.Semaphore(settings.s3_concurrency)
        self.s3: S3Client
        self.s3_objects: ObjectPutter  # Put/GetObject of bytes, without botocore (s3_put.py)
        # `put_many`'s and `get_many`'s calls, from threads of their own (s3_put_blocking.py).
        self.s3_threads: BlockingPutter
        self._object_threads: ThreadPoolExecutor
        self.sqs: SQSClient
        self.sqs_messages: JsonApi  # SQS's message calls, without botocore (aws_json.py)
        self.sns: SNSClient
        self.sns_publisher: SnsPublisher  # SNS's PublishBatch, without botocore (aws_query.py)
        self.events: EventBridgeClient
        self.bus: JsonApi  # EventBridge's PutEvents, without botocore (aws_json.py)

    async def __aenter__(self) -> Self:
        session = get_session()
        common: dict[str, Any] = {
            "region_name": self.settings.aws_region,
            "endpoint_url": self.settings.aws_endpoint_url,
        }
        connections = max(self.settings.s3_concurrency, self.settings.concurrency) + 4
        attempts = getattr(self.settings, "aws_max_attempts", MAX_ATTEMPTS)
        connect_timeout = getattr(self.settings, "aws_connect_timeout", CONNECT_TIMEOUT)
        config: dict[str, Any] = {
            "max_pool_connections": connections,
            # SQS redelivery is the retry that matters; during an outage each extra attempt
            # only holds a handler slot longer (a black-holed call waits a read timeout).
            "retries": {"max_attempts": attempts, "mode": "standard"},
            "connect_timeout": connect_timeout,
        }
        # The read timeout is per socket read, not per call: S3 answers within seconds
        # even mid-download, while an SQS long poll legitimately waits its full 20 s.
        s3_config = AioConfig(**config, read_timeout=S3_READ_TIMEOUT)
        sqs_read_timeout = self.settings.receive_wait_seconds + 10
        sqs_config = AioConfig(**config, read_timeout=sqs_read_timeout)
        self.s3 = await self._stack.enter_async_context(
            session.create_client("s3", config=s3_config, **common)
        )
        self.sqs = await self._stack.enter_async_context(
            session.create_client("sqs", config=sqs_config, **common)
        )
        # The domain events' publishers: short calls like SQS's sends, so SQS's config.
        self.sns = await self._stack.enter_async_context(
            session.create_client("sns", config=sqs_config, **common)
        )
        self.events = await self._stack.enter_async_context(
            session.create_client("events", config=sqs_config, **common)
        )
        # botocore sends PUTs with "Expect: 100-continue", and aiohttp starts its read timer
        # only after the body: with no answer (a partition) a put would wait forever.
        self.s3.meta.events.unregister("before-call.s3", add_expect_header)
        # The calls each image, message and event makes skip botocore: the PUTs and GETs of
        # objects in memory (renditions, originals, mosaics), SQS's message calls, the
        # outbox's PublishBatch and PutEvents.
        s3_calls = CallSettings(connect_timeout, S3_READ_TIMEOUT, attempts, connections)
        sqs_calls = CallSettings(connect_timeout, sqs_read_timeout, attempts, connections)
        self.s3_objects = await self._stack.enter_async_context(
            ObjectPutter(session, self.s3, s3_calls)
        )
        self.sqs_messages = await self._stack.enter_async_context(
            JsonApi(session, self.sqs, SQS, sqs_calls)
        )
        self.bus = await self._stack.enter_async_context(
            JsonApi(session, self.events, EVENTBRIDGE, sqs_calls)
        )
        self.sns_publisher = await self._stack.enter_async_context(
            SnsPublisher(session, self.sns, sqs_calls)
        )
        self._put_settings = PutSettings(
            self.s3_objects.endpoint, connect_timeout, S3_READ_TIMEOUT, attempts
        )
        self.s3_threads = BlockingPutter(self._put_settings)
        self._object_threads = ThreadPoolExecutor(OBJECT_THREADS, thread_name_prefix="s3")
        self._stack.push_async_callback(self._close_object_threads)
        instrument_aws()  # CLIENT spans for every client's calls (once per process)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def _close_object_threads(self) -> None:
        # Waits for calls under way (each bounded by its timeouts), off the event loop.
        await asyncio.to_thread(self._object_threads.shutdown)
        self.s3_threads.close_all()

    async def queue_url(self, name: str) -> str:
        if name not in self._queue_urls:
            response = await self.sqs.get_queue_url(QueueName=name)
            self._queue_urls[name] = response["QueueUrl"]
        return self._queue_urls[name]

    async def topic_arn(self, name: str) -> str:
        """The ARN of the SNS topic `name`; raises UnknownTopic if there is none.

        SNS has no lookup by name (Publish wants the ARN), so the topics are listed once
        (sns:ListTopics) and the answer kept, like the queue URLs.
        """
        if name not in self._topic_arns:
            paginator = self.sns.get_paginator("list_topics")
            async for page in paginator.paginate():
                for topic in page.get("Topics", []):
                    arn = topic.get("TopicArn", "")
                    self._topic_arns.setdefault(arn.rpartition(":")[2], arn)
            if name not in self._topic_arns:
                raise UnknownTopic(name)
        return self._topic_arns[name]

    async def send(
        self, queue: str, messages: Sequence[Message], *, delay_seconds: int = 0
    ) -> None:
        """Send messages in batches, each carrying the current trace context.

        `send_bodies` with each message serialised: batching, spans and errors are there.
        """
        await self.send_bodies(
            queue, [message.model_dump_json() for message in messages], delay_seconds=delay_seconds
        )

    async def send_bodies(
        self, queue: str, bodies: Sequence[str], *, delay_seconds: int = 0
    ) -> None:
        """Send message bodies, already serialised, in batches (`sqs_batches`, a few at once)
        with the trace context.

        For bodies that are not our messages, such as an S3 event re-announced by the
        reconciliation. Each batch is one PRODUCER span `send <queue>`, whose context every
        message of the batch carries (its creation context, in `traceparent`/`tracestate`).

        Raises RetryableError if any entry of a batch is refused, so the caller's own
        message is redelivered and the (idempotent) sends are repeated.
        """
        url = await self.queue_url(queue)
        slots = asyncio.Semaphore(SENDS_AT_ONCE)

        async def send_batch(chunk: list[str]) -> None:
            async with slots:
                await self._send_batch(queue, url, chunk, delay_seconds)

        # Concurrently: a set's 50 batches one after another cost 50 round trips (a second
        # in a region). Order between batches never mattered: each message stands alone.
        failure: Exception | None = None
        try:
            async with asyncio.TaskGroup() as group:
                for chunk in sqs_batches(bodies):
                    group.create_task(send_batch(chunk))
        except ExceptionGroup as failed:
            failure = failed.exceptions[0]
        if failure is not None:
            raise failure  # what one call after another would have raised, with its cause

    async def _send_batch(self, queue: str, url: str, chunk: list[str], delay_seconds: int) -> None:
        with tracer().start_as_current_span(
            f"send {queue}",
            kind=SpanKind.PRODUCER,
            attributes=messaging_attributes(
                queue,
                "send",
                "SendMessageBatch",
                **{"messaging.batch.message_count": len(chunk)},
                **({"ingest.delay_seconds": delay_seconds} if delay_seconds else {}),
            ),
        ):
            attributes = sqs_attributes(current_carrier())
            entries: list[Any] = [
                {
                    "Id": str(i),
                    "MessageBody": body,
                    "MessageAttributes": attributes,
                    "DelaySeconds": delay_seconds,
                }
                for i, body in enumerate(chunk)
            ]
            try:
                response = await self.sqs_messages.call(
                    "SendMessageBatch", {"QueueUrl": url, "Entries": entries}
                )
            except (BotoCoreError, ClientError) as exc:
                raise RetryableError(f"could not send to {queue}: {exc}") from exc
            if failed := response.get("Failed"):
                raise RetryableError(f"{len(failed)} messages refused by {queue}: {failed[0]}")

    async def send_raw(
        self, queue: str, body: str, attributes: dict[str, Any], *, delay_seconds: int = 0
    ) -> None:
        """Send one message as is: a dead letter, or a message handed back during an outage,
        keeps its original attributes (and so its trace context)."""
        if len(attributes) > SQS_MAX_ATTRIBUTES:
            raise ValueError(f"{len(attributes)} message attributes, SQS allows 10")
        url = await self.queue_url(queue)
        with tracer().start_as_current_span(
            f"send {queue}",
            kind=SpanKind.PRODUCER,
            attributes=messaging_attributes(queue, "send", "SendMessage"),
        ):
            await self.sqs_messages.call(
                "SendMessage",
                {
                    "QueueUrl": url,
                    "MessageBody": body,
                    "MessageAttributes": attributes,
                    "DelaySeconds": delay_seconds,
                },
            )

    async def change_visibility(
        self, queue: str, receipt_handles: Sequence[str], seconds: int
    ) -> list[tuple[int, str]]:
        """Set the visibility timeout of received messages, in batches of 10.

        Returns the entries SQS refused, as (position in `receipt_handles`, SQS's error).
        A call that fails raises BotoCoreError or ClientError; later batches are not sent.
        """
        url = await self.queue_url(queue)
        refused: list[tuple[int, str]] = []
        for start in range(0, len(receipt_handles), SQS_BATCH):
            entries: list[Any] = [
                {"Id": str(start + i), "ReceiptHandle": handle, "VisibilityTimeout": seconds}
                for i, handle in enumerate(receipt_handles[start : start + SQS_BATCH])
            ]
            response = await self.sqs_messages.call(
                "ChangeMessageVisibilityBatch", {"QueueUrl": url, "Entries": entries}
            )
            refused.extend(
                (int(entry["Id"]), f"{entry['Code']}: {entry.get('Message', '')}")
                for entry in response.get("Failed", [])
            )
        return refused

    # --- S3 ---------------------------------------------------------------------------

    def put_settings(self) -> PutSettings:
        """How another process's blocking client (a render worker's) reaches S3 as this one
        does: the same endpoint, timeouts and attempts."""
        return self._put_settings

    async def get_bytes(self, bucket: str, key: str, *, max_bytes: int | None = None) -> bytes:
        """An object's bytes: s3:GetObject, through `s3_put`; ObjectTooLarge over
        ``max_bytes``, before its body is read."""
        async with self._s3_slots:
            return await self.s3_objects.get_object(bucket, key, max_bytes=max_bytes)

    async def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str,
        cache_control: str | None = None,
        metadata: dict[str, str] | None = None,
        span_attributes: Mapping[str, AttributeValue] | None = None,
    ) -> str:
        """Put an object and return its ETag (unquoted): s3:PutObject, through `s3_put`;
        ``span_attributes`` go on its span."""
        headers = object_headers(content_type, cache_control, metadata)
        async with self._s3_slots:
            return await self.s3_objects.put_object(
                bucket, key, data, headers, span_attributes=span_attributes
            )

    async def put_many(self, objects: Sequence[ObjectPut]) -> None:
        """Put every object (s3:PutObject each, with retries, as `put_bytes`) and raise the
        first one's error, botocore's exception, once all have ended.

        Sent from `OBJECT_THREADS` threads, each its share of s3_concurrency objects at once
        (`BlockingPutter.put_objects`): 0.09 against `put_bytes`' 0.24 ms of this process's
        CPU per object, for a set's 25 originals (README, "The whole pipeline"). Each PUT's
        span is drawn from its timings under the current span, where the trace keeps its
        calls' spans.
        """
        await self._from_threads(self.s3_threads.put_objects, objects)

    async def get_many(self, bucket: str, keys: Sequence[str]) -> list[bytes]:
        """The objects at ``keys``, as `put_many` puts objects (s3:GetObject each): for
        objects known to be small, such as a mosaic's tiles (no size limit is checked)."""
        gets = [(bucket, key) for key in keys]
        return [got.body for got in await self._from_threads(self.s3_threads.get_objects, gets)]

    async def _from_threads(
        self,
        calls: Callable[[Sequence[_Object], Credentials], list[_Outcome]],
        objects: Sequence[_Object],
    ) -> list[_Outcome]:
        """``calls`` over ``objects`` in shares, on the object threads; their outcomes in order,
        each one's span drawn; the first error raised once every call has ended."""
        if not objects:
            return []
        credentials = await self.s3_objects.credentials()
        share = max(1, self.settings.s3_concurrency // OBJECT_THREADS)
        loop = asyncio.get_running_loop()
        done = await asyncio.gather(
            *(
                loop.run_in_executor(
                    self._object_threads, calls, objects[start : start + share], credentials
                )
                for start in range(0, len(objects), share)
            )
        )
        outcomes = [outcome for part in done for outcome in part]
        if call_spans_under(trace.get_current_span()):
            for outcome in outcomes:
                draw_object_span(outcome, self.s3_objects.endpoint)
        for outcome in outcomes:
            if outcome.error is not None:
                raise outcome.error
        return outcomes


class UnknownTopic(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no SNS topic {name!r}")
        self.name = name


def sqs_batches(bodies: Sequence[str]) -> list[list[str]]:
    """Consecutive batches of at most `SQS_BATCH` bodies and `SQS_BATCH_BODY_BYTES` bytes (a
    body over that limit goes alone, for SQS to refuse with its own words)."""
    batches: list[list[str]] = []
    size = 0
    for body in bodies:
        length = len(body.encode())
        if not batches or len(batches[-1]) == SQS_BATCH or size + length > SQS_BATCH_BODY_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(body)
        size += length
    return batches
