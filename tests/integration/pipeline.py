"""Drive the real handlers through the real consumer runtime, in this process."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
import zipfile
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar, overload

import asyncpg
from ingest_batcher.handler import BatchHandler
from ingest_batcher.settings import BatcherSettings
from ingest_cli.status import UploadStatus, load_status
from ingest_cli.upload import Uploaded, upload_set
from ingest_common.aws import Aws
from ingest_common.outbox import OutboxPublisher
from ingest_common.runtime.consumer import Consumer
from ingest_common.runtime.dependencies import Dependencies, sqs_probe
from ingest_common.runtime.health import Health
from ingest_common.runtime.service import Handler, Resources, consumer_for
from ingest_common.settings import IngestSettings
from ingest_indexer.handler import IndexHandler
from ingest_indexer.settings import IndexerSettings
from ingest_previewer.handler import PreviewHandler
from ingest_previewer.settings import PreviewerSettings
from ingest_processor.handler import RenderHandler, SlowRenderHandler
from ingest_processor.settings import ProcessorSettings

from tests.conftest import SAMPLE

MDI = SAMPLE / "mdi-essentials"
SettingsT = TypeVar("SettingsT", bound=IngestSettings)

SERVICES: dict[
    str, tuple[type[IngestSettings], Callable[[Resources], AbstractAsyncContextManager[Any]]]
] = {
    "batch": (BatcherSettings, BatchHandler.open),
    "render": (ProcessorSettings, RenderHandler.open),
    # A render over its CPU budget moves here, as in the deployed processor.
    "render_slow": (ProcessorSettings, SlowRenderHandler.open),
    "preview": (PreviewerSettings, PreviewHandler.open),
    "index": (IndexerSettings, IndexHandler.open),
}


def settings_from(
    settings_class: type[SettingsT], base: IngestSettings, **overrides: Any
) -> SettingsT:
    """`settings_class` with this test's settings in `base`, then `overrides`, where it has them."""
    values = base.model_dump(by_alias=False)
    values.update(overrides)
    known = {k: v for k, v in values.items() if k in settings_class.model_fields}
    return settings_class(**known)


def service_settings(role: str, base: IngestSettings, **overrides: Any) -> IngestSettings:
    settings_class, _ = SERVICES[role]
    defaults = {"safety_net_delay": 0, "render_workers": 1, "stall_timeout": 600}
    return settings_from(settings_class, base, **{**defaults, **overrides})


async def queue_counts(aws: Aws, queue: str) -> tuple[int, int, int]:
    url = await aws.queue_url(queue)
    attributes = (
        await aws.sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        int(attributes["ApproximateNumberOfMessagesDelayed"]),
    )


class Pipeline:
    """The four handlers, each behind its own consumer, sharing this test's resources."""

    def __init__(self, aws: Aws, db: asyncpg.Pool, **overrides: Any) -> None:
        self.aws = aws
        self.db = db
        self.overrides = overrides

    async def drain(self, role: str, timeout: float = 60) -> Health:
        """Run one service's consumer until its queue is empty (delayed messages included)."""
        settings = service_settings(role, self.aws.settings, **self.overrides)
        queue = getattr(settings, f"{role}_queue")
        _, build = SERVICES[role]
        health = Health(queue, 60)
        if await queue_counts(self.aws, queue) == (0, 0, 0):
            return health  # nothing to do: skip starting the service
        async with build(Resources(settings, self.aws, self.db)) as handler:
            consumer = self._consumer(settings, queue, handler, health)
            task = asyncio.create_task(consumer.run())
            try:
                async with asyncio.timeout(timeout):
                    while await queue_counts(self.aws, queue) != (0, 0, 0) or health.in_flight:
                        await asyncio.sleep(0.1)
                        if task.done():
                            break
            except TimeoutError:
                visible, hidden, delayed = await queue_counts(self.aws, queue)
                raise AssertionError(
                    f"{queue} was not drained in {timeout:g} s: {visible} visible, {hidden} not"
                    f" visible, {delayed} delayed, {health.in_flight} in the handler's hands;"
                    f" {health.succeeded} succeeded, {health.retried} retried, {health.failed}"
                    f" failed, {health.handed_back} handed back"
                ) from None
            finally:
                consumer.stop()
                await task
        return health

    def _consumer(
        self, settings: IngestSettings, queue: str, handler: Handler[Any], health: Health
    ) -> Consumer[Any]:
        return consumer_for(settings, self.aws, self.db, queue, handler, health)

    async def run_all(self, timeout: float = 60) -> None:
        for role in ("batch", "render", "render_slow", "preview", "index", "preview", "index"):
            await self.drain(role, timeout)
        await publish_events(self.aws, self.db)


async def publish_events(aws: Aws, db: asyncpg.Pool, timeout: float = 30) -> int:
    """Run the batcher's outbox publisher until the outbox is published; how many it sent."""
    publisher = OutboxPublisher(aws.settings, aws, Dependencies(aws.settings, {}))
    task = asyncio.create_task(publisher.run())
    try:
        async with asyncio.timeout(timeout):
            while await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"):
                assert not task.done(), "the publisher stopped"
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return publisher.published


def run_ingest(
    settings: IngestSettings, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`ingest ARGS` as a person runs it, against this test's endpoint and database."""
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": settings.aws_endpoint_url or "",
        "DATABASE_URL": settings.database_url,
    }
    result = subprocess.run(
        [sys.executable, "-m", "ingest_cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def sqs_only(aws: Aws, queue: str) -> Dependencies:
    """The dependencies of a consumer that touches nothing but its queue (runtime tests)."""
    return Dependencies(aws.settings, {"sqs": sqs_probe(aws, queue)})


async def fetch_row(db: asyncpg.Pool, query: str, *args: object) -> asyncpg.Record:
    """The one row `query` selects; fail the test, naming the query, if there is none."""
    row = await db.fetchrow(query, *args)
    if row is None:
        raise AssertionError(f"no row for {query!r} with arguments {args!r}")
    return row


async def upload_row(db: asyncpg.Pool, key: str) -> asyncpg.Record:
    return await fetch_row(
        db, "SELECT *, status::text AS status FROM uploads WHERE object_key = $1", key
    )


async def rejected_by_batcher(aws: Aws, db: asyncpg.Pool, key: str) -> str:
    """Run the batcher: the upload at `key` must be rejected and no product made. Its error."""
    await Pipeline(aws, db).drain("batch")
    upload = await upload_row(db, key)
    assert upload["status"] == "rejected"
    assert await db.fetchval("SELECT count(*) FROM products") == 0
    error: str = upload["error"]
    return error


async def wait_finished(
    db: asyncpg.Pool, uploads: list[Uploaded], timeout: float = 120
) -> list[UploadStatus]:
    """Poll until every upload has finished (ready, failed or rejected); fail at `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        async with db.acquire() as connection:
            statuses = [await load_status(connection, u.upload_id) for u in uploads]
        if all(s is not None and s.finished for s in statuses):
            return [s for s in statuses if s is not None]
        assert time.monotonic() < deadline, f"not finished: {statuses}"
        await asyncio.sleep(0.25)


async def upload_folder(aws: Aws, folder: Path, contributor: str = "acme") -> Any:
    return await upload_set(aws, folder, contributor)


def mdi_set(folder: Path, count: int, **fields: Any) -> Path:
    """A set folder of the first `count` files of sample/mdi-essentials, `fields` in its manifest."""
    folder.mkdir()
    body = json.loads((MDI / "manifest.json").read_text())
    body.update(fields)
    body["files"] = body["files"][:count]
    for entry in body["files"]:
        shutil.copy(MDI / entry["path"], folder / entry["path"])
    (folder / "manifest.json").write_text(json.dumps(body))
    return folder


def svgs(count: int) -> dict[str, bytes]:
    """The first `count` SVGs of sample/mdi-essentials, by file name."""
    return {p.name: p.read_bytes() for p in sorted(MDI.glob("*.svg"))[:count]}


@overload
def make_zip(files: Mapping[str, bytes | str]) -> bytes: ...
@overload
def make_zip(files: Iterable[tuple[zipfile.ZipInfo | str, bytes | str]]) -> bytes: ...


def make_zip(
    files: Mapping[str, bytes | str] | Iterable[tuple[zipfile.ZipInfo | str, bytes | str]],
) -> bytes:
    """A ZIP of `files`: name → data, or (name or ZipInfo, data) pairs, duplicates kept, in order."""
    entries = files.items() if isinstance(files, Mapping) else files
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive, warnings.catch_warnings():
        # Duplicates are asked for (hostile archives): zipfile's warning says nothing here.
        warnings.filterwarnings("ignore", "Duplicate name", UserWarning)
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def manifest(files: list[str], **fields: Any) -> str:
    body: dict[str, Any] = {
        "product_type": "icon_set",
        "family": "test-family",
        "title": "Test set",
        "description": "Icons for tests",
        "tags": ["test"],
        "license": "standard",
        "files": [{"path": f, "title": f.removesuffix(".svg"), "tags": ["t"]} for f in files],
    }
    body.update(fields)
    return json.dumps(body)


async def put_upload(aws: Aws, contributor: str, data: bytes, name: str = "set.zip") -> str:
    key = f"uploads/{contributor}/{name}"
    await aws.put_bytes(aws.settings.uploads_bucket, key, data, content_type="application/zip")
    return key


async def assert_mosaic_decodes(aws: Aws, preview: Any) -> list[Any]:
    """Both encodings of a family preview decode, as PNG and WebP, at the recorded size."""
    import pyvips

    images = []
    for key, loader in (
        (preview["png_key"], "pngload_buffer"),
        (preview["webp_key"], "webpload_buffer"),
    ):
        image = pyvips.Image.new_from_buffer(
            await aws.get_bytes(aws.settings.previews_bucket, key), ""
        )
        assert image.get("vips-loader") == loader
        assert (image.width, image.height) == (preview["width"], preview["height"])
        images.append(image)
    return images


async def subscribe_to_events(aws: Aws, name: str = "events-seen") -> str:
    """An SQS queue subscribed to the events topic (raw delivery): what a subscriber gets."""
    created = await aws.sqs.create_queue(QueueName=name)
    url = created["QueueUrl"]
    arn = (await aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))[
        "Attributes"
    ]["QueueArn"]
    topic = await aws.topic_arn(aws.settings.events_topic)
    await aws.sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    return str(url)


async def received_events(aws: Aws, url: str, *, wait: float = 1) -> list[dict[str, Any]]:
    """Every event in a subscriber's queue, in the order SQS gives them; removed from it."""
    seen: list[dict[str, Any]] = []
    while True:
        response = await aws.sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=int(wait)
        )
        messages = response.get("Messages", [])
        if not messages:
            return seen
        seen.extend(json.loads(m["Body"]) for m in messages)
        await aws.sqs.delete_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )


def assert_in_order_per_subject(events: list[dict[str, Any]]) -> None:
    """After dropping repeats (at least once: same id), each subject's events came in order."""
    first: dict[str, dict[str, Any]] = {}
    for event in events:
        first.setdefault(event["id"], event)
    by_subject: dict[str, list[int]] = {}
    for event in first.values():
        by_subject.setdefault(event["subject"], []).append(event["sequence"])
    for subject, sequences in by_subject.items():
        assert sequences == sorted(sequences), f"{subject}: out of order {sequences}"
