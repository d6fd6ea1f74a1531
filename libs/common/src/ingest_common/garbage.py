"""Objects nothing refers to any more: recorded with the change that orphans them, deleted
later by `sweep`.

Why a table and not a delete on the spot: the row commits in the caller's transaction,
together with the state change that orphaned the object, so an object is never orphaned
without a record, and never deleted while that change could still roll back. Each row is
checked again when swept (its guard, in SQL), so an object that is wanted again (an image
ready again, a mosaic pointed at again) is kept.

A sweeper locks the rows it claims (`FOR UPDATE SKIP LOCKED`) for one short batch — guard,
S3 deletes, bookkeeping — and deletes them in that same transaction. A crash anywhere rolls
it back: the rows stay due and the next sweep deletes again (S3 deletes are idempotent).
Concurrent sweepers skip each other's rows, so every row is swept once.

Rejected uploads are not rows here: their ZIP is tagged, and the uploads bucket's lifecycle
rule (topology.json) expires it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

import asyncpg
import structlog
from botocore.exceptions import ClientError

from ingest_common.aws import Aws
from ingest_common.db.pool import Connection

log = structlog.get_logger("ingest.garbage")

Kind = Literal["renditions", "original", "mosaic"]
KINDS: tuple[Kind, ...] = get_args(Kind)

RENDITIONS_ROOT = "renditions/"
DELETE_BATCH = 1000  # S3's limit for one DeleteObjects call
# A row whose objects S3 refused to delete (denied, throttled, no bucket) waits this long,
# so it does not hold the head of the queue on every sweep.
RETRY_DELAY_SECONDS = 300.0
# S3's error codes for an object (or a version of it) that is not there.
_GONE = frozenset({"404", "NoSuchKey", "NoSuchVersion", "NotFound"})

# The tag the uploads bucket's lifecycle rule expires (topology.json: expire-rejected-uploads).
REJECTED_TAG_KEY, REJECTED_TAG_VALUE = "ingest-outcome", "rejected"


# --- recording -----------------------------------------------------------------------------

_DISCARD = """
INSERT INTO object_garbage (kind, bucket, key, image_id, reason, due_at)
VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
"""


async def discard(
    connection: Connection,
    kind: Kind,
    bucket: str,
    key: str,
    *,
    reason: str,
    image_id: uuid.UUID | None = None,
    delay: float = 0.0,
) -> None:
    """Record an object (or, for `renditions`, a prefix) to delete once `delay` s have passed.

    Call it on the connection and inside the transaction of the change that orphans the
    object, so both commit or neither does.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown garbage kind {kind!r}")
    if kind == "renditions":
        # The guard needs the image, and a bad prefix would delete other images' renditions.
        if image_id is None:
            raise ValueError("renditions garbage needs the image_id its guard checks")
        if key != renditions_prefix(image_id):
            raise ValueError(f"renditions prefix {key!r} is not {renditions_prefix(image_id)!r}")
    elif not key or key.endswith("/"):
        raise ValueError(f"{kind} garbage is one object, not {key!r}")
    await connection.execute(_DISCARD, kind, bucket, key, image_id, reason, max(delay, 0.0))


def renditions_prefix(image_id: uuid.UUID) -> str:
    return f"{RENDITIONS_ROOT}{image_id}/"


async def discard_renditions(
    connection: Connection,
    bucket: str,
    image_id: uuid.UUID,
    *,
    reason: str,
    delay: float = 0.0,
) -> None:
    """Record every rendition of an image (retired or failed) for deletion."""
    await discard(
        connection,
        "renditions",
        bucket,
        renditions_prefix(image_id),
        reason=reason,
        image_id=image_id,
        delay=delay,
    )


async def reclaim(connection: Connection, kind: Kind, bucket: str, key: str) -> int:
    """Withdraw the pending deletions of an object that is about to be wanted again.

    For writers that put the object *before* the state change that makes it wanted (the
    guard alone cannot protect an object written while its row is being swept): call this,
    commit, then write. Deleting the rows waits for a sweep that holds them, so once this
    has committed no sweep deletes what is written next. Returns the rows withdrawn.
    """
    status = await connection.execute(
        "DELETE FROM object_garbage WHERE kind = $1 AND bucket = $2 AND key = $3",
        kind,
        bucket,
        key,
    )
    return int(status.split()[-1])


async def reclaim_renditions(connection: Connection, bucket: str, image_id: uuid.UUID) -> int:
    return await reclaim(connection, "renditions", bucket, renditions_prefix(image_id))


# --- sweeping ------------------------------------------------------------------------------


@dataclass
class KindReport:
    deleted: int = 0  # objects deleted (S3 does not say whether a key was still there)
    kept: int = 0  # rows dropped without deleting: the object is wanted again
    retried: int = 0  # rows left for a later sweep: S3 refused to list or delete


@dataclass
class SweepReport:
    renditions: KindReport = field(default_factory=KindReport)
    original: KindReport = field(default_factory=KindReport)
    mosaic: KindReport = field(default_factory=KindReport)

    def of(self, kind: str) -> KindReport:
        report: KindReport = getattr(self, kind)
        return report

    @property
    def busy(self) -> bool:
        """Whether the sweep found anything to do."""
        return any(r.deleted or r.kept or r.retried for r in (self.of(k) for k in KINDS))

    def summary(self) -> dict[str, dict[str, int]]:
        """Plain data, for a log line or maintenance_runs.summary."""
        return asdict(self)


# The guard of each kind, evaluated when the row is claimed; see migration 0004.
_CLAIM = """
SELECT g.id, g.kind, g.bucket, g.key, g.image_id,
       CASE g.kind
         WHEN 'renditions' THEN EXISTS (
           SELECT 1 FROM images i
            WHERE i.id = g.image_id AND i.status = 'ready' AND i.retired_at IS NULL)
         WHEN 'original' THEN EXISTS (
           SELECT 1 FROM images i WHERE i.original_key = g.key AND i.retired_at IS NULL)
         WHEN 'mosaic' THEN EXISTS (
           SELECT 1 FROM family_previews f WHERE g.key IN (f.png_key, f.webp_key))
         ELSE true
       END AS wanted
  FROM object_garbage g
 WHERE g.due_at <= now() + make_interval(secs => $2)
 ORDER BY g.due_at, g.id
 LIMIT $1
   FOR UPDATE OF g SKIP LOCKED
"""

_FORGET = "DELETE FROM object_garbage WHERE id = ANY($1::bigint[])"
_POSTPONE = """
UPDATE object_garbage SET due_at = now() + make_interval(secs => $2)
 WHERE id = ANY($1::bigint[])
"""


async def sweep(
    aws: Aws, db: asyncpg.Pool, *, limit: int = 1000, batch_size: int = 100, ahead: float = 0.0
) -> SweepReport:
    """Delete the objects of up to `limit` due rows, `batch_size` rows per transaction.

    `ahead` also takes rows due within that many seconds: only for a caller who knows no
    work is in flight (a test's final check), since a delay protects work under way.

    Safe to run in several processes at once. S3 errors on a row's objects postpone that
    row by RETRY_DELAY_SECONDS; any other failure (database or endpoint gone) raises, and
    the rows of the batch in hand stay due.
    """
    report = SweepReport()
    remaining = limit
    while remaining > 0:
        claimed = await _sweep_batch(aws, db, min(batch_size, remaining), report, ahead)
        if claimed == 0:
            break
        remaining -= claimed
    if report.busy:
        log.info("garbage.swept", **report.summary())
    return report


@dataclass
class _Row:
    id: int
    kind: str
    bucket: str
    key: str
    image_id: uuid.UUID | None
    keys: list[str] = field(default_factory=list)  # the objects to delete
    failed: bool = False


async def _sweep_batch(
    aws: Aws, db: asyncpg.Pool, size: int, report: SweepReport, ahead: float
) -> int:
    async with db.acquire() as connection, connection.transaction():
        records = await connection.fetch(_CLAIM, size, ahead)
        doomed = [
            _Row(r["id"], r["kind"], r["bucket"], r["key"], r["image_id"])
            for r in records
            if not r["wanted"]
        ]
        kept = [r for r in records if r["wanted"]]
        for record in kept:
            report.of(record["kind"]).kept += 1

        await _resolve_keys(aws, doomed)
        deleted = await _delete_keys(aws, doomed)

        for row in doomed:
            if row.failed:
                report.of(row.kind).retried += 1
        for kind, count in deleted.items():
            report.of(kind).deleted += count
        done = [r["id"] for r in kept] + [row.id for row in doomed if not row.failed]
        await connection.execute(_FORGET, done)
        postponed = [row.id for row in doomed if row.failed]
        if postponed:
            await connection.execute(_POSTPONE, postponed, RETRY_DELAY_SECONDS)
    return len(records)


async def _resolve_keys(aws: Aws, rows: Sequence[_Row]) -> None:
    """Fill in each row's keys: its one object, or everything under its prefix."""
    slots = asyncio.Semaphore(aws.settings.s3_concurrency)

    async def resolve(row: _Row) -> None:
        if row.kind != "renditions":
            row.keys = [row.key]
            return
        # Never list (and delete) more than the image's own renditions, e.g. a whole bucket.
        if row.image_id is None or row.key != renditions_prefix(row.image_id):
            log.error("garbage.bad_prefix", id=row.id, key=row.key)
            row.failed = True
            return
        async with slots:
            try:
                row.keys = await _list(aws, row.bucket, row.key)
            except ClientError as exc:
                log.warning("garbage.list_failed", id=row.id, key=row.key, error=str(exc))
                row.failed = True

    await asyncio.gather(*(resolve(row) for row in rows))


async def _list(aws: Aws, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    paginator = aws.s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


async def _delete_keys(aws: Aws, rows: Sequence[_Row]) -> dict[str, int]:
    """Delete every key of the rows not already failed, per bucket in batches of 1000.

    Marks a row failed when one of its keys could not be deleted; returns the keys deleted
    per kind (a key named by two rows is deleted, and counted, once).
    """
    owners: dict[str, dict[str, list[_Row]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if not row.failed:
            for key in row.keys:
                owners[row.bucket][key].append(row)
    deleted: dict[str, int] = defaultdict(int)
    for bucket, by_key in owners.items():
        keys = list(by_key)
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            refused = await _delete_batch(aws, bucket, batch)
            for key in batch:
                if key in refused:
                    for row in by_key[key]:
                        row.failed = True
                else:
                    deleted[by_key[key][0].kind] += 1
    return dict(deleted)


async def _delete_batch(aws: Aws, bucket: str, keys: Iterable[str]) -> set[str]:
    """One DeleteObjects call; the keys it did not delete (a missing key is deleted)."""
    objects: list[Any] = [{"Key": key} for key in keys]
    try:
        response = await aws.s3.delete_objects(
            Bucket=bucket, Delete={"Objects": objects, "Quiet": True}
        )
    except ClientError as exc:
        log.warning("garbage.delete_failed", bucket=bucket, keys=len(objects), error=str(exc))
        return {o["Key"] for o in objects}
    refused = {
        error["Key"]: error
        for error in response.get("Errors", [])
        if error.get("Code") not in _GONE and "Key" in error
    }
    if refused:
        first = next(iter(refused.values()))
        log.warning(
            "garbage.delete_refused",
            bucket=bucket,
            keys=len(refused),
            code=first.get("Code"),
            message=first.get("Message"),
        )
    return set(refused)


# --- rejected uploads ----------------------------------------------------------------------


async def tag_rejected_upload(aws: Aws, bucket: str, key: str, *, etag: str | None = None) -> bool:
    """Tag a rejected upload's ZIP `ingest-outcome=rejected`: the uploads bucket's lifecycle
    rule (topology.json) expires it. Returns False if the object is gone (or replaced).

    With `etag` (the upload's), only the version with that ETag is tagged: in a versioned
    bucket a newer upload to the same key must not inherit the verdict, and the rejected
    version, once noncurrent, expires under the noncurrent-version rule anyway. The tag
    set is replaced: ingest owns the tags of uploads/.
    """
    version: dict[str, Any] = {}
    if etag is not None:
        try:
            head = await aws.s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _GONE:
                return False
            raise
        if head["ETag"].strip('"') != etag.strip('"'):
            return False
        if head.get("VersionId") not in (None, "null"):
            version = {"VersionId": head["VersionId"]}
    try:
        tag: Any = {"Key": REJECTED_TAG_KEY, "Value": REJECTED_TAG_VALUE}
        await aws.s3.put_object_tagging(
            Bucket=bucket, Key=key, Tagging={"TagSet": [tag]}, **version
        )
    except ClientError as exc:
        if _code(exc) in _GONE:
            return False
        raise
    return True


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
