"""The AWS topology (buckets with lifecycle and CORS rules, queues with DLQs, S3 → SQS
notifications, SNS topics, EventBridge buses with their rules) as data.

`topology.json` beside this file is the single declaration; `apply` creates it against
any AWS-protocol endpoint (idempotently), and deploy/terraform reads the same file.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import structlog
from botocore.exceptions import ClientError

from ingest_common.aws import Aws
from ingest_common.settings import IngestSettings

log = structlog.get_logger("ingest.topology")

DEFAULT_BUS = "default"  # every account has it; it cannot be created
_RULE_NAME = re.compile(r"[.\-_A-Za-z0-9]{1,64}")  # EventBridge's rule names


@dataclass(frozen=True)
class QueueSpec:
    role: str
    name: str
    dead_letter_name: str
    visibility_timeout: int
    max_receive_count: int
    message_retention: int
    receive_wait_time: int


@dataclass(frozen=True)
class Notification:
    queue_role: str
    events: tuple[str, ...]
    prefix: str
    suffix: str


@dataclass(frozen=True)
class LifecycleRule:
    """One S3 lifecycle rule: objects under `prefix` carrying every tag in `tags`."""

    id: str
    prefix: str
    tags: tuple[tuple[str, str], ...]
    expiration_days: int | None
    abort_incomplete_multipart_days: int | None

    def __post_init__(self) -> None:
        # What S3 would refuse only when the rule is put: fail on loading the file instead.
        if self.expiration_days is None and self.abort_incomplete_multipart_days is None:
            raise ValueError(f"lifecycle rule {self.id!r} has no action")
        if self.tags and self.abort_incomplete_multipart_days is not None:
            raise ValueError(f"lifecycle rule {self.id!r}: S3 aborts uploads by prefix only")


@dataclass(frozen=True)
class CorsRule:
    """One S3 CORS rule: which browser origins may send which methods to the bucket."""

    id: str
    origins: tuple[str, ...]
    methods: tuple[str, ...]
    headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age_seconds: int | None = None

    def __post_init__(self) -> None:
        if not self.origins or not self.methods:
            raise ValueError(f"CORS rule {self.id!r} needs origins and methods")


@dataclass(frozen=True)
class BucketSpec:
    role: str
    name: str
    notifications: tuple[Notification, ...]
    lifecycle: tuple[LifecycleRule, ...] = ()
    cors: tuple[CorsRule, ...] = ()


@dataclass(frozen=True)
class TopicSpec:
    role: str
    name: str


@dataclass(frozen=True)
class RuleSpec:
    """One EventBridge rule of a bus: its event pattern, as the JSON text put_rule takes."""

    name: str
    description: str
    event_pattern: str

    def __post_init__(self) -> None:
        # What EventBridge would refuse only when the rule is put: fail on loading instead.
        if not _RULE_NAME.fullmatch(self.name):
            raise ValueError(f"rule name {self.name!r}: 1-64 of letters, digits, '.', '-', '_'")
        pattern = json.loads(self.event_pattern)
        if not isinstance(pattern, dict) or not pattern:
            raise ValueError(f"rule {self.name!r}: the event pattern must be a non-empty object")

    @property
    def pattern(self) -> dict[str, Any]:
        pattern: dict[str, Any] = json.loads(self.event_pattern)
        return pattern


@dataclass(frozen=True)
class BusSpec:
    role: str
    name: str
    rules: tuple[RuleSpec, ...] = ()


@dataclass(frozen=True)
class Topology:
    buckets: tuple[BucketSpec, ...]
    queues: tuple[QueueSpec, ...]
    dead_letter_retention: int
    topics: tuple[TopicSpec, ...] = ()
    buses: tuple[BusSpec, ...] = ()

    def queue(self, role: str) -> QueueSpec:
        return next(q for q in self.queues if q.role == role)

    def topic(self, role: str) -> TopicSpec:
        return next(t for t in self.topics if t.role == role)

    def bus(self, role: str) -> BusSpec:
        return next(b for b in self.buses if b.role == role)


@functools.cache
def _declaration() -> dict[str, Any]:
    text = resources.files("ingest_common").joinpath("topology.json").read_text()
    declaration: dict[str, Any] = json.loads(text)
    return declaration


def dead_letter_queue(queue: str) -> str:
    """The name of a queue's dead-letter queue."""
    return queue + str(_declaration()["dead_letter"]["suffix"])


def load_topology(settings: IngestSettings) -> Topology:
    """Read topology.json, naming each bucket and queue from its setting."""
    raw = _declaration()
    queues = tuple(
        QueueSpec(
            role=role,
            name=getattr(settings, spec["setting"]),
            dead_letter_name=dead_letter_queue(getattr(settings, spec["setting"])),
            visibility_timeout=spec["visibility_timeout"],
            max_receive_count=spec["max_receive_count"],
            message_retention=spec["message_retention"],
            receive_wait_time=spec["receive_wait_time"],
        )
        for role, spec in raw["queues"].items()
    )
    buckets = tuple(
        BucketSpec(
            role=role,
            name=getattr(settings, spec["setting"]),
            notifications=tuple(
                Notification(n["queue"], tuple(n["events"]), n["prefix"], n.get("suffix", ""))
                for n in spec["notifications"]
            ),
            lifecycle=tuple(_lifecycle_rule(r) for r in spec.get("lifecycle", [])),
            cors=tuple(_cors_rule(r, settings) for r in spec.get("cors", [])),
        )
        for role, spec in raw["buckets"].items()
    )
    topics = tuple(
        TopicSpec(role=role, name=getattr(settings, spec["setting"]))
        for role, spec in raw.get("topics", {}).items()
    )
    buses = tuple(
        BusSpec(
            role=role,
            name=getattr(settings, spec["setting"]),
            rules=tuple(
                RuleSpec(name, rule["description"], json.dumps(rule["pattern"], sort_keys=True))
                for name, rule in spec.get("rules", {}).items()
            ),
        )
        for role, spec in raw.get("buses", {}).items()
    )
    return Topology(buckets, queues, raw["dead_letter"]["message_retention"], topics, buses)


def _lifecycle_rule(raw: dict[str, Any]) -> LifecycleRule:
    return LifecycleRule(
        id=raw["id"],
        prefix=raw.get("prefix", ""),
        tags=tuple(sorted(raw.get("tags", {}).items())),
        expiration_days=raw.get("expiration_days"),
        abort_incomplete_multipart_days=raw.get("abort_incomplete_multipart_days"),
    )


def _cors_rule(raw: dict[str, Any], settings: IngestSettings) -> CorsRule:
    """Origins come from the setting the rule names (INGEST_API_CORS_ORIGINS), else the
    file's defaults."""
    setting = raw.get("origins_setting")
    origins = (getattr(settings, setting) if setting else None) or raw["default_origins"]
    return CorsRule(
        id=raw["id"],
        origins=tuple(origins),
        methods=tuple(raw["methods"]),
        headers=tuple(raw.get("headers", ())),
        expose_headers=tuple(raw.get("expose_headers", ())),
        max_age_seconds=raw.get("max_age_seconds"),
    )


async def apply_topology(aws: Aws, topology: Topology) -> None:
    arns: dict[str, str] = {}
    for queue in topology.queues:
        arns[queue.role] = await _ensure_queue(aws, queue, topology.dead_letter_retention)
    for bucket in topology.buckets:
        await _ensure_bucket(aws, bucket.name)
        await _apply_lifecycle(aws, bucket)
        await _apply_cors(aws, bucket)
        if bucket.notifications:
            await _allow_s3_to_send(aws, bucket, topology, arns)
            await _notify(aws, bucket, arns)
    for topic in topology.topics:
        await aws.sns.create_topic(Name=topic.name)  # idempotent: the same ARN again
    for bus in topology.buses:
        await _ensure_bus(aws, bus)
    log.info(
        "topology.applied",
        queues=len(topology.queues),
        buckets=len(topology.buckets),
        topics=len(topology.topics),
        buses=len(topology.buses),
    )


async def _queue_arn(aws: Aws, url: str) -> str:
    attributes = await aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return attributes["Attributes"]["QueueArn"]


async def _ensure_queue(aws: Aws, queue: QueueSpec, dead_letter_retention: int) -> str:
    dlq = await aws.sqs.create_queue(
        QueueName=queue.dead_letter_name,
        Attributes={"MessageRetentionPeriod": str(dead_letter_retention)},
    )
    dlq_arn = await _queue_arn(aws, dlq["QueueUrl"])
    attributes: dict[Any, str] = {
        "VisibilityTimeout": str(queue.visibility_timeout),
        "MessageRetentionPeriod": str(queue.message_retention),
        "ReceiveMessageWaitTimeSeconds": str(queue.receive_wait_time),
        "RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(queue.max_receive_count)}
        ),
    }
    try:
        created = await aws.sqs.create_queue(QueueName=queue.name, Attributes=attributes)
        url = created["QueueUrl"]
    except ClientError as exc:
        # An existing queue with other attributes: bring it to the declared state.
        if exc.response["Error"]["Code"] not in ("QueueAlreadyExists", "QueueNameExists"):
            raise
        url = await aws.queue_url(queue.name)
    await aws.sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return await _queue_arn(aws, url)


async def _ensure_bucket(aws: Aws, name: str) -> None:
    try:
        kwargs: dict[str, Any] = {"Bucket": name}
        if aws.settings.aws_region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": aws.settings.aws_region}
        await aws.s3.create_bucket(**kwargs)
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


async def _apply_lifecycle(aws: Aws, bucket: BucketSpec) -> None:
    """Make the bucket's lifecycle configuration exactly the declared rules (S3 keeps one
    configuration per bucket: putting it replaces every rule)."""
    if not bucket.lifecycle:
        await aws.s3.delete_bucket_lifecycle(Bucket=bucket.name)
        return
    rules: list[Any] = []
    for rule in bucket.lifecycle:
        tags = [{"Key": key, "Value": value} for key, value in rule.tags]
        entry: dict[str, Any] = {
            "ID": rule.id,
            "Status": "Enabled",
            # S3's filter: a prefix alone, or a prefix and tags together under "And".
            "Filter": {"And": {"Prefix": rule.prefix, "Tags": tags}}
            if tags
            else {"Prefix": rule.prefix},
        }
        if rule.expiration_days is not None:
            entry["Expiration"] = {"Days": rule.expiration_days}
        if rule.abort_incomplete_multipart_days is not None:
            entry["AbortIncompleteMultipartUpload"] = {
                "DaysAfterInitiation": rule.abort_incomplete_multipart_days
            }
        rules.append(entry)
    await aws.s3.put_bucket_lifecycle_configuration(
        Bucket=bucket.name, LifecycleConfiguration={"Rules": rules}
    )


async def _apply_cors(aws: Aws, bucket: BucketSpec) -> None:
    """Make the bucket's CORS configuration exactly the declared rules (or none)."""
    if not bucket.cors:
        await aws.s3.delete_bucket_cors(Bucket=bucket.name)
        return
    rules: list[Any] = []
    for rule in bucket.cors:
        entry: dict[str, Any] = {
            "ID": rule.id,
            "AllowedOrigins": list(rule.origins),
            "AllowedMethods": list(rule.methods),
            "AllowedHeaders": list(rule.headers),
            "ExposeHeaders": list(rule.expose_headers),
        }
        if rule.max_age_seconds is not None:
            entry["MaxAgeSeconds"] = rule.max_age_seconds
        rules.append(entry)
    await aws.s3.put_bucket_cors(Bucket=bucket.name, CORSConfiguration={"CORSRules": rules})


async def _allow_s3_to_send(
    aws: Aws, bucket: BucketSpec, topology: Topology, arns: dict[str, str]
) -> None:
    for role in {n.queue_role for n in bucket.notifications}:
        url = await aws.queue_url(topology.queue(role).name)
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "s3.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": arns[role],
                    "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{bucket.name}"}},
                }
            ],
        }
        await aws.sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})


async def _notify(aws: Aws, bucket: BucketSpec, arns: dict[str, str]) -> None:
    configurations: list[Any] = []
    for n in bucket.notifications:
        rules = [{"Name": "prefix", "Value": n.prefix}]
        if n.suffix:
            rules.append({"Name": "suffix", "Value": n.suffix})
        configurations.append(
            {
                "Id": f"{bucket.role}-to-{n.queue_role}",
                "QueueArn": arns[n.queue_role],
                "Events": list(n.events),
                "Filter": {"Key": {"FilterRules": rules}},
            }
        )
    await aws.s3.put_bucket_notification_configuration(
        Bucket=bucket.name, NotificationConfiguration={"QueueConfigurations": configurations}
    )


async def _ensure_bus(aws: Aws, bus: BusSpec) -> None:
    if bus.name != DEFAULT_BUS:
        try:
            await aws.events.create_event_bus(Name=bus.name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceAlreadyExistsException":
                raise
    for rule in bus.rules:
        # put_rule creates or updates: an existing rule is brought to the declared state.
        await aws.events.put_rule(
            Name=rule.name,
            EventBusName=bus.name,
            EventPattern=rule.event_pattern,
            Description=rule.description,
            State="ENABLED",
        )
