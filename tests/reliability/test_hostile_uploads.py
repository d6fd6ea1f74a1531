"""Every hostile upload ends with a specific reason, and nothing else in the set is lost.

All cases are uploaded side by side, as a busy marketplace would receive them, and go
through the real batcher, processor, previewer and indexer (in this process, through the
real consumer runtime, PostgreSQL and S3/SQS over HTTP). Each reason must be stored
where `ingest status` shows it; the good files of every set must all be ready; and the
Python memory the batcher uses while it opens them all stays bounded, although entries
claim gigabytes (the renderer's bounds are tested in test_render_guard.py).
"""

from __future__ import annotations

import tracemalloc
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from ingest_cli.status import UploadStatus, format_status, load_status
from ingest_common import ids
from ingest_common.aws import Aws
from ingest_common.db.pool import create_pool
from ingest_common.settings import IngestSettings
from ingest_common.topology import apply_topology, load_topology

from tests.conftest import TABLES
from tests.integration.pipeline import Pipeline, put_upload
from tests.reliability.hostile import CASES, GOOD, Case, MiB

# Every case comes from one module fixture that runs them all through the pipeline, once in
# each xdist worker that gets a case: one group, one worker, one run (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("hostile-uploads")

MEMORY_BOUND = 64 * MiB  # peak Python allocations while the batcher opens every case
SETTINGS = {"max_total_bytes": 8 * MiB}  # small enough to make the size bomb cheap to build


@dataclass
class Outcome:
    statuses: dict[str, UploadStatus]
    peak_memory: int


@pytest.fixture(scope="module")
async def outcome(settings: IngestSettings) -> AsyncIterator[Outcome]:
    request = urllib.request.Request(f"{settings.aws_endpoint_url}/moto-api/reset", method="POST")
    urllib.request.urlopen(request).close()
    db = await create_pool(settings)
    await db.execute(f"TRUNCATE {TABLES} CASCADE")
    try:
        async with Aws(settings) as aws:
            await apply_topology(aws, load_topology(settings))
            uploads: dict[str, uuid.UUID] = {}
            for case in CASES:
                key = await put_upload(aws, "acme", case.build(), f"{uuid.uuid4()}.zip")
                head = await aws.s3.head_object(Bucket=settings.uploads_bucket, Key=key)
                uploads[case.name] = ids.upload_id(settings.uploads_bucket, key, head["ETag"])
            pipeline = Pipeline(aws, db, **SETTINGS)
            # The archives are opened in the batcher: that is where bombs would explode.
            tracemalloc.start()
            try:
                await pipeline.drain("batch", timeout=300)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            await pipeline.run_all(timeout=300)
        statuses = {}
        async with db.acquire() as connection:
            for name, upload in uploads.items():
                status = await load_status(connection, upload)
                assert status is not None, name
                statuses[name] = status
        yield Outcome(statuses, peak)
    finally:
        await db.close()


@pytest.fixture(scope="module")
def settings(database_url: str, moto_endpoint: str) -> IngestSettings:
    return IngestSettings(
        database_url=database_url, aws_endpoint_url=moto_endpoint, receive_wait_seconds=1
    )


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_hostile_upload(case: Case, outcome: Outcome, data_lost: Callable[[int], None]) -> None:
    status = outcome.statuses[case.name]
    reason = reason_of(case, status)
    assert any(word.lower() in reason.lower() for word in case.reason), reason
    assert reason in format_status(status)  # what `ingest status` prints

    lost = 0
    if case.good_survive:
        ready = {image["path"] for image in status.images if image["status"] == "ready"}
        lost = len(set(GOOD) - ready)
        assert status.upload["status"] == "ready"
    else:
        assert status.upload["status"] == "rejected"
        assert status.product is None
    data_lost(lost)
    assert lost == 0


def test_memory_stays_bounded(outcome: Outcome) -> None:
    assert outcome.peak_memory < MEMORY_BOUND, f"{outcome.peak_memory / MiB:.0f} MiB"


def reason_of(case: Case, status: UploadStatus) -> str:
    if case.where == "upload":
        return str(status.upload["error"])
    if case.where == "file":
        problems = status.upload["file_errors"]
        matching = [p["reason"] for p in problems if case.path in (None, p["path"])]
        assert matching, f"no problem recorded for {case.path}: {problems}"
        return str(matching[0])
    [failed] = [i for i in status.images if i["path"] == case.path]
    assert failed["status"] == "failed"
    return str(failed["failure_reason"])
