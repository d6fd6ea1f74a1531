"""`ingest dlq` against a real SQS endpoint (moto server over HTTP): exact, reported redrive."""

from __future__ import annotations

import asyncio
from typing import Any

from ingest_cli.dlq import AFTER_START, format_dead_letter, list_dead_letters, redrive
from ingest_common.aws import Aws
from ingest_common.dead_letters import dead_letter_attributes
from ingest_common.settings import IngestSettings

from tests.integration.pipeline import queue_counts, run_ingest

SOURCE = "ingest-render"  # any queue of the real topology
DLQ = "ingest-render-dlq"
TRACE = {
    "traceparent": {
        "DataType": "String",
        "StringValue": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
}


async def dead_letter(aws: Aws, body: str, attributes: dict[str, Any] | None = None) -> None:
    """What the consumer runtime does with a permanent failure."""
    url = await aws.queue_url(DLQ)
    sent = dead_letter_attributes(TRACE if attributes is None else attributes, "boom", SOURCE)
    await aws.sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=sent)


def as_sent(attributes: dict[str, Any]) -> dict[str, Any]:
    """Received attributes without the (empty) list fields SQS adds to each."""
    keep = ("DataType", "StringValue", "BinaryValue")
    return {
        name: {k: v for k, v in value.items() if k in keep} for name, value in attributes.items()
    }


async def fail_everything(aws: Aws, received: list[tuple[str, Any]], stop: asyncio.Event) -> None:
    """A consumer of SOURCE that dead-letters every message at once, as a broken service would."""
    url, dlq_url = await aws.queue_url(SOURCE), await aws.queue_url(DLQ)
    while not stop.is_set():
        response = await aws.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
        )
        for message in response.get("Messages", []):
            attributes = message.get("MessageAttributes", {})
            received.append((message["Body"], as_sent(attributes)))
            again = dead_letter_attributes(attributes, "failed again", SOURCE)
            await aws.sqs.send_message(
                QueueUrl=dlq_url, MessageBody=message["Body"], MessageAttributes=again
            )
            await aws.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


async def test_each_dead_letter_moves_once_even_when_it_fails_again_at_once(aws: Aws) -> None:
    bodies = [f'{{"n": {i}}}' for i in range(5)]
    for body in bodies:
        await dead_letter(aws, body)
    received: list[tuple[str, Any]] = []
    stop = asyncio.Event()
    consumer = asyncio.create_task(fail_everything(aws, received, stop))
    try:
        report = await redrive(aws, SOURCE)
        async with asyncio.timeout(10):
            while await queue_counts(aws, SOURCE) != (0, 0, 0):
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await consumer

    # Five sends to the source queue in all, one per dead letter, with its trace context
    # and without our failure attributes.
    assert sorted(body for body, _ in received) == bodies
    assert all(attributes == TRACE for _, attributes in received)
    assert (report.moved, report.left, report.complete) == (5, {AFTER_START: 5}, True)
    assert str(report) == (
        "moved 5 message(s) from ingest-render-dlq to ingest-render; left 5: 5 dead-lettered"
        " after this redrive started (run it again to move them)"
    )
    # The ones that failed again wait, visible, for the next run.
    assert await queue_counts(aws, DLQ) == (5, 0, 0)
    letters = await list_dead_letters(aws, SOURCE)
    assert sorted(letter.body for letter in letters) == bodies
    assert {letter.reason for letter in letters} == {"failed again"}


async def test_ten_attributes_come_back_exactly(aws: Aws) -> None:
    ten: dict[str, Any] = {
        **TRACE,
        "tracestate": {"DataType": "String", "StringValue": "vendor=value"},
        "blob": {"DataType": "Binary", "BinaryValue": bytes(range(256))},
        "count": {"DataType": "Number", "StringValue": "12.5"},
        "kind": {"DataType": "String.kind", "StringValue": 'ünïcödé {json} "quoted"'},
        **{f"extra-{i}": {"DataType": "String", "StringValue": f"value {i}"} for i in range(5)},
    }
    assert len(ten) == 10
    await dead_letter(aws, "{}", ten)

    [letter] = await list_dead_letters(aws, SOURCE)
    assert letter.reason == "boom"
    assert "10 original attribute(s)" in format_dead_letter(letter)
    report = await redrive(aws, SOURCE)
    assert (report.moved, report.left, report.complete) == (1, {}, True)
    assert str(report) == "moved 1 message(s) from ingest-render-dlq to ingest-render"

    url = await aws.queue_url(SOURCE)
    response = await aws.sqs.receive_message(
        QueueUrl=url, MessageAttributeNames=["All"], WaitTimeSeconds=1
    )
    [message] = response["Messages"]
    assert as_sent(message["MessageAttributes"]) == ten
    assert await queue_counts(aws, DLQ) == (0, 0, 0)


async def test_a_limit_moves_that_many_and_says_how_many_are_left(aws: Aws) -> None:
    for i in range(5):
        await dead_letter(aws, f'{{"n": {i}}}')
    report = await redrive(aws, SOURCE, limit=3)
    assert (report.moved, report.left, report.complete) == (3, {"over the limit of 3": 2}, False)
    assert str(report).endswith("; left 2: 2 over the limit of 3")
    assert await queue_counts(aws, SOURCE) == (3, 0, 0)
    assert await queue_counts(aws, DLQ) == (2, 0, 0)  # released at once, not in 10 minutes


async def test_what_the_source_queue_refuses_is_left_with_its_reason(aws: Aws) -> None:
    url = await aws.queue_url(SOURCE)
    await aws.sqs.set_queue_attributes(QueueUrl=url, Attributes={"MaximumMessageSize": "1024"})
    await dead_letter(aws, "x" * 2000)
    report = await redrive(aws, SOURCE)
    assert report.moved == 0
    assert not report.complete
    [(why, count)] = report.left.items()
    assert count == 1
    assert why.startswith("refused by ingest-render: ")
    assert "shorter than 1024 bytes" in why
    assert "\n" not in str(report)
    assert await queue_counts(aws, DLQ) == (1, 0, 0)


def test_an_unknown_queue_is_one_line_naming_the_known_ones(settings: IngestSettings) -> None:
    result = run_ingest(settings, "dlq", "list", "no-such-queue", check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        'ingest dlq list: no queue named "no-such-queue" (known: ingest-batch, ingest-render,'
        " ingest-render-slow, ingest-preview, ingest-index)\n"
    )


async def test_the_command_prints_the_report_and_exits_1_for_what_it_left(aws: Aws) -> None:
    for i in range(2):
        await dead_letter(aws, f'{{"n": {i}}}')
    limited = run_ingest(aws.settings, "dlq", "redrive", DLQ, "--limit", "1", check=False)
    assert limited.returncode == 1, limited.stderr
    assert limited.stdout == (
        "moved 1 message(s) from ingest-render-dlq to ingest-render; left 1: 1 over the limit"
        " of 1\n"
    )
    rest = run_ingest(aws.settings, "dlq", "redrive", SOURCE, check=False)
    assert rest.returncode == 0, rest.stderr
    assert rest.stdout == "moved 1 message(s) from ingest-render-dlq to ingest-render\n"
