"""CLIENT spans of the AWS calls (opentelemetry-instrumentation-botocore's
AiobotocoreInstrumentor, see ingest_common.telemetry.aws_spans) against the moto server.

A call inside a trace has its span; a call outside one (an idle consumer's long polls) has
none; the SQS calls that have messaging spans of ours have no second one; and the trace
still goes from a sender to the consumer through the message attributes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from botocore.exceptions import ClientError
from ingest_common.aws import Aws
from ingest_common.runtime.consumer import Consumer, Delivery
from ingest_common.runtime.health import Health
from ingest_common.schemas.messages import Message
from ingest_common.telemetry.tracing import tracer
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import ConfigDict

from tests.integration.pipeline import sqs_only

QUEUE = "ingest-index"  # any queue of the real topology


class Ping(Message):
    model_config = ConfigDict(extra="forbid", frozen=True)
    n: int


def aws_calls(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if (s.attributes or {}).get("rpc.system") == "aws-api"]


def only(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    named = [s for s in spans if s.name == name]
    assert len(named) == 1, f"{len(named)} spans {name}: {[s.name for s in spans]}"
    return named[0]


async def test_calls_in_a_trace_are_client_spans_of_it(
    aws: Aws, new_spans: Callable[[], list[ReadableSpan]]
) -> None:
    bucket = aws.settings.uploads_bucket
    with tracer().start_as_current_span("caller") as caller:
        await aws.put_bytes(bucket, "spans/a.txt", b"hello", content_type="text/plain")
        assert await aws.get_bytes(bucket, "spans/a.txt") == b"hello"
        with pytest.raises(ClientError):  # 404: an answer, not a failure
            await aws.get_bytes(bucket, "spans/missing.txt")
        with pytest.raises(ClientError):  # 404: an answer, not a failure
            await aws.s3.head_object(Bucket=bucket, Key="spans/missing.txt")
        with pytest.raises(ClientError):  # 400: a failure
            await aws.sqs.get_queue_url(QueueName="no-such-queue")
        url = await aws.queue_url(QUEUE)
        await aws.sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)

    context = caller.get_span_context()
    calls = [s for s in aws_calls(new_spans()) if s.context.trace_id == context.trace_id]
    assert {s.name for s in calls} == {
        "S3.PutObject",
        "S3.GetObject",
        "S3.HeadObject",
        "SQS.GetQueueUrl",
        "SQS.ReceiveMessage",
    }
    assert all(s.kind is SpanKind.CLIENT for s in calls)
    assert all(s.parent is not None and s.parent.span_id == context.span_id for s in calls)

    gets = {(s.attributes or {})["http.status_code"]: s for s in calls if s.name == "S3.GetObject"}
    get, missing_get = gets[200], gets[404]
    assert (missing_get.attributes or {})["http.status_code"] == 404
    assert missing_get.status.status_code is StatusCode.OK
    assert "error.type" not in (missing_get.attributes or {})
    attributes = dict(get.attributes or {})
    assert attributes["rpc.service"] == "S3"
    assert attributes["rpc.method"] == "GetObject"
    assert attributes["cloud.region"] == aws.settings.aws_region
    assert attributes["http.status_code"] == 200
    assert (attributes["aws.s3.bucket"], attributes["aws.s3.key"]) == (bucket, "spans/a.txt")
    assert get.status.status_code is StatusCode.UNSET

    missing = only(calls, "S3.HeadObject")
    assert (missing.attributes or {})["http.status_code"] == 404
    assert missing.status.status_code is StatusCode.OK
    assert "error.type" not in (missing.attributes or {})

    (failed,) = [s for s in calls if s.status.status_code is StatusCode.ERROR]
    assert failed.name == "SQS.GetQueueUrl"
    assert (failed.attributes or {})["http.status_code"] == 400
    assert (failed.attributes or {})["error.type"] == "AWS.SimpleQueueService.NonExistentQueue"

    receive = dict(only(calls, "SQS.ReceiveMessage").attributes or {})
    assert (receive["rpc.service"], receive["rpc.method"]) == ("SQS", "ReceiveMessage")
    assert receive["aws.queue_url"] == url


async def test_an_idle_consumer_makes_no_span(
    aws: Aws, new_spans: Callable[[], list[ReadableSpan]]
) -> None:
    """Long polls on an empty queue, heartbeats and dependency checks: no trace, no span."""

    async def handle(message: Ping, delivery: Delivery) -> None:
        raise AssertionError("the queue is empty")

    consumer = Consumer(
        aws.settings.model_copy(update={"receive_wait_seconds": 1}),
        aws,
        QUEUE,
        Ping.model_validate_json,
        handle,
        Health(QUEUE, 60),
        sqs_only(aws, QUEUE),
    )
    began = time.time_ns()
    task = asyncio.create_task(consumer.run())
    started = time.monotonic()
    while time.monotonic() - started < 2.5:  # two long polls at least
        await asyncio.sleep(0.1)
    consumer.stop()
    await task

    assert consumer.health.received == 0
    # The consumer's task starts with no span current, so any span it made is in a trace
    # that began during this test. Calls of a trace begun before it come from another test's
    # work still finishing in this process (CI saw a set's batch spans end here once).
    spans = new_spans()
    begun = {s.context.trace_id for s in spans if s.parent is None and (s.start_time or 0) >= began}
    made = [s for s in aws_calls(spans) if s.parent is None or s.context.trace_id in begun]
    if made:
        pytest.fail(f"the idle consumer made spans: {_described(made)}")


def _described(spans: list[ReadableSpan]) -> str:
    """Each span's name, trace and parent, in full (pytest shortens a long assertion)."""
    return "; ".join(
        f"{s.name} in trace {s.context.trace_id:032x} under "
        + (f"{s.parent.span_id:016x}" if s.parent else "no parent")
        for s in spans
    )


async def test_trace_goes_through_a_message_with_one_span_per_messaging_call(
    aws: Aws, new_spans: Callable[[], list[ReadableSpan]]
) -> None:
    handled: list[trace.SpanContext] = []

    async def handle(message: Ping, delivery: Delivery) -> None:
        # A call the handler makes is a CLIENT span of the message's trace.
        await aws.put_bytes(
            aws.settings.uploads_bucket, f"spans/{message.n}", b"", content_type="text/plain"
        )
        handled.append(trace.get_current_span().get_span_context())

    with tracer().start_as_current_span("caller") as caller:
        await aws.send(QUEUE, [Ping(n=1)])
    consumer = Consumer(
        aws.settings,
        aws,
        QUEUE,
        Ping.model_validate_json,
        handle,
        Health(QUEUE, 60),
        sqs_only(aws, QUEUE),
    )
    task = asyncio.create_task(consumer.run())
    async with asyncio.timeout(30):
        while not handled:
            await asyncio.sleep(0.05)
    consumer.stop()
    await task

    trace_id = caller.get_span_context().trace_id
    (process_context,) = handled
    assert process_context.trace_id == trace_id
    finished = new_spans()
    members = [s for s in finished if s.context.trace_id == trace_id]
    send = only(members, f"send {QUEUE}")
    process = only(members, f"process {QUEUE}")
    assert send.kind is SpanKind.PRODUCER
    assert process.parent is not None
    assert process.parent.span_id == send.context.span_id
    assert process.context.span_id == process_context.span_id
    put = only(members, "S3.PutObject")
    assert put.parent is not None
    assert put.parent.span_id == process.context.span_id

    # SendMessageBatch and DeleteMessageBatch: our `send` and `settle` spans, no second one.
    names = {s.name for s in finished}
    assert f"settle {QUEUE}" in names
    assert not names & {"SQS.SendMessage", "SQS.SendMessageBatch", "SQS.DeleteMessageBatch"}
