"""`ingest dlq list|redrive QUEUE`: see what landed in a dead-letter queue, and replay it.

QUEUE is a service queue (`ingest-render`) or its dead-letter queue (`ingest-render-dlq`).
Both commands read the DLQ once: a message read in this run stays hidden until the run
ends (and its id is remembered, should SQS deliver it again), then whatever is still in
the DLQ is made visible again. Listing moves nothing.

Redrive sends each dead letter back to its queue with its original attributes (and so its
trace context; our failure attributes are dropped) and deletes it from the DLQ only after
the send succeeded. It never moves what arrived after it started: a message it sends back
that fails again lands in the DLQ with a later SentTimestamp, and is left for the next run
instead of going round in a loop. (moto has no StartMessageMoveTask, so this is a loop.)
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from botocore.exceptions import BotoCoreError, ClientError
from ingest_common.aws import SQS_BATCH, Aws
from ingest_common.dead_letters import dead_letter_reason, original_attributes
from ingest_common.settings import IngestSettings
from ingest_common.topology import load_topology

if TYPE_CHECKING:
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

# A message read in this run stays hidden this long, renewed while the run lasts; if the
# command dies, what it held is visible again at most this long after.
_VISIBILITY = 600
_RENEW_AFTER = 120  # far below _VISIBILITY: one loop round (a few SQS calls) fits many times
_IDLE_WAIT = 1  # seconds of long poll that find nothing: the DLQ has been read through
# SendMessageBatch refuses a batch over 256 KiB in all (bodies and attributes).
_BATCH_BYTES = 256 * 1024

AFTER_START = "dead-lettered after this redrive started (run it again to move them)"


class UnknownQueue(Exception):
    def __init__(self, queue: str, known: list[str]) -> None:
        super().__init__(f'no queue named "{queue}" (known: {", ".join(known)})')


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, Any]
    sent_ms: int  # SentTimestamp: SQS's clock, milliseconds
    receive_count: int

    @classmethod
    def from_sqs(cls, raw: MessageTypeDef) -> DeadLetter:
        system = raw.get("Attributes", {})
        return cls(
            message_id=raw["MessageId"],
            receipt_handle=raw["ReceiptHandle"],
            body=raw["Body"],
            attributes=dict(raw.get("MessageAttributes", {})),
            sent_ms=int(system.get("SentTimestamp", "0")),
            receive_count=int(system.get("ApproximateReceiveCount", "1")),
        )

    @property
    def sent_at(self) -> datetime:
        return datetime.fromtimestamp(self.sent_ms / 1000, UTC)

    @property
    def reason(self) -> str:
        return dead_letter_reason(self.attributes) or (
            "moved here by SQS's redrive policy after repeated failed deliveries"
        )

    @property
    def original_attributes(self) -> dict[str, Any]:
        return original_attributes(self.attributes)


def queue_pair(queue: str, settings: IngestSettings) -> tuple[str, str]:
    """(source queue, dead-letter queue) for either name or the queue's role in
    topology.json (`render`, `render-slow` or `render_slow`); UnknownQueue for any other."""
    specs = load_topology(settings).queues
    for spec in specs:
        if queue in (spec.name, spec.dead_letter_name, spec.role, spec.role.replace("_", "-")):
            return spec.name, spec.dead_letter_name
    raise UnknownQueue(queue, [spec.name for spec in specs])


def describe_error(exc: BaseException) -> str:
    """An AWS error on one line, for a report or the terminal."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Reader:
    """Reads a DLQ through once, holding what it read until the run ends (`async with`)."""

    def __init__(self, aws: Aws, dlq: str) -> None:
        self.aws = aws
        self.dlq = dlq
        self.url = ""  # known once entered
        self.unreleased = 0  # held messages the release failed for (visible again later)
        self._held: dict[str, str] = {}  # message id → latest receipt handle, still in the DLQ
        self._seen: set[str] = set()
        self._renewed_at = time.monotonic()

    async def __aenter__(self) -> Self:
        self.url = await self.aws.queue_url(self.dlq)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._release()

    async def receive(self) -> list[DeadLetter] | None:
        """The next messages not read before in this run; None once the DLQ is read through."""
        await self._renew()
        response = await self.aws.sqs.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=SQS_BATCH,
            VisibilityTimeout=_VISIBILITY,
            WaitTimeSeconds=_IDLE_WAIT,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            MessageAttributeNames=["All"],
        )
        messages = response.get("Messages", [])
        if not messages:
            return None
        letters: list[DeadLetter] = []
        for raw in messages:
            letter = DeadLetter.from_sqs(raw)
            seen = letter.message_id in self._seen
            if seen and letter.message_id not in self._held:
                # A copy of one this run already moved (SQS delivers at least once).
                await self.aws.sqs.delete_message(
                    QueueUrl=self.url, ReceiptHandle=letter.receipt_handle
                )
                continue
            self._held[letter.message_id] = letter.receipt_handle  # the newest handle counts
            if not seen:
                self._seen.add(letter.message_id)
                letters.append(letter)
        return letters

    async def delete(self, letters: list[DeadLetter]) -> list[tuple[DeadLetter, str]]:
        """Delete moved letters from the DLQ; return those SQS did not delete, with why."""
        failed: list[tuple[DeadLetter, str]] = []
        for start in range(0, len(letters), SQS_BATCH):
            chunk = letters[start : start + SQS_BATCH]
            entries: list[Any] = [
                {"Id": str(i), "ReceiptHandle": letter.receipt_handle}
                for i, letter in enumerate(chunk)
            ]
            try:
                response = await self.aws.sqs.delete_message_batch(
                    QueueUrl=self.url, Entries=entries
                )
            except (BotoCoreError, ClientError) as exc:
                failed.extend((letter, describe_error(exc)) for letter in chunk)
                continue
            for failure in response.get("Failed", []):
                failed.append((chunk[int(failure["Id"])], _entry_error(failure)))
            for deleted in response.get("Successful", []):
                self._held.pop(chunk[int(deleted["Id"])].message_id, None)
        return failed

    async def _renew(self) -> None:
        if self._held and time.monotonic() - self._renewed_at >= _RENEW_AFTER:
            # A renewal that fails only costs a re-read, which the seen ids make harmless.
            with contextlib.suppress(BotoCoreError, ClientError):
                await self.aws.change_visibility(self.dlq, list(self._held.values()), _VISIBILITY)
            self._renewed_at = time.monotonic()

    async def _release(self) -> None:
        handles = list(self._held.values())
        try:
            self.unreleased = len(await self.aws.change_visibility(self.dlq, handles, 0))
        except (BotoCoreError, ClientError):
            self.unreleased = len(handles)  # hidden until their visibility timeout ends


def _entry_error(entry: Mapping[str, Any]) -> str:
    """The error of one refused entry of a *Batch call."""
    return f"{entry['Code']}: {entry.get('Message', '')}".rstrip(": ")


async def list_dead_letters(aws: Aws, queue: str, limit: int | None = None) -> list[DeadLetter]:
    """Up to `limit` (default all) messages of the queue's DLQ, left where they are."""
    _, dlq = queue_pair(queue, aws.settings)
    letters: list[DeadLetter] = []
    async with _Reader(aws, dlq) as reader:
        while limit is None or len(letters) < limit:
            batch = await reader.receive()
            if batch is None:
                break
            letters.extend(batch)
    return letters if limit is None else letters[:limit]


@dataclass(frozen=True)
class RedriveReport:
    source: str
    dlq: str
    moved: int
    left: dict[str, int] = field(default_factory=dict)  # why → how many, in order met
    stopped: str | None = None  # the error that ended the run before the DLQ was read through
    unreleased: int = 0

    @property
    def left_count(self) -> int:
        return sum(self.left.values())

    @property
    def complete(self) -> bool:
        """Everything eligible moved: all that is left arrived after the redrive started."""
        return self.stopped is None and all(why == AFTER_START for why in self.left)

    def __str__(self) -> str:
        text = f"moved {self.moved} message(s) from {self.dlq} to {self.source}"
        if self.left:
            groups = "; ".join(f"{count} {why}" for why, count in self.left.items())
            text += f"; left {self.left_count}: {groups}"
        if self.stopped:
            text += f"; stopped before the end of {self.dlq}: {self.stopped}"
        if self.unreleased:
            text += (
                f"; {self.unreleased} stay hidden in {self.dlq} for up to"
                f" {_VISIBILITY // 60} minutes (making them visible again failed)"
            )
        return text


async def redrive(aws: Aws, queue: str, limit: int | None = None) -> RedriveReport:
    """Move every dead letter that was there when this started (at most `limit`) back."""
    source, dlq = queue_pair(queue, aws.settings)
    source_url = await aws.queue_url(source)
    # SentTimestamp is SQS's clock, this is ours: NTP-synchronised hosts agree far closer
    # than a message can go to the source queue, fail and come back.
    started_ms = int(time.time() * 1000)
    moved, left, stopped = 0, Counter[str](), None
    async with _Reader(aws, dlq) as reader:
        try:
            while (batch := await reader.receive()) is not None:
                # At or before the start: one sent in the very millisecond the run began is
                # older than anything the run itself sent back.
                eligible = [letter for letter in batch if letter.sent_ms <= started_ms]
                if len(eligible) < len(batch):
                    left[AFTER_START] += len(batch) - len(eligible)
                room = len(eligible) if limit is None else max(0, limit - moved)
                if len(eligible) > room:
                    # Read on all the same, so the report counts what is left exactly.
                    left[f"over the limit of {limit}"] += len(eligible) - room
                if eligible[:room]:
                    done, refused = await _move(aws, reader, source, source_url, eligible[:room])
                    moved += done
                    left.update(refused)
        except (BotoCoreError, ClientError) as exc:
            stopped = describe_error(exc)
    return RedriveReport(source, dlq, moved, dict(left), stopped, reader.unreleased)


async def _move(
    aws: Aws, reader: _Reader, source: str, source_url: str, letters: list[DeadLetter]
) -> tuple[int, Counter[str]]:
    """Send `letters` to the source queue, then delete what was sent; (moved, left by why)."""
    left = Counter[str]()
    sent: list[DeadLetter] = []
    for chunk in _chunks(letters):
        entries: list[Any] = [
            {"Id": str(i), "MessageBody": letter.body, "MessageAttributes": attributes}
            for i, (letter, attributes) in enumerate(chunk)
        ]
        try:
            response = await aws.sqs.send_message_batch(QueueUrl=source_url, Entries=entries)
        except (BotoCoreError, ClientError) as exc:
            left[f"refused by {source}: {describe_error(exc)}"] += len(chunk)
            continue
        for failure in response.get("Failed", []):
            left[f"refused by {source}: {_entry_error(failure)}"] += 1
        ok = {int(entry["Id"]) for entry in response.get("Successful", [])}
        sent.extend(letter for i, (letter, _) in enumerate(chunk) if i in ok)
    # Sent but not deleted: in both queues, and a later redrive sends it again (every
    # handler is idempotent); said so, because the copy is a surprise otherwise.
    not_deleted = await reader.delete(sent)
    for _, error in not_deleted:
        left[f"sent to {source} but still in {reader.dlq} ({error})"] += 1
    return len(sent) - len(not_deleted), left


def _chunks(letters: list[DeadLetter]) -> list[list[tuple[DeadLetter, dict[str, Any]]]]:
    """Batches for SendMessageBatch: at most 10 entries and 256 KiB each."""
    chunks: list[list[tuple[DeadLetter, dict[str, Any]]]] = []
    size = 0
    for letter in letters:
        attributes = letter.original_attributes
        letter_size = _size(letter.body, attributes)
        if not chunks or len(chunks[-1]) == SQS_BATCH or size + letter_size > _BATCH_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append((letter, attributes))
        size += letter_size
    return chunks


def _size(body: str, attributes: dict[str, Any]) -> int:
    """A message's size as SQS counts it: body, and each attribute's name, type and value."""
    total = len(body.encode())
    for name, value in attributes.items():
        total += len(name.encode()) + len(str(value["DataType"]).encode())
        total += len(str(value.get("StringValue", "")).encode())
        total += len(value.get("BinaryValue", b""))
    return total


def dead_letter_json(letter: DeadLetter) -> dict[str, Any]:
    """One dead letter for `ingest dlq list --json`; the body parsed when it is JSON."""
    try:
        body: Any = json.loads(letter.body)
    except ValueError:
        body = letter.body
    return {
        "message_id": letter.message_id,
        "sent_at": letter.sent_at.isoformat(),
        "receive_count": letter.receive_count,
        "reason": letter.reason,
        "attributes": {
            name: value["StringValue"]
            if "StringValue" in value
            else base64.b64encode(value.get("BinaryValue", b"")).decode()
            for name, value in letter.attributes.items()
        },
        "body": body,
    }


def format_dead_letter(letter: DeadLetter, width: int = 1000) -> str:
    body = letter.body if len(letter.body) <= width else letter.body[: width - 1] + "…"
    return (
        f"{letter.message_id}  sent {letter.sent_at:%Y-%m-%d %H:%M:%S}Z  "
        f"received {letter.receive_count}×  "
        f"{len(letter.original_attributes)} original attribute(s)\n"
        f"    reason: {letter.reason}\n    body:   {body}"
    )
