"""Reconciliation: re-announce uploads whose S3 event never reached the batcher.

An upload whose ObjectCreated event is lost (a notification misconfigured or removed, an
event dead-lettered before its upload was recorded, a queue purged) would be lost with it.
So every object under `uploads/` with no `uploads` row for its (key, ETag), and old enough
that its own event cannot still be on its way, is announced again with an event built as
S3 builds it; the batcher handles it like any other, and decides whether the key is a
valid upload. That is safe because the batcher is idempotent: a late event is a duplicate.

The bucket is read a page (1000 keys) at a time and each page is checked with one query,
so memory stays flat however many objects the bucket holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import quote_plus

import asyncpg
import structlog
from ingest_common.aws import Aws
from ingest_common.telemetry.tracing import tracer

from ingest_batcher.settings import BatcherSettings

if TYPE_CHECKING:
    from types_aiobotocore_s3.type_defs import ObjectTypeDef

log = structlog.get_logger("ingest.batcher")

UPLOADS_PREFIX = "uploads/"
PAGE_SIZE = 1000  # ListObjectsV2's largest page
KEYS_SHOWN = 20  # re-announced keys a report names; the count covers the rest

# Which of a page's (key, ETag) pairs have an upload row. ETags are compared unquoted:
# ListObjectsV2 quotes them, S3 events (and so the rows) do not.
_RECORDED = """
SELECT o.key, o.etag
  FROM unnest($2::text[], $3::text[]) AS o (key, etag)
 WHERE EXISTS (SELECT 1 FROM uploads u
                WHERE u.bucket = $1 AND u.object_key = o.key AND btrim(u.etag, '"') = o.etag)
"""


@dataclass
class ReconcileReport:
    """What one run found; `listed` = `recorded` + `too_recent` + `reannounced`."""

    grace: float
    dry_run: bool
    pages: int = 0
    listed: int = 0
    recorded: int = 0
    too_recent: int = 0  # no row yet, but younger than the grace: left to their own event
    reannounced: int = 0  # in a dry run: would have been
    reannounced_keys: list[str] = field(default_factory=list)  # the first KEYS_SHOWN


async def reconcile(
    aws: Aws,
    db: asyncpg.Pool,
    settings: BatcherSettings,
    *,
    grace: float,
    dry_run: bool = False,
) -> ReconcileReport:
    """Send the batch queue an S3 event for every upload that has none recorded.

    An object is re-announced if it has no `uploads` row for its key and ETag and was last
    modified more than `grace` seconds ago. `dry_run` counts and names them, sends nothing.

    Raises what S3, PostgreSQL or `Aws.send_bodies` (RetryableError) raise. The events sent
    before the failure stay sent; the next run finds the rest.
    """
    report = ReconcileReport(grace=grace, dry_run=dry_run)
    bucket = settings.uploads_bucket
    # One cutoff for the whole run: an object listed late in a long run is judged by the
    # same rule as the first, and never younger than `grace` when re-announced.
    cutoff = datetime.now(UTC) - timedelta(seconds=grace)
    with tracer().start_as_current_span(
        "reconcile uploads",
        attributes={"ingest.bucket": bucket, "ingest.grace": grace, "ingest.dry_run": dry_run},
    ) as span:
        try:
            paginator = aws.s3.get_paginator("list_objects_v2")
            pages = paginator.paginate(
                Bucket=bucket, Prefix=UPLOADS_PREFIX, PaginationConfig={"PageSize": PAGE_SIZE}
            )
            async for page in pages:
                await _reconcile_page(aws, db, settings, page.get("Contents", []), cutoff, report)
        except Exception as exc:
            log.warning("batcher.reconcile_failed", error=repr(exc), **_counts(report))
            raise
        span.set_attributes({f"ingest.{name}": value for name, value in _counts(report).items()})
    log.info("batcher.reconciled", **_counts(report))
    return report


async def _reconcile_page(
    aws: Aws,
    db: asyncpg.Pool,
    settings: BatcherSettings,
    objects: list[ObjectTypeDef],
    cutoff: datetime,
    report: ReconcileReport,
) -> None:
    bucket = settings.uploads_bucket
    report.pages += 1
    report.listed += len(objects)
    pairs = [(o["Key"], o["ETag"].strip('"')) for o in objects]
    rows = await db.fetch(_RECORDED, bucket, [k for k, _ in pairs], [e for _, e in pairs])
    recorded = {(row["key"], row["etag"]) for row in rows}
    bodies: list[str] = []
    for (key, etag), listed in zip(pairs, objects, strict=True):
        if (key, etag) in recorded:
            report.recorded += 1
        elif listed["LastModified"] > cutoff:
            report.too_recent += 1
        else:
            report.reannounced += 1
            if len(report.reannounced_keys) < KEYS_SHOWN:
                report.reannounced_keys.append(key)
            bodies.append(
                s3_event_body(
                    bucket=bucket,
                    region=settings.aws_region,
                    key=key,
                    size=listed["Size"],
                    etag=etag,
                    last_modified=listed["LastModified"],
                )
            )
    if bodies and not report.dry_run:
        await aws.send_bodies(settings.batch_queue, bodies)


def s3_event_body(
    *, bucket: str, region: str, key: str, size: int, etag: str, last_modified: datetime
) -> str:
    """The ObjectCreated:Put event S3 sends for this object, one record, as JSON."""
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": _iso_milliseconds(last_modified),
        "eventName": "ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            # S3 URL-encodes keys with '+' for spaces and keeps '/' (decoded_key undoes it).
            "object": {"key": quote_plus(key, safe="/"), "size": size, "eTag": etag},
        },
    }
    return json.dumps({"Records": [record]})


def _iso_milliseconds(moment: datetime) -> str:
    """2024-05-01T12:00:00.000Z, the form of S3's eventTime."""
    utc = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _counts(report: ReconcileReport) -> dict[str, float | int | bool]:
    return {
        "listed": report.listed,
        "recorded": report.recorded,
        "too_recent": report.too_recent,
        "reannounced": report.reannounced,
        "pages": report.pages,
        "grace": report.grace,
        "dry_run": report.dry_run,
    }
