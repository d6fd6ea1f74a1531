"""Reconciliation: uploads whose S3 event was lost are announced again and ingested."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import structlog
from ingest_batcher import reconcile as reconcile_module
from ingest_batcher.reconcile import ReconcileReport, reconcile, s3_event_body
from ingest_batcher.settings import BatcherSettings
from ingest_cli.main import build_parser
from ingest_cli.reconcile import format_report, run_reconcile
from ingest_cli.settings import CliSettings
from ingest_common import ids
from ingest_common.aws import Aws
from ingest_common.schemas.s3_event import S3Event
from ingest_common.settings import IngestSettings
from ingest_common.telemetry.tracing import carrier_from_sqs, span_context_of, tracer
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.integration.pipeline import (
    Pipeline,
    make_zip,
    manifest,
    mdi_set,
    put_upload,
    queue_counts,
    settings_from,
    svgs,
    upload_folder,
    upload_row,
)

# Spaces, '+', '%' and non-ASCII: everything S3's URL-encoding of event keys touches.
ODD_NAME = "Été 2024 + 100% ünïcode set.zip"


def batcher(aws: Aws) -> BatcherSettings:
    return settings_from(BatcherSettings, aws.settings)


async def lose_events(aws: Aws) -> None:
    """From now on S3 announces nothing: every upload's event is lost."""
    await aws.s3.put_bucket_notification_configuration(
        Bucket=aws.settings.uploads_bucket, NotificationConfiguration={}
    )
    # The batch queue may hold S3's s3:TestEvent, sent when the notification was set up.
    for message in await batch_messages(aws, None):
        assert S3Event.model_validate_json(message["Body"]).is_test_event


async def batch_messages(aws: Aws, expected: int | None) -> list[Any]:
    """Take every message out of the batch queue; there must be `expected` (None: any)."""
    url = await aws.queue_url(aws.settings.batch_queue)
    received: list[Any] = []
    while True:
        response = await aws.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=1
        )
        if not (messages := response.get("Messages", [])):
            break
        received.extend(messages)
        await aws.sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )
    assert expected is None or len(received) == expected
    return received


def reconciled_log_lines(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [line for line in logs if line["event"] == "batcher.reconciled"]


def batch_size(span: ReadableSpan) -> int:
    count = (span.attributes or {})["messaging.batch.message_count"]
    assert isinstance(count, int)
    return count


# --- the event body --------------------------------------------------------------------


def test_event_body_is_what_s3_sends_and_gives_the_key_back() -> None:
    key = f"uploads/acme/{ODD_NAME}"
    modified = datetime(2025, 3, 4, 5, 6, 7, 891234, tzinfo=UTC)
    body = s3_event_body(
        bucket="ingest-uploads",
        region="eu-west-1",
        key=key,
        size=1234,
        etag="0123456789abcdef",
        last_modified=modified,
    )

    [raw] = json.loads(body)["Records"]
    assert raw["eventVersion"] == "2.1"
    assert raw["eventSource"] == "aws:s3"
    assert raw["awsRegion"] == "eu-west-1"
    assert raw["eventTime"] == "2025-03-04T05:06:07.891Z"
    assert raw["s3"]["s3SchemaVersion"] == "1.0"
    assert raw["s3"]["bucket"] == {"name": "ingest-uploads", "arn": "arn:aws:s3:::ingest-uploads"}
    # URL-encoded as S3 does it: '+' for a space, '/' kept, everything else %-escaped.
    assert raw["s3"]["object"]["key"] == (
        "uploads/acme/%C3%89t%C3%A9+2024+%2B+100%25+%C3%BCn%C3%AFcode+set.zip"
    )
    event = S3Event.model_validate_json(body)
    [record] = event.records
    assert not event.is_test_event
    assert record.event_name == "ObjectCreated:Put"
    assert record.event_time == modified.replace(microsecond=891000)
    assert record.s3.bucket.name == "ingest-uploads"
    assert record.s3.object.decoded_key == key
    assert record.s3.object.size == 1234
    assert record.s3.object.etag == "0123456789abcdef"


def test_report_in_words() -> None:
    report = ReconcileReport(
        grace=300,
        dry_run=False,
        pages=2,
        listed=1204,
        recorded=1201,
        too_recent=1,
        reannounced=2,
        reannounced_keys=["uploads/acme/a.zip", "uploads/acme/b.zip"],
    )
    assert format_report(report) == (
        "listed 1,204 uploads; 1,201 recorded, 1 too recent (under 300 s), "
        "2 re-announced: uploads/acme/a.zip, uploads/acme/b.zip"
    )
    many = ReconcileReport(
        grace=0.5, dry_run=True, listed=25, reannounced=25, reannounced_keys=["k"] * 20
    )
    assert format_report(many).endswith(", k, … and 5 more")
    assert "25 to re-announce (dry run)" in format_report(many)


# --- lost events -------------------------------------------------------------------------


async def test_lost_uploads_are_reannounced_and_ingested(
    aws: Aws, db: asyncpg.Pool, tmp_path: Path
) -> None:
    await lose_events(aws)
    uploads = [
        await upload_folder(aws, mdi_set(tmp_path / "a", 2)),
        await upload_folder(aws, mdi_set(tmp_path / "b", 3, title="Another set")),
    ]
    assert await queue_counts(aws, aws.settings.batch_queue) == (0, 0, 0)

    with structlog.testing.capture_logs() as logs:
        report = await reconcile(aws, db, batcher(aws), grace=0)

    assert (report.listed, report.recorded, report.too_recent, report.reannounced) == (2, 0, 0, 2)
    assert report.pages == 1
    assert sorted(report.reannounced_keys) == sorted(u.key for u in uploads)
    [line] = reconciled_log_lines(logs)
    assert (line["listed"], line["recorded"], line["reannounced"]) == (2, 0, 2)
    assert await queue_counts(aws, aws.settings.batch_queue) == (2, 0, 0)

    await Pipeline(aws, db).run_all()

    for uploaded, images in zip(uploads, (2, 3), strict=True):
        upload = await upload_row(db, uploaded.key)
        # The id any client computes from its PUT: the re-announced ETag is the object's.
        assert upload["id"] == uploaded.upload_id
        assert upload["status"] == "ready"
        # The batcher continued the client's trace from the object's metadata.
        assert upload["trace_id"] == uploaded.trace_id
        product = await db.fetchrow(
            "SELECT status::text AS status, images_ready FROM products WHERE upload_id = $1",
            uploaded.upload_id,
        )
        assert product is not None
        assert (product["status"], product["images_ready"]) == ("ready", images)
        statuses = await db.fetch(
            "SELECT i.status::text AS status FROM images i JOIN products p ON p.id = i.product_id"
            " WHERE p.upload_id = $1",
            uploaded.upload_id,
        )
        assert [s["status"] for s in statuses] == ["ready"] * images

    again = await reconcile(aws, db, batcher(aws), grace=0)
    assert (again.listed, again.recorded, again.reannounced) == (2, 2, 0)
    assert await queue_counts(aws, aws.settings.batch_queue) == (0, 0, 0)


async def test_odd_key_round_trips_to_its_upload_row(aws: Aws, db: asyncpg.Pool) -> None:
    await lose_events(aws)
    files = svgs(2)
    data = make_zip({"manifest.json": manifest(list(files)), **files})
    key = await put_upload(aws, "acme", data, name=ODD_NAME)
    head = await aws.s3.head_object(Bucket=aws.settings.uploads_bucket, Key=key)

    report = await reconcile(aws, db, batcher(aws), grace=0)
    assert report.reannounced_keys == [key]
    await Pipeline(aws, db).run_all()

    upload = await upload_row(db, key)
    assert upload["id"] == ids.upload_id(aws.settings.uploads_bucket, key, head["ETag"])
    assert upload["status"] == "ready"
    again = await reconcile(aws, db, batcher(aws), grace=0)
    assert (again.recorded, again.reannounced) == (1, 0)


async def test_reannounced_in_pages_and_batches_of_ten_with_the_trace(
    aws: Aws, db: asyncpg.Pool, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconcile_module, "PAGE_SIZE", 12)
    await lose_events(aws)
    # Not valid uploads, but that is for the batcher to decide, not the reconciliation.
    keys = [await put_upload(aws, "acme", b"not a zip", name=f"junk-{i:02}.txt") for i in range(25)]

    with tracer().start_as_current_span("caller") as caller:
        report = await reconcile(aws, db, batcher(aws), grace=0)

    assert (report.pages, report.listed, report.reannounced) == (3, 25, 25)
    assert report.reannounced_keys == keys[:20]  # S3 lists in key order
    messages = await batch_messages(aws, 25)
    trace_id = caller.get_span_context().trace_id
    decoded = []
    for message in messages:
        [record] = S3Event.model_validate_json(message["Body"]).records
        decoded.append(record.s3.object.decoded_key)
        assert span_context_of(carrier_from_sqs(message["MessageAttributes"])).trace_id == trace_id
    assert sorted(decoded) == keys
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.force_flush()
    sends = [
        batch_size(s)
        for s in spans.get_finished_spans()
        if s.name == f"send {aws.settings.batch_queue}" and s.context.trace_id == trace_id
    ]
    # Pages of 12, 12 and 1: each page is sent in batches of at most 10.
    assert sorted(sends) == [1, 2, 2, 10, 10]


async def test_recent_objects_are_left_to_their_own_event(aws: Aws, db: asyncpg.Pool) -> None:
    await lose_events(aws)
    await put_upload(aws, "acme", b"not a zip")

    report = await reconcile(aws, db, batcher(aws), grace=3600)

    assert (report.listed, report.too_recent, report.reannounced) == (1, 1, 0)
    assert report.reannounced_keys == []
    assert await queue_counts(aws, aws.settings.batch_queue) == (0, 0, 0)


async def test_recorded_uploads_are_never_reannounced(aws: Aws, db: asyncpg.Pool) -> None:
    files = svgs(1)
    good = await put_upload(
        aws, "acme", make_zip({"manifest.json": manifest(list(files)), **files})
    )
    refused = await put_upload(aws, "acme", b"not a zip", name="broken.zip")
    await Pipeline(aws, db).drain("batch")  # their events arrived: both recorded
    assert (await upload_row(db, refused))["status"] == "rejected"

    report = await reconcile(aws, db, batcher(aws), grace=0)
    assert (report.listed, report.recorded, report.reannounced) == (2, 2, 0)
    assert await queue_counts(aws, aws.settings.batch_queue) == (0, 0, 0)

    # A new version of a recorded key whose event is lost has no row of its own.
    await lose_events(aws)
    await put_upload(aws, "acme", b"not a zip either", name="broken.zip")
    report = await reconcile(aws, db, batcher(aws), grace=0)
    assert (report.listed, report.recorded, report.reannounced) == (2, 1, 1)
    assert report.reannounced_keys == [refused]
    [message] = await batch_messages(aws, 1)
    [record] = S3Event.model_validate_json(message["Body"]).records
    assert record.s3.object.decoded_key == refused
    assert (await upload_row(db, good))["status"] == "processing"


async def test_dry_run_finds_but_sends_nothing(aws: Aws, db: asyncpg.Pool) -> None:
    await lose_events(aws)
    keys = [await put_upload(aws, "acme", b"not a zip", name=f"{n}.zip") for n in "ab"]

    report = await reconcile(aws, db, batcher(aws), grace=0, dry_run=True)

    assert report.dry_run
    assert (report.listed, report.reannounced, report.reannounced_keys) == (2, 2, keys)
    assert await queue_counts(aws, aws.settings.batch_queue) == (0, 0, 0)
    assert await db.fetchval("SELECT count(*) FROM uploads") == 0


# --- the command -------------------------------------------------------------------------


async def test_ingest_reconcile_command(
    aws: Aws, db: asyncpg.Pool, settings: IngestSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    await lose_events(aws)
    key = await put_upload(aws, "acme", b"not a zip")
    cli = CliSettings(
        database_url=settings.database_url, aws_endpoint_url=settings.aws_endpoint_url
    )

    parser = build_parser()
    with structlog.testing.capture_logs() as logs:
        dry = await run_reconcile(parser.parse_args(["reconcile", "--dry-run"]), cli)
        assert dry == 0
        assert capsys.readouterr().out == (
            "listed 1 upload; 0 recorded, 1 too recent (under 300 s), 0 to re-announce (dry run)\n"
        )
        code = await run_reconcile(parser.parse_args(["reconcile", "--grace", "0", "--json"]), cli)
        assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {
        "grace": 0.0,
        "dry_run": False,
        "pages": 1,
        "listed": 1,
        "recorded": 0,
        "too_recent": 0,
        "reannounced": 1,
        "reannounced_keys": [key],
    }
    assert len(reconciled_log_lines(logs)) == 2
    assert await queue_counts(aws, aws.settings.batch_queue) == (1, 0, 0)
    with pytest.raises(SystemExit):
        parser.parse_args(["reconcile", "--grace", "-1"])
