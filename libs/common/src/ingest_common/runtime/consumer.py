"""The SQS consumer every service runs; a service only supplies `parse` and `handle`.

- Long polls (20 s, up to 10 messages), never more messages than free handler slots.
- Each message runs its handler under a timeout; a heartbeat keeps in-flight messages
  invisible while they work, so slow work is not delivered twice.
- Success: the message is deleted, in batches of up to 10. Nothing else deletes a
  message, except moving a poison pill or a permanent failure to the dead-letter queue.
- RetryableError or any unexpected error: the message stays and comes back after an
  exponential backoff (its visibility timeout is set to the delay); after the queue's
  maxReceiveCount SQS itself moves it to the DLQ.
- SIGTERM: stop receiving, let in-flight handlers finish up to `drain_timeout`, cancel the
  rest and make their messages visible again at once, flush the deletes, return.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

from ingest_common.aws import SQS_BATCH, Aws
from ingest_common.errors import InvalidMessage, PermanentError, RetryableError
from ingest_common.runtime.health import Health
from ingest_common.settings import IngestSettings
from ingest_common.telemetry import metrics
from ingest_common.telemetry.tracing import (
    carrier_from_sqs,
    context_from_carrier,
    links_to,
    messaging_attributes,
    tracer,
)
from ingest_common.topology import dead_letter_queue

M = TypeVar("M")
log = structlog.get_logger("ingest.consumer")

MAX_VISIBILITY = 12 * 60 * 60  # SQS's ceiling for a visibility timeout


@dataclass
class Delivery:
    """One received SQS message while it is being handled."""

    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, Any]
    receive_count: int
    sent_at: float
    extended_at: float = field(default_factory=time.monotonic)
    span_context: SpanContext | None = None  # of its process span, for the settle span's links

    @classmethod
    def from_sqs(cls, raw: dict[str, Any]) -> Delivery:
        system = raw.get("Attributes", {})
        return cls(
            message_id=raw["MessageId"],
            receipt_handle=raw["ReceiptHandle"],
            body=raw["Body"],
            attributes=raw.get("MessageAttributes", {}),
            receive_count=int(system.get("ApproximateReceiveCount", "1")),
            sent_at=int(system.get("SentTimestamp", "0")) / 1000,
        )


Parse = Callable[[str], M]
Handle = Callable[[M, Delivery], Awaitable[None]]


def backoff_delay(receive_count: int, base: float, ceiling: float) -> int:
    """Exponential backoff with full jitter, in whole seconds as SQS wants."""
    delay = min(ceiling, base * 2 ** max(0, receive_count - 1))
    return int(min(MAX_VISIBILITY, random.uniform(delay / 2, delay) + 0.5))


class Consumer(Generic[M]):
    def __init__(
        self,
        settings: IngestSettings,
        aws: Aws,
        queue: str,
        parse: Parse[M],
        handle: Handle[M],
        health: Health,
    ) -> None:
        self.settings = settings
        self.aws = aws
        self.queue = queue
        self.parse = parse
        self.handle = handle
        self.health = health
        self._free = settings.concurrency
        self._room = asyncio.Event()
        self._in_flight: dict[asyncio.Task[None], Delivery] = {}
        self._deletes: asyncio.Queue[Delivery] = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._url = ""
        self._ages = metrics.OldestAge()

    def oldest_message_age(self) -> float:
        """Seconds: see `ingest_common.telemetry.metrics` for what this measures."""
        return self._ages.value(d.sent_at for d in list(self._in_flight.values()))

    def stop(self) -> None:
        """Ask the consumer to drain and return (what SIGTERM does)."""
        if not self._stopping.is_set():
            log.info("consumer.draining", queue=self.queue, in_flight=len(self._in_flight))
            self.health.draining = True
            self._stopping.set()
            self._room.set()

    async def run(self) -> None:
        self._url = await self.aws.queue_url(self.queue)
        self.health.ready = True
        metrics.watch_queue_age(self.queue, self.oldest_message_age)
        log.info("consumer.started", queue=self.queue, concurrency=self.settings.concurrency)
        deleter = asyncio.create_task(self._delete_loop(), name="deleter")
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
        poller = asyncio.create_task(self._poll_loop(), name="poller")
        try:
            await self._stopping.wait()
            # Let a long poll in progress return rather than cancel it: SQS would hand the
            # messages of a cancelled poll to nobody until their visibility timeout ends.
            await asyncio.wait([poller], timeout=self.settings.receive_wait_seconds + 10)
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            await self._drain()
            heartbeat.cancel()
            await self._deletes.join()
            deleter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(heartbeat, deleter)
            self.health.ready = False
            metrics.unwatch_queue_age(self.queue)
            log.info("consumer.stopped", queue=self.queue)

    # --- receiving --------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while not self._stopping.is_set():
            self.health.beat()
            room = await self._wait_for_room()
            if self._stopping.is_set():
                break
            raw_messages = await self._receive(room)
            if self._stopping.is_set():
                # Received after SIGTERM: hand them straight back to other consumers.
                await self._release([Delivery.from_sqs(raw) for raw in raw_messages])
                break
            self._free -= len(raw_messages)
            for raw in raw_messages:
                delivery = Delivery.from_sqs(raw)
                self._ages.received(delivery.sent_at)
                task = asyncio.create_task(self._process(delivery), name=delivery.message_id)
                self._in_flight[task] = delivery
                task.add_done_callback(self._finished)
            self.health.in_flight = len(self._in_flight)

    async def _wait_for_room(self) -> int:
        """Wait for a free handler slot; never ask SQS for more than we can start."""
        while self._free <= 0 and not self._stopping.is_set():
            self._room.clear()
            await self._room.wait()
        return min(SQS_BATCH, self._free, self.settings.receive_batch_size)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self.health.in_flight = len(self._in_flight)
        self._free += 1
        self._room.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("consumer.task_crashed", error=repr(exc))

    async def _receive(self, count: int) -> list[dict[str, Any]]:
        try:
            response = await self.aws.sqs.receive_message(
                QueueUrl=self._url,
                MaxNumberOfMessages=count,
                WaitTimeSeconds=self.settings.receive_wait_seconds,
                VisibilityTimeout=self.settings.visibility_timeout,
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
                MessageAttributeNames=["All"],
            )
        except (BotoCoreError, ClientError) as exc:
            # The endpoint is down or throttling: keep the service alive and try again.
            log.warning("consumer.receive_failed", queue=self.queue, error=str(exc))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=1.0)
            return []
        messages: list[dict[str, Any]] = [dict(m) for m in response.get("Messages", [])]
        self.health.received += len(messages)
        return messages

    # --- handling -------------------------------------------------------------------

    async def _process(self, delivery: Delivery) -> None:
        parent = context_from_carrier(carrier_from_sqs(delivery.attributes))
        with (
            structlog.contextvars.bound_contextvars(
                queue=self.queue, message_id=delivery.message_id
            ),
            # The producer's context is the parent (one upload, one trace) and, as the
            # messaging conventions ask, a link too.
            tracer().start_as_current_span(
                f"process {self.queue}",
                context=parent,
                kind=SpanKind.CONSUMER,
                links=links_to(trace.get_current_span(parent).get_span_context()),
                attributes=messaging_attributes(
                    self.queue,
                    "process",
                    "process",
                    **{
                        "messaging.message.id": delivery.message_id,
                        "messaging.message.body.size": len(delivery.body),
                        "messaging.aws_sqs.receive_count": delivery.receive_count,
                    },
                ),
                record_exception=False,
                set_status_on_exception=False,
            ) as span,
        ):
            delivery.span_context = span.get_span_context()
            started = time.monotonic()
            outcome = await self._run_handler(delivery, span)
            seconds = time.monotonic() - started
            labels = {"queue": self.queue, "outcome": outcome}
            metrics.messages.add(1, labels)
            metrics.message_duration.record(seconds, labels)
            span.set_attribute("ingest.outcome", outcome)
            log.info(
                "message.done",
                outcome=outcome,
                receive_count=delivery.receive_count,
                seconds=round(seconds, 3),
            )

    async def _run_handler(self, delivery: Delivery, span: trace.Span) -> str:
        try:
            message = self._parse(delivery)
            async with asyncio.timeout(self.settings.handler_timeout):
                await self.handle(message, delivery)
        except InvalidMessage as exc:
            self.health.invalid += 1
            self._record(span, exc)
            log.error("message.invalid", reason=exc.reason)
            await asyncio.shield(self._to_dead_letter(delivery, f"invalid message: {exc.reason}"))
            return "invalid"
        except PermanentError as exc:
            self.health.failed += 1
            self._record(span, exc)
            log.error("message.failed", reason=exc.reason)
            await asyncio.shield(self._to_dead_letter(delivery, exc.reason))
            return "failed"
        except Exception as exc:
            self.health.retried += 1
            self._record(span, exc)
            delay = exc.delay if isinstance(exc, RetryableError) else None
            if delay is None:
                delay = backoff_delay(
                    delivery.receive_count,
                    self.settings.retry_base_delay,
                    self.settings.retry_max_delay,
                )
            log.warning(
                "message.retry",
                error=str(exc) or repr(exc),
                retry_in=int(delay),
                exc_info=not isinstance(exc, RetryableError),
            )
            await asyncio.shield(self._set_visibility(delivery, int(delay)))
            return "retry"
        self.health.succeeded += 1
        self._deletes.put_nowait(delivery)
        return "ok"

    def _parse(self, delivery: Delivery) -> M:
        try:
            return self.parse(delivery.body)
        except InvalidMessage:
            raise
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise InvalidMessage(str(exc).splitlines()[0] if str(exc) else repr(exc)) from exc

    @staticmethod
    def _record(span: trace.Span, exc: BaseException) -> None:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, str(exc)[:200]))

    # --- acknowledging --------------------------------------------------------------

    async def _set_visibility(self, delivery: Delivery, seconds: int) -> None:
        try:
            await self.aws.sqs.change_message_visibility(
                QueueUrl=self._url,
                ReceiptHandle=delivery.receipt_handle,
                VisibilityTimeout=max(0, min(MAX_VISIBILITY, seconds)),
            )
        except (BotoCoreError, ClientError) as exc:
            # The message reappears when its current timeout ends: later, not lost.
            log.warning("consumer.visibility_failed", error=str(exc))

    async def _to_dead_letter(self, delivery: Delivery, reason: str) -> None:
        attributes = dict(delivery.attributes)
        attributes["ingest-error"] = {"DataType": "String", "StringValue": reason[:1000]}
        attributes["ingest-source-queue"] = {"DataType": "String", "StringValue": self.queue}
        try:
            await self.aws.send_raw(dead_letter_queue(self.queue), delivery.body, attributes)
        except (BotoCoreError, ClientError, ValueError) as exc:
            # Not deleted: it comes back, and SQS's redrive moves it after maxReceiveCount.
            # ValueError: the sender used 9 or 10 attributes, no room for our two.
            log.error("consumer.dead_letter_failed", error=str(exc))
            return
        self._deletes.put_nowait(delivery)

    async def _delete_loop(self) -> None:
        while True:
            batch = [await self._deletes.get()]
            # Gather what finishes at about the same time into one DeleteMessageBatch.
            with contextlib.suppress(asyncio.TimeoutError):
                async with asyncio.timeout(0.05):
                    while len(batch) < SQS_BATCH:
                        batch.append(await self._deletes.get())
            while len(batch) < SQS_BATCH and not self._deletes.empty():
                batch.append(self._deletes.get_nowait())
            try:
                await asyncio.shield(self._delete(batch))
            finally:
                for _ in batch:
                    self._deletes.task_done()

    async def _delete(self, batch: list[Delivery]) -> None:
        entries: list[Any] = [
            {"Id": str(i), "ReceiptHandle": d.receipt_handle} for i, d in enumerate(batch)
        ]
        # One batch settles messages of many traces: a root span linked to each of them.
        with tracer().start_as_current_span(
            f"settle {self.queue}",
            context=otel_context.Context(),
            kind=SpanKind.CLIENT,
            links=links_to(*(d.span_context for d in batch)),
            attributes=messaging_attributes(
                self.queue,
                "settle",
                "DeleteMessageBatch",
                **{"messaging.batch.message_count": len(batch)},
            ),
        ):
            await self._delete_entries(entries, len(batch))

    async def _delete_entries(self, entries: list[Any], count: int) -> None:
        for attempt in range(5):
            try:
                response = await self.aws.sqs.delete_message_batch(
                    QueueUrl=self._url, Entries=entries
                )
            except (BotoCoreError, ClientError) as exc:
                log.warning("consumer.delete_failed", error=str(exc), attempt=attempt + 1)
                await asyncio.sleep(min(5.0, 0.5 * 2**attempt))
                continue
            if failed := response.get("Failed"):
                # A failed delete means a redelivery later; handlers are idempotent.
                log.warning("consumer.delete_partial", failed=failed)
            return
        log.error("consumer.delete_gave_up", count=count)

    # --- keeping slow work invisible ------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_interval
        while True:
            await asyncio.sleep(min(interval, 1.0))
            now = time.monotonic()
            due = [d for d in self._in_flight.values() if now - d.extended_at >= interval]
            for start in range(0, len(due), SQS_BATCH):
                await self._extend(due[start : start + SQS_BATCH], now)

    async def _extend(self, deliveries: list[Delivery], now: float) -> None:
        handles = [d.receipt_handle for d in deliveries]
        try:
            await self.aws.change_visibility(self.queue, handles, self.settings.visibility_timeout)
        except (BotoCoreError, ClientError) as exc:
            log.warning("consumer.heartbeat_failed", error=str(exc))
            return
        for delivery in deliveries:
            delivery.extended_at = now

    # --- shutting down --------------------------------------------------------------

    async def _drain(self) -> None:
        tasks = list(self._in_flight)
        if not tasks:
            return
        log.info("consumer.drain_wait", in_flight=len(tasks), timeout=self.settings.drain_timeout)
        _, pending = await asyncio.wait(tasks, timeout=self.settings.drain_timeout)
        if not pending:
            return
        log.warning("consumer.drain_cancel", cancelled=len(pending))
        deliveries = [self._in_flight[t] for t in pending if t in self._in_flight]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._release(deliveries)

    async def _release(self, deliveries: list[Delivery]) -> None:
        """Make messages visible again now, not after their visibility timeout."""
        # Batches on their own, so a failed call leaves only its own messages invisible.
        await asyncio.gather(
            *(
                self._release_batch(deliveries[start : start + SQS_BATCH])
                for start in range(0, len(deliveries), SQS_BATCH)
            )
        )

    async def _release_batch(self, deliveries: list[Delivery]) -> None:
        handles = [d.receipt_handle for d in deliveries]
        try:
            refused = await self.aws.change_visibility(self.queue, handles, 0)
        except (BotoCoreError, ClientError) as exc:
            # They reappear when their current timeout ends: later, not lost.
            log.warning("consumer.visibility_failed", error=str(exc), messages=len(deliveries))
            return
        for _, error in refused:
            log.warning("consumer.visibility_failed", error=error)
