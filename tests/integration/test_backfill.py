"""`ingest backfill` on real PostgreSQL, a real S3 endpoint and real libvips."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable
from typing import Any, TypeVar

import asyncpg
import pytest
import pyvips
from ingest_cli.backfill import summary
from ingest_cli.main import build_parser
from ingest_cli.settings import CliSettings
from ingest_common.aws import Aws
from ingest_processor.backfill import (
    Backfill,
    BackfillSettings,
    Selection,
    SelectionError,
    Shard,
    ShardedBackfill,
    pipeline,
)
from ingest_processor.backfill.shards import shard_settings

from tests.conftest import SAMPLE
from tests.integration.pipeline import Pipeline, fetch_row, settings_from, upload_folder

T = TypeVar("T")

MDI = SAMPLE / "mdi-essentials"
OPENMOJI = SAMPLE / "openmoji-sampler"
WIDTHS = (32, 64, 128, 256, 512)


def backfill_settings(aws: Aws, **overrides: Any) -> BackfillSettings:
    defaults = {"render_workers": 1, "s3_concurrency": 2, "backfill_batch_size": 4}
    return settings_from(BackfillSettings, aws.settings, **{**defaults, **overrides})


@pytest.fixture
async def ingested(aws: Aws, db: asyncpg.Pool) -> Any:
    """A real ingest of a set folder: upload, batch, render."""

    async def ingest(folder: Any) -> Any:
        uploaded = await upload_folder(aws, folder)
        pipeline = Pipeline(aws, db)
        await pipeline.drain("batch")
        await pipeline.drain("render")
        return uploaded

    return ingest


async def images(db: asyncpg.Pool) -> list[asyncpg.Record]:
    return list(await db.fetch("SELECT * FROM images WHERE status = 'ready' ORDER BY id"))


def interruptible(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows written 4 at a time and 4 images in flight for one worker (in production 100 and
    10), so that a cancel lands in the middle of a 24-image run."""
    monkeypatch.setattr(pipeline, "_FLUSH_ROWS", 4)
    monkeypatch.setattr(pipeline, "IN_FLIGHT_PER_WORKER", 2)


async def cancel_once_done(backfill: Backfill, done: int, *, checkpointed: bool = False) -> None:
    """Run ``backfill`` until ``done`` images are written (and, if ``checkpointed``, its
    checkpoint has moved: images of a page can be written before the page is complete), then
    cancel it as Ctrl-C would."""
    task = asyncio.create_task(backfill.run())

    async def far_enough() -> bool:
        if backfill.stats.done < done:
            return False
        if not checkpointed:
            return True
        return bool(
            await backfill.db.fetchval(
                "SELECT count(*) FROM backfill_runs WHERE last_image_id IS NOT NULL"
            )
        )

    async with asyncio.timeout(60):
        while not await far_enough():
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await within(30, task)


async def test_a_new_width_is_added_to_every_image_and_a_second_run_renders_nothing(
    aws: Aws, db: asyncpg.Pool, ingested: Any
) -> None:
    await ingested(OPENMOJI)
    # The processor's renditions are up to date: nothing to do with the same settings.
    unchanged = await Backfill(backfill_settings(aws), aws, db, Selection(everything=True)).run()
    assert (unchanged.in_scope, unchanged.to_render, unchanged.rendered) == (12, 0, 0)
    before = {row["id"]: row["renditions"] for row in await images(db)}

    settings = backfill_settings(aws, render_widths=WIDTHS)
    stats = await Backfill(settings, aws, db, Selection(missing_width=32)).run()
    assert (stats.to_render, stats.done, stats.failed, stats.rendered) == (12, 12, 0, 12)
    assert stats.outputs == 12 * 2  # only the new width is put: the others are unchanged

    rows = await images(db)
    assert len(rows) == 12
    for row in rows:
        renditions = row["renditions"]
        assert {(r["width"], r["format"]) for r in renditions} == {
            (w, f) for w in WIDTHS for f in ("png", "webp")
        }
        assert {r["profile"] for r in renditions} == {stats.profile}
        # Same profile as the processor's: the existing sizes keep their keys.
        old_keys = {r["key"] for r in before[row["id"]]}
        assert old_keys <= {r["key"] for r in renditions}
        for rendition in (r for r in renditions if r["width"] == 32):
            assert rendition["key"].startswith(f"renditions/{row['id']}/{stats.profile}/")
            head = await aws.s3.head_object(
                Bucket=aws.settings.previews_bucket, Key=rendition["key"]
            )
            assert head["ContentType"] == f"image/{rendition['format']}"
            assert "immutable" in head["CacheControl"]
            data = await aws.get_bytes(aws.settings.previews_bucket, rendition["key"])
            decoded = pyvips.Image.new_from_buffer(data, "")
            assert decoded.get("vips-loader") == f"{rendition['format']}load_buffer"
            assert (decoded.width, decoded.height) == (32, rendition["height"])

    again = await Backfill(settings, aws, db, Selection(missing_width=32)).run()
    assert (again.in_scope, again.rendered, again.done) == (0, 0, 0)
    everything = await Backfill(settings, aws, db, Selection(everything=True)).run()
    assert (everything.in_scope, everything.skipped, everything.rendered) == (12, 12, 0)


async def test_an_interrupted_backfill_resumes_without_rendering_much_twice(
    aws: Aws, db: asyncpg.Pool, ingested: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ingested(MDI)
    # Another WebP quality is another profile: every rendition is rendered again, so the run
    # lasts; written a few rows at a time, the interruption lands in its middle.
    interruptible(monkeypatch)
    settings = backfill_settings(aws, render_widths=WIDTHS, webp_quality=79)
    total = len(await images(db))
    assert total == 24

    first = Backfill(settings, aws, db, Selection(everything=True))
    await cancel_once_done(first, 8)
    written = await db.fetchval(
        "SELECT count(*) FROM images WHERE renditions @> $1::jsonb",
        [{"width": 32, "format": "webp", "profile": first.profile}],
    )
    assert written == first.stats.done >= 8  # what was rendered and stored was kept
    checkpoint = await db.fetchval("SELECT last_image_id FROM backfill_runs")

    second = Backfill(settings, aws, db, Selection(everything=True))
    stats = await within(120, second.run())
    # Resumed from the checkpoint (pages of 4, each written in full), not from the start.
    assert stats.resumed_from == checkpoint
    assert stats.earlier_done == written
    assert stats.done + written == total
    # Only what was in flight at the interruption is rendered again.
    assert first.stats.rendered + stats.rendered <= total + first.in_flight
    rows = await images(db)
    assert all(
        {(r["width"], r["format"]) for r in row["renditions"] if r["profile"] == stats.profile}
        == {(w, f) for w in WIDTHS for f in ("png", "webp")}
        for row in rows
    )
    # The run is finished: the next one starts over, finds nothing to do.
    done = await within(60, Backfill(settings, aws, db, Selection(everything=True)).run())
    assert (done.resumed_from, done.to_render, done.skipped) == (None, 0, total)


async def within(seconds: float, awaitable: Awaitable[T]) -> T:
    """Await with a limit. A CI run once hung here until pytest's timeout, which shows only the
    idle event loop: on a hang, print where every task waits, then fail."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        for waiting in asyncio.all_tasks():
            waiting.print_stack(file=sys.stderr)
        task.cancel()
        raise AssertionError(f"still waiting after {seconds} s (every task's stack is above)")
    return task.result()


async def test_failures_are_counted_with_reasons_and_images_stay_ready(
    aws: Aws, db: asyncpg.Pool, ingested: Any
) -> None:
    uploaded = await ingested(OPENMOJI)
    product = await db.fetchval("SELECT id FROM products WHERE upload_id = $1", uploaded.upload_id)
    lost = (await images(db))[0]
    await aws.s3.delete_object(Bucket=aws.settings.uploads_bucket, Key=lost["original_key"])

    settings = backfill_settings(aws, render_widths=WIDTHS)
    selection = Selection(product=product, missing_format="webp", everything=False)
    # Every image has WebP renditions (just not at 32 px): the format filter selects none.
    none = await Backfill(settings, aws, db, selection).run()
    assert none.in_scope == 0

    stats = await Backfill(settings, aws, db, Selection(product=product)).run()
    assert (stats.done, stats.failed) == (11, 1)
    assert stats.failures == {"original missing from S3": 1}
    assert stats.failure_examples["original missing from S3"] == lost["id"]
    text = summary(stats, Selection(product=product))
    assert "failed     1" in text
    assert f"original missing from S3  (e.g. image {lost['id']})" in text
    row = await fetch_row(
        db, "SELECT status::text, renditions FROM images WHERE id = $1", lost["id"]
    )
    assert row["status"] == "ready"
    assert row["renditions"] == lost["renditions"]  # untouched


async def test_selection_must_be_explicit_and_renderable(aws: Aws, db: asyncpg.Pool) -> None:
    with pytest.raises(SelectionError, match="--all"):
        Selection()
    with pytest.raises(SelectionError, match="not a configured width"):
        Backfill(backfill_settings(aws), aws, db, Selection(missing_width=32))


async def test_the_command_backfills_a_family_and_prints_a_summary(
    aws: Aws,
    db: asyncpg.Pool,
    ingested: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await ingested(OPENMOJI)
    family = await db.fetchval("SELECT slug FROM families LIMIT 1")
    for name, value in {
        "INGEST_DATABASE_URL": aws.settings.database_url,
        "INGEST_AWS_ENDPOINT_URL": str(aws.settings.aws_endpoint_url),
        "INGEST_RENDER_WIDTHS": "[32, 64]",
        "INGEST_RENDER_WORKERS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args(["backfill", "--family", family, "--no-progress"])
    assert await args.run(args, CliSettings()) == 0
    out = capsys.readouterr().out
    assert f"backfill   family {family}" in out
    assert "done       12 images, 24 renditions" in out  # 32 px; 64 px was there
    assert "SVGs/s" in out

    args = build_parser().parse_args(["backfill", "--missing-width", "48"])
    assert await args.run(args, CliSettings()) == 2
    assert "not a configured width" in capsys.readouterr().err


async def test_shards_take_each_image_once_and_resume_from_their_own_checkpoints(
    aws: Aws, db: asyncpg.Pool, ingested: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ingested(MDI)
    # Another profile: every image is stale. Shard 0 of 2 runs here and is interrupted.
    interruptible(monkeypatch)
    settings = backfill_settings(aws, render_widths=WIDTHS, webp_quality=79, render_workers=2)
    everything = Selection(everything=True)
    ids = [row["id"] for row in await images(db)]
    owned = {index: {i for i in ids if Shard(index, 2).owns(i)} for index in (0, 1)}
    assert all(owned.values())  # 24 images: both shards have some

    first = Backfill(shard_settings(settings, Shard(0, 2)), aws, db, everything, shard=Shard(0, 2))
    await cancel_once_done(first, 4, checkpointed=True)
    assert first.stats.to_render == len(owned[0])  # the SQL shard is the Python one
    written = await up_to_date(db, first.profile)
    assert written <= owned[0]  # only shard 0's images
    assert len(written) >= 4

    # Both shards as processes: shard 0 resumes after its checkpoint, shard 1 starts.
    sharded = ShardedBackfill(settings, everything, 2)
    stats = await within(120, sharded.run())
    assert (stats.shards, stats.shards_resumed) == (2, 1)
    assert stats.earlier_done == len(written)
    assert stats.done + len(written) == len(ids)
    assert first.stats.rendered + stats.rendered <= len(ids) + first.in_flight
    assert await up_to_date(db, stats.profile) == set(ids)
    # Each shard counted exactly its own images, over both sessions for shard 0.
    runs = await db.fetch("SELECT selection, done, finished_at FROM backfill_runs")
    done_by_shard = {tuple(json.loads(r["selection"])["shard"]): r["done"] for r in runs}
    assert done_by_shard == {(0, 2): len(owned[0]), (1, 2): len(owned[1])}
    assert all(r["finished_at"] is not None for r in runs)

    # A rerun with another shard count finds nothing left to do.
    again = await within(120, ShardedBackfill(settings, everything, 2).run())
    assert (again.to_render, again.skipped, again.rendered) == (0, len(ids), 0)


async def test_the_command_runs_shards_and_sums_them_in_its_summary(
    aws: Aws,
    db: asyncpg.Pool,
    ingested: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await ingested(OPENMOJI)
    for name, value in {
        "INGEST_DATABASE_URL": aws.settings.database_url,
        "INGEST_AWS_ENDPOINT_URL": str(aws.settings.aws_endpoint_url),
        "INGEST_RENDER_WIDTHS": "[32, 64]",
        "INGEST_RENDER_WORKERS": "3",
    }.items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args(["backfill", "--missing-width", "32", "--no-progress"])
    assert await args.run(args, CliSettings()) == 0  # default: one shard per render worker
    out = capsys.readouterr().out
    assert "shards     3 processes" in out
    assert "done       12 images, 24 renditions" in out
    assert "ms per image rendering" in out
    runs = await db.fetch("SELECT selection, done FROM backfill_runs")
    assert sorted(json.loads(r["selection"])["shard"][0] for r in runs) == [0, 1, 2]
    assert sum(r["done"] for r in runs) == 12

    args = build_parser().parse_args(["backfill", "--all", "--shards", "4"])
    assert await args.run(args, CliSettings()) == 2
    assert "4 shards need at least as many render workers" in capsys.readouterr().err


async def up_to_date(db: asyncpg.Pool, profile: str) -> set[Any]:
    rows = await db.fetch(
        "SELECT id FROM images WHERE renditions @> $1::jsonb",
        [{"width": w, "format": f, "profile": profile} for w in WIDTHS for f in ("png", "webp")],
    )
    return {row["id"] for row in rows}
