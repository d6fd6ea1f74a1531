"""The SQS consumer every service runs; a service only supplies `parse` and `handle`.

- Long polls (20 s, up to 10 messages), never more messages than free handler slots.
- Each message runs its handler under a timeout; a heartbeat keeps in-flight messages
  invisible while they work, so slow work is not delivered twice.
- Success: the message is deleted, in batches of up to 10 (a delete waits up to
  DELETE_LINGER for others to share its request). Nothing else deletes a message,
  except moving a poison pill or a permanent failure to the dead-letter queue.
- RetryableError or any unexpected error: first, is it an outage? If a dependency check
  (`ingest_common.runtime.dependencies`) confirms that PostgreSQL, SQS or S3 is down, the
  message is handed back as a fresh copy, delayed a few seconds, so the outage costs it
  none of its tries, and the consumer stops receiving until every dependency answers.
  Otherwise the message stays and comes back after an exponential backoff (its visibility
  timeout is set to the delay). On its last try (the queue's maxReceiveCount) it is moved
  to the DLQ here, with the reason, after the handler's `gave_up` has recorded it.
- SIGTERM: stop receiving (a long poll in progress is awaited if it ends within
  STOP_POLL_GRACE, else cut short: see `_poll_grace`), let
  in-flight handlers finish up to `drain_timeout`, cancel the rest and make their messages
  visible again at once, flush the deletes, return.
- Liveness: the event loop ticks every second and the consumer's own loops must stay
  alive; one that dies stops the consumer, which then raises `ConsumerCrashed`.
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
from ingest_common.aws_json import received_messages
from ingest_common.dead_letters import dead_letter_attributes, original_attributes
from ingest_common.errors import InvalidMessage, PermanentError, RetryableError
from ingest_common.runtime.dependencies import Dependencies
from ingest_common.runtime.health import Health
from ingest_common.settings import MAX_VISIBILITY, IngestSettings
from ingest_common.telemetry import metrics
from ingest_common.telemetry.tracing import (
    carrier_from_sqs,
    context_from_carrier,
    instrumented_calls_under,
    links_to,
    messaging_attributes,
    tracer,
)
from ingest_common.topology import dead_letter_queue, load_topology

M = TypeVar("M")
log = structlog.get_logger("ingest.consumer")

STOP_POLL_GRACE = 1.5  # seconds a long poll in progress may still take after SIGTERM
SHUTDOWN_DELETE_WAIT = 10.0  # seconds to flush deletes on the way out
DELETE_GAP = 0.05  # seconds without a delete that end a batch, once stopping
DELETE_LINGER = 0.5  # seconds a delete waits at most for others to share its batch


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
    # Set while a heartbeat's extension of it is on the wire; see Consumer._settle.
    extension: asyncio.Event | None = None
    settled: bool = False  # its visibility is being set for good: no more heartbeats

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
GaveUp = Callable[[M, str], Awaitable[None]]  # the message failed its last try: record why


class ConsumerCrashed(RuntimeError):
    """One of the consumer's own loops died: the process should exit and be restarted."""


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
        dependencies: Dependencies,
        *,
        gave_up: GaveUp[M] | None = None,
    ) -> None:
        self.settings = settings
        self.aws = aws
        self.queue = queue
        self.parse = parse
        self.handle = handle
        self.health = health
        self.dependencies = dependencies
        self.gave_up = gave_up
        self.max_receive_count = _max_receive_count(settings, queue)
        health.dependencies = dependencies.snapshot
        self._free = settings.concurrency
        self._room = asyncio.Event()
        self._in_flight: dict[asyncio.Task[None], Delivery] = {}
        self._deletes: asyncio.Queue[Delivery] = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._url = ""
        self._poll_started: float | None = None  # monotonic start of the poll under way
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
        # Alive from the start, also while waiting for SQS to answer.
        ticker = asyncio.create_task(self._tick_loop(), name="ticker")
        self.health.loops = {"ticker": ticker}
        self._url = await self._queue_url()
        if self._stopping.is_set():
            await _cancel(ticker)
            return
        self.health.ready = True
        metrics.watch_queue_age(self.queue, self.oldest_message_age)
        log.info("consumer.started", queue=self.queue, concurrency=self.settings.concurrency)
        loops = {
            "poller": asyncio.create_task(self._poll_loop(), name="poller"),
            "heartbeat": asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            "deleter": asyncio.create_task(self._delete_loop(), name="deleter"),
            "dependency checks": asyncio.create_task(self.dependencies.run(), name="checks"),
            "ticker": ticker,
        }
        self.health.loops = loops
        stop = asyncio.create_task(self._stopping.wait())
        dead: list[str] = []
        try:
            await asyncio.wait([stop, *loops.values()], return_when=asyncio.FIRST_COMPLETED)
            # The poller returns by itself once told to stop; any other end is a death.
            dead = [
                name
                for name, task in loops.items()
                if task.done() and (_failed(task) or not self._stopping.is_set())
            ]
            for name in dead:
                error = None if loops[name].cancelled() else loops[name].exception()
                log.error("consumer.loop_died", loop=name, error=repr(error))
            self.stop()
            await asyncio.wait([loops["poller"]], timeout=self._poll_grace())
        finally:
            stop.cancel()
            await _cancel(loops["poller"])
            await self._drain()
            await _cancel(loops["heartbeat"])
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SHUTDOWN_DELETE_WAIT):
                    await self._deletes.join()
            for name in ("deleter", "dependency checks", "ticker"):
                await _cancel(loops[name])
            self.health.ready = False
            metrics.unwatch_queue_age(self.queue)
            log.info("consumer.stopped", queue=self.queue)
        if dead:
            raise ConsumerCrashed(f"the consumer's {', '.join(dead)} loop died")

    async def _queue_url(self) -> str:
        """The queue's URL; SQS may not answer yet when the service starts: wait for it
        (or for SIGTERM, which cuts a call under way short)."""
        while True:
            lookup = asyncio.ensure_future(self.aws.queue_url(self.queue))
            stop = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait([lookup, stop], return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if self._stopping.is_set():
                await _cancel(lookup)
                return ""
            try:
                return lookup.result()
            except (BotoCoreError, ClientError) as exc:
                log.warning("consumer.queue_unavailable", queue=self.queue, error=str(exc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.outage_probe_interval):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return ""

    async def _tick_loop(self) -> None:
        while True:
            self.health.tick()
            await asyncio.sleep(1.0)

    # --- receiving --------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while not self._stopping.is_set():
            if not self.dependencies.up:
                await self._pause()
                continue
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

    async def _pause(self) -> None:
        """Receive nothing while a dependency is down; resume by itself when all answer."""
        self.health.paused = True
        started = time.monotonic()
        log.warning("consumer.paused", queue=self.queue, down=self.dependencies.down())
        await self.dependencies.wait_up(self._stopping)
        self.health.paused = False
        if not self._stopping.is_set():
            log.warning(
                "consumer.resumed", queue=self.queue, paused_s=round(time.monotonic() - started, 1)
            )

    async def _wait_for_room(self) -> int:
        """Wait for free handler slots; never ask SQS for more than we can start.

        While half the slots or more are busy, wait until a batch's worth are free (half the
        slots, at most a receive's batch): receiving as soon as one slot freed made a busy
        service call ReceiveMessage once per message (each a billed request, and the
        emulator's costliest call); with half its slots busy it has work enough meanwhile.
        """
        batch = min(SQS_BATCH, self.settings.receive_batch_size)
        enough = max(1, min(batch, self.settings.concurrency // 2))
        while self._free < enough and not self._stopping.is_set():
            self._room.clear()
            await self._room.wait()
        return min(batch, self._free)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self.health.in_flight = len(self._in_flight)
        self._free += 1
        self._room.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("consumer.task_crashed", error=repr(exc))

    def _poll_grace(self) -> float:
        """How long to let a long poll in progress end by itself after SIGTERM.

        SQS keeps a poll whose client went away open until its wait is over, and hands it
        any message that arrives meanwhile: that message then reappears only after its
        visibility timeout, one receive spent. So a poll that will end within the grace
        (short polls: tests, a busy queue) is awaited; a long idle one is cut at once, to
        exit within Docker's grace (the same as a SIGKILL would do).
        """
        if self._poll_started is None:
            return 0.0
        # The poll's own wait, plus a round trip, from when it was sent.
        left = self.settings.receive_wait_seconds + 0.5 - (time.monotonic() - self._poll_started)
        return max(0.0, left) if left <= STOP_POLL_GRACE else 0.0

    async def _receive(self, count: int) -> list[dict[str, Any]]:
        self._poll_started = time.monotonic()
        try:
            response = await self.aws.sqs_messages.call(
                "ReceiveMessage",
                {
                    "QueueUrl": self._url,
                    "MaxNumberOfMessages": count,
                    "WaitTimeSeconds": self.settings.receive_wait_seconds,
                    "VisibilityTimeout": self.settings.visibility_timeout,
                    "MessageSystemAttributeNames": ["ApproximateReceiveCount", "SentTimestamp"],
                    "MessageAttributeNames": ["All"],
                },
            )
        except (BotoCoreError, ClientError) as exc:
            # Down (then the poll loop pauses) or throttling: keep the service alive.
            log.warning("consumer.receive_failed", queue=self.queue, error=str(exc))
            if not await self.dependencies.confirm_outage():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._stopping.wait()
            return []
        finally:
            self._poll_started = None
        messages = received_messages(response)
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
            with instrumented_calls_under(span):
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
        message: M | None = None
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
            self._record(span, exc)
            return await asyncio.shield(self._after_failure(delivery, message, exc))
        self.health.succeeded += 1
        self._deletes.put_nowait(delivery)
        return "ok"

    async def _after_failure(self, delivery: Delivery, message: M | None, exc: Exception) -> str:
        """An outage hands the message back; its last try dead-letters it; else a backoff."""
        error = str(exc) or repr(exc)
        if await self.dependencies.confirm_outage():
            self.health.handed_back += 1
            log.warning("message.outage", error=error, down=self.dependencies.down())
            await self._hand_back(delivery)
            return "outage"
        if delivery.receive_count >= self.max_receive_count:
            self.health.failed += 1
            reason = f"failed {delivery.receive_count} times; the last time: {error}"
            log.error(
                "message.gave_up", reason=reason, exc_info=not isinstance(exc, RetryableError)
            )
            if message is not None and self.gave_up is not None:
                try:
                    await self.gave_up(message, reason)
                except Exception as hook_error:
                    if await self.dependencies.confirm_outage():
                        await self._hand_back(delivery)
                        return "outage"
                    log.exception("message.gave_up_failed", error=str(hook_error))
            await self._to_dead_letter(delivery, reason)
            return "failed"
        self.health.retried += 1
        delay = exc.delay if isinstance(exc, RetryableError) else None
        if delay is None:
            delay = backoff_delay(
                delivery.receive_count,
                self.settings.retry_base_delay,
                self.settings.retry_max_delay,
            )
        log.warning(
            "message.retry",
            error=error,
            retry_in=int(delay),
            exc_info=not isinstance(exc, RetryableError),
        )
        await self._set_visibility(delivery, int(delay))
        return "retry"

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
        await self._settle([delivery])
        try:
            await self.aws.sqs_messages.call(
                "ChangeMessageVisibility",
                {
                    "QueueUrl": self._url,
                    "ReceiptHandle": delivery.receipt_handle,
                    "VisibilityTimeout": max(0, min(MAX_VISIBILITY, seconds)),
                },
            )
        except (BotoCoreError, ClientError) as exc:
            # The message reappears when its current timeout ends: later, not lost.
            log.warning("consumer.visibility_failed", error=str(exc))

    async def _to_dead_letter(self, delivery: Delivery, reason: str) -> None:
        attributes = dead_letter_attributes(delivery.attributes, reason, self.queue)
        try:
            await self.aws.send_raw(dead_letter_queue(self.queue), delivery.body, attributes)
        except (BotoCoreError, ClientError) as exc:
            # Not deleted: it comes back, and SQS's redrive moves it after maxReceiveCount.
            log.error("consumer.dead_letter_failed", error=str(exc))
            return
        self._deletes.put_nowait(delivery)

    async def _hand_back(self, delivery: Delivery) -> None:
        """During an outage: a fresh copy, delayed, in place of this delivery.

        A copy starts with no receives, so however long the outage, the message keeps every
        try it had (only SQS itself can reset ApproximateReceiveCount, by a new message).
        The copy is sent before the original is deleted: at worst there are two, and
        handlers are idempotent. If SQS is the one that is down, the send fails and the
        message simply reappears when its visibility timeout ends.
        """
        try:
            await self.aws.send_raw(
                self.queue,
                delivery.body,
                original_attributes(delivery.attributes),
                delay_seconds=self.settings.outage_requeue_delay,
            )
        except (BotoCoreError, ClientError) as exc:
            log.warning("consumer.hand_back_failed", error=str(exc))
            return
        self._deletes.put_nowait(delivery)

    async def _delete_loop(self) -> None:
        while True:
            batch = [await self._deletes.get()]
            # One DeleteMessageBatch (one request, billed once) for up to ten messages: a
            # delete waits up to DELETE_LINGER for others. A busy processor's come a few at
            # a time, tens of milliseconds apart, so a shorter wait sent two or three per
            # request. Once stopping, a pause of DELETE_GAP sends what there is.
            send_by = time.monotonic() + DELETE_LINGER
            while len(batch) < SQS_BATCH and (left := send_by - time.monotonic()) > 0:
                try:
                    async with asyncio.timeout(min(left, DELETE_GAP)):
                        batch.append(await self._deletes.get())
                except TimeoutError:
                    if self._stopping.is_set():
                        break
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
        # A receipt handle is worth retrying until the message would reappear anyway.
        deadline = time.monotonic() + self.settings.visibility_timeout
        attempt = 0
        while True:
            try:
                response = await self.aws.sqs_messages.call(
                    "DeleteMessageBatch", {"QueueUrl": self._url, "Entries": entries}
                )
            except (BotoCoreError, ClientError) as exc:
                attempt += 1
                log.warning("consumer.delete_failed", error=str(exc), attempt=attempt)
                pause = min(5.0, 0.5 * 2**attempt)
                if time.monotonic() + pause > deadline:
                    # Redelivered later: handlers are idempotent, nothing is lost.
                    log.error("consumer.delete_gave_up", count=count)
                    return
                await asyncio.sleep(pause)
                continue
            if failed := response.get("Failed"):
                # A failed delete means a redelivery later; handlers are idempotent.
                log.warning("consumer.delete_partial", failed=failed)
            return

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
        # Settled ones are left alone: settled before this beat, or while an earlier batch of
        # it was on the wire (checked here, as the batch leaves, for both).
        deliveries = [d for d in deliveries if not d.settled]
        if not deliveries:
            return
        handles = [d.receipt_handle for d in deliveries]
        landed = asyncio.Event()
        for delivery in deliveries:
            delivery.extension = landed
        try:
            # Bounded: a call that hangs (a partition) must not hold up the next beat.
            async with asyncio.timeout(self.settings.heartbeat_interval):
                await self.aws.change_visibility(
                    self.queue, handles, self.settings.visibility_timeout
                )
        except (BotoCoreError, ClientError, TimeoutError) as exc:
            log.warning("consumer.heartbeat_failed", error=str(exc) or repr(exc))
            return
        finally:
            landed.set()
        for delivery in deliveries:
            delivery.extended_at = now

    @staticmethod
    async def _settle(deliveries: list[Delivery]) -> None:
        """No more heartbeats for these deliveries, and none still on the wire.

        A retry's backoff or a release sets a short visibility. Sent while the heartbeat's
        extension of the same message is in flight, it could land first and be undone: the
        message would stay hidden for the whole visibility timeout. So it waits for the
        extension (bounded by the heartbeat's own timeout; one abandoned at that timeout may
        still land late, and the message then only comes back later, not lost).
        """
        for delivery in deliveries:
            delivery.settled = True
        for delivery in deliveries:
            if delivery.extension is not None:
                await delivery.extension.wait()

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
        await self._settle(deliveries)
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


def _failed(task: asyncio.Task[Any]) -> bool:
    return not task.cancelled() and task.exception() is not None


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    # A loop that died was reported (consumer.loop_died); this only collects its end.
    await asyncio.gather(task, return_exceptions=True)


def _max_receive_count(settings: IngestSettings, queue: str) -> int:
    """The queue's maxReceiveCount, from the topology every queue is created from."""
    for spec in load_topology(settings).queues:
        if queue in (spec.name, spec.dead_letter_name):
            return spec.max_receive_count
    raise ValueError(f"{queue!r} is not a queue of the topology")
