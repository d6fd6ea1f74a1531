"""`ingest dlq list|redrive QUEUE`: see what landed in a dead-letter queue, and replay it.

QUEUE is a service queue (`ingest-render`) or its dead-letter queue (`ingest-render-dlq`).
Listing does not consume: messages are hidden only while being read, then made visible
again. Redrive sends each message back to its queue with its attributes (and so its
trace context) and deletes it from the DLQ only after the send succeeded.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ingest_common.aws import SQS_BATCH, Aws
from ingest_common.runtime.consumer import Delivery
from ingest_common.topology import dead_letter_queue

# The runtime's own bookkeeping attributes; they describe the failure, not the message.
_FAILURE_ATTRIBUTES = ("ingest-error", "ingest-source-queue")
_READ_VISIBILITY = 30


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, Any]
    sent_at: datetime
    receive_count: int

    @property
    def reason(self) -> str:
        error = self.attributes.get("ingest-error", {}).get("StringValue")
        if error:
            return str(error)
        return "moved here by SQS's redrive policy after repeated failed deliveries"


def queue_pair(queue: str) -> tuple[str, str]:
    """(source queue, dead-letter queue) for either name."""
    suffix = dead_letter_queue("")
    if queue.endswith(suffix):
        return queue.removesuffix(suffix), queue
    return queue, dead_letter_queue(queue)


async def read_dead_letters(aws: Aws, dlq: str, limit: int) -> list[DeadLetter]:
    url = await aws.queue_url(dlq)
    found: dict[str, DeadLetter] = {}
    while len(found) < limit:
        response = await aws.sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=min(SQS_BATCH, limit - len(found)),
            VisibilityTimeout=_READ_VISIBILITY,
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            break
        for raw in messages:
            delivery = Delivery.from_sqs(dict(raw))
            found[delivery.message_id] = DeadLetter(
                message_id=delivery.message_id,
                receipt_handle=delivery.receipt_handle,
                body=delivery.body,
                attributes=dict(delivery.attributes),
                sent_at=datetime.fromtimestamp(delivery.sent_at, UTC),
                receive_count=delivery.receive_count,
            )
    return list(found.values())


async def release(aws: Aws, dlq: str, letters: list[DeadLetter]) -> None:
    await aws.change_visibility(dlq, [letter.receipt_handle for letter in letters], 0)


async def list_dead_letters(aws: Aws, queue: str, limit: int) -> list[DeadLetter]:
    _, dlq = queue_pair(queue)
    letters = await read_dead_letters(aws, dlq, limit)
    await release(aws, dlq, letters)
    return letters


async def redrive(aws: Aws, queue: str, limit: int) -> int:
    """Move up to `limit` messages back to the source queue; return how many moved."""
    source, dlq = queue_pair(queue)
    source_url, dlq_url = await asyncio.gather(aws.queue_url(source), aws.queue_url(dlq))
    moved = 0
    while moved < limit:
        letters = await read_dead_letters(aws, dlq, min(SQS_BATCH, limit - moved))
        if not letters:
            break
        entries: list[Any] = [
            {
                "Id": str(i),
                "MessageBody": letter.body,
                "MessageAttributes": {
                    k: v for k, v in letter.attributes.items() if k not in _FAILURE_ATTRIBUTES
                },
            }
            for i, letter in enumerate(letters)
        ]
        response = await aws.sqs.send_message_batch(QueueUrl=source_url, Entries=entries)
        sent = {int(entry["Id"]) for entry in response.get("Successful", [])}
        done = [letter for i, letter in enumerate(letters) if i in sent]
        if done:
            await aws.sqs.delete_message_batch(
                QueueUrl=dlq_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": d.receipt_handle} for i, d in enumerate(done)
                ],
            )
        await release(aws, dlq, [letter for i, letter in enumerate(letters) if i not in sent])
        moved += len(done)
        if len(done) < len(letters):
            break  # the source refused some: stop rather than spin
    return moved


def format_dead_letter(letter: DeadLetter, width: int = 1000) -> str:
    body = letter.body if len(letter.body) <= width else letter.body[: width - 1] + "…"
    return (
        f"{letter.message_id}  sent {letter.sent_at:%Y-%m-%d %H:%M:%S}Z  "
        f"received {letter.receive_count}×\n    reason: {letter.reason}\n    body:   {body}"
    )
