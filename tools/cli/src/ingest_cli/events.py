"""`ingest events tail`: watch the domain events as they are published.

The events topic (INGEST_EVENTS_TOPIC) fans out to its subscribers; for a while, this makes
the terminal one of them. It creates a queue of its own, `ingest-events-tail-<random>`,
that only the events topic may send to, subscribes it with raw delivery (a message body is
the event's JSON exactly as published) and, with --type, a filter policy on the `type`
message attribute, so that SNS drops the other events before they cost a receive. It
long-polls and prints each event as it arrives, until Ctrl-C, --count or --timeout, then
unsubscribes and deletes the queue, whichever way it ends. Only a SIGKILL leaves them
behind: look for queues named ingest-events-tail-*.
"""

from __future__ import annotations

import argparse
import json
import math
import secrets
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from ingest_cli.settings import CliSettings

if TYPE_CHECKING:
    from ingest_common.aws import Aws

QUEUE_PREFIX = "ingest-events-tail-"
SUMMARY_WIDTH = 100  # characters of an event's data shown on its line
_REMEMBERED_IDS = 10_000  # SNS delivers at least once: repeats within these are not shown


def add_events_command(commands: Any) -> None:
    """Register `ingest events tail` on `ingest`'s subparsers."""
    events = commands.add_parser("events", help="watch the domain events")
    actions = events.add_subparsers(dest="events_action", required=True)
    tail = actions.add_parser(
        "tail",
        help="print the domain events as they are published, until Ctrl-C",
        description="Subscribe a temporary queue to the events topic and print each event as "
        "it arrives: time, type, subject and a summary of its data, or the whole JSON "
        "envelope with --json. The queue and its subscription are removed on exit.",
    )
    tail.add_argument("--json", action="store_true", help="print each event's JSON, one a line")
    tail.add_argument(
        "--type",
        dest="types",
        action="append",
        metavar="TYPE",
        help="only events of this type (repeatable); a trailing * matches a prefix, e.g. "
        "'product.*'",
    )
    tail.add_argument("--count", type=_positive_int, metavar="N", help="stop after N events")
    tail.add_argument(
        "--timeout", type=_seconds, metavar="SECONDS", help="stop after this long, events or not"
    )
    tail.set_defaults(run=cmd_events_tail)


async def cmd_events_tail(args: argparse.Namespace, settings: CliSettings) -> int:
    from ingest_common.aws import Aws, UnknownTopic

    try:
        async with Aws(settings) as aws:
            topic_arn = await aws.topic_arn(settings.events_topic)
            async with EventTap(aws, topic_arn, args.types or ()) as tap:
                print(
                    f"listening to {settings.events_topic} through queue {tap.queue}"
                    + (f" (types: {', '.join(args.types)})" if args.types else "")
                    + "; Ctrl-C stops",
                    file=sys.stderr,
                    flush=True,
                )
                emit = _emit_json if args.json else _emit_line
                shown = await tap.follow(emit, count=args.count, seconds=args.timeout)
    except UnknownTopic:
        print(
            f"ingest events tail: no SNS topic {settings.events_topic!r} (INGEST_EVENTS_TOPIC):"
            " run `ingest bootstrap`, or check the region and the credentials",
            file=sys.stderr,
        )
        return 2
    # Any other AWS error (unreachable, no credentials): one line from ingest_cli.errors.
    if args.count is not None and shown < args.count:
        print(f"{shown} of {args.count} event(s) within {args.timeout:g} s", file=sys.stderr)
        return 1
    return 0


class EventTap:
    """A temporary queue subscribed to the events topic, removed on exit (`async with`)."""

    def __init__(self, aws: Aws, topic_arn: str, types: Sequence[str] = ()) -> None:
        self.aws = aws
        self.topic_arn = topic_arn
        self.types = tuple(types)
        self.queue = QUEUE_PREFIX + secrets.token_hex(6)
        self.url = ""
        self.subscription_arn = ""
        self._seen: deque[str] = deque(maxlen=_REMEMBERED_IDS)

    async def __aenter__(self) -> Self:
        sqs = self.aws.sqs
        try:
            self.url = (await sqs.create_queue(QueueName=self.queue))["QueueUrl"]
            queue_arn = (
                await sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])
            )["Attributes"]["QueueArn"]
            policy = topic_may_send(queue_arn, self.topic_arn)
            await sqs.set_queue_attributes(
                QueueUrl=self.url, Attributes={"Policy": json.dumps(policy)}
            )
            attributes = {"RawMessageDelivery": "true"}
            if self.types:
                attributes["FilterPolicy"] = json.dumps(filter_policy(self.types))
            subscribed = await self.aws.sns.subscribe(
                TopicArn=self.topic_arn,
                Protocol="sqs",
                Endpoint=queue_arn,
                Attributes=attributes,
                ReturnSubscriptionArn=True,
            )
            self.subscription_arn = subscribed["SubscriptionArn"]
        except BaseException:
            await self._remove()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Also after Ctrl-C: the first interrupt cancels the command once, so these awaits run.
        await self._remove()

    async def _remove(self) -> None:
        """Unsubscribe first (SNS would go on trying a deleted queue), then delete the queue;
        say what could not be removed rather than hide the error that got us here."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self.subscription_arn:
            try:
                await self.aws.sns.unsubscribe(SubscriptionArn=self.subscription_arn)
                self.subscription_arn = ""
            except (BotoCoreError, ClientError) as exc:
                print(f"could not unsubscribe {self.subscription_arn}: {exc}", file=sys.stderr)
        if self.url:
            try:
                await self.aws.sqs.delete_queue(QueueUrl=self.url)
                self.url = ""
            except (BotoCoreError, ClientError) as exc:
                print(f"could not delete queue {self.queue}: {exc}", file=sys.stderr)

    async def follow(
        self,
        emit: Callable[[str], None],
        *,
        count: int | None = None,
        seconds: float | None = None,
    ) -> int:
        """Pass each event's body to `emit` until `count` events or `seconds` have passed;
        return how many were passed (a repeated delivery of an event is passed once)."""
        deadline = None if seconds is None else time.monotonic() + seconds
        longest = max(1, self.aws.settings.receive_wait_seconds)  # within the read timeout
        shown = 0
        while count is None or shown < count:
            wait = longest
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                wait = min(wait, math.ceil(remaining))
            response = await self.aws.sqs.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=wait
            )
            messages = response.get("Messages", [])
            for message in messages:
                body = message["Body"]
                if self._repeated(body) or (count is not None and shown >= count):
                    continue
                emit(body)
                shown += 1
            if messages:
                await self.aws.sqs.delete_message_batch(
                    QueueUrl=self.url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(messages)
                    ],
                )
        return shown

    def _repeated(self, body: str) -> bool:
        event_id = _event(body).get("id")
        if not isinstance(event_id, str):
            return False
        if event_id in self._seen:
            return True
        self._seen.append(event_id)
        return False


def topic_may_send(queue_arn: str, topic_arn: str) -> dict[str, Any]:
    """The queue policy that lets the topic (and nothing else) deliver to the queue."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "EventsTopic",
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
            }
        ],
    }


def filter_policy(types: Sequence[str]) -> dict[str, Any]:
    """An SNS filter policy on the `type` message attribute; `product.*` is a prefix."""
    values: list[Any] = [
        {"prefix": t.removesuffix("*")} if t.endswith("*") else t for t in dict.fromkeys(types)
    ]
    return {"type": values}


def format_event(body: str) -> str:
    """One line: time, type, subject, and the event's data in short."""
    event = _event(body)
    if not event:
        return f"(not an event) {_shorten(body, SUMMARY_WIDTH)}"
    data = event.get("data")
    summary = summarize(data) if isinstance(data, dict) else _shorten(json.dumps(data), 40)
    fields = [str(event.get(k, "-")) for k in ("time", "type", "subject")]
    return f"{fields[0]}  {fields[1]:<24} {fields[2]}  {summary}".rstrip()


def summarize(data: dict[str, Any]) -> str:
    """`key=value ...` of the data's fields: lists by their length, objects as {…}."""
    parts = []
    for key, value in data.items():
        if isinstance(value, list):
            shown = f"[{len(value)}]"
        elif isinstance(value, dict):
            shown = "{…}"
        elif isinstance(value, str):
            shown = _shorten(value, 40)
        else:
            shown = json.dumps(value)
        parts.append(f"{key}={shown}")
    return _shorten(" ".join(parts), SUMMARY_WIDTH)


def _event(body: str) -> dict[str, Any]:
    try:
        event = json.loads(body)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _emit_line(body: str) -> None:
    print(format_event(body), flush=True)  # flushed: a pipe sees each event as it comes


def _emit_json(body: str) -> None:
    # One event a line, as published; a body that spans lines is compacted (same JSON).
    if "\n" in body and _event(body):
        body = json.dumps(json.loads(body), ensure_ascii=False, separators=(",", ":"))
    print(body, flush=True)


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number ≥ 1")
    return number


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds > 0")
    return seconds
