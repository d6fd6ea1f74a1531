"""Backfill: (re)render the renditions of ready images straight from their S3 originals.

What is rendered: ``ready`` images in the selection (``--all``, a family, a product, images
lacking a format or a width) whose ``renditions`` do not yet hold every configured width ×
format made with the current render profile (see ``renditions.render_profile``). Pending
images belong to the processor and failed ones keep their reason; neither is touched.

How, with every core busy and bounded load elsewhere:

    scan (keyset pages of ``batch_size`` rows, one connection)
      → ``in_flight`` image tasks: get the original (S3, capped by ``s3_concurrency``)
        → render in the RenderPool (``render_workers`` processes; the other tasks wait with
          their SVG in memory, so the pool always has the next render queued)
        → put the renditions (S3, same cap)
      → one writer: ``executemany`` of the row updates plus the checkpoint, in one transaction,
        every 100 images or half a second (one connection).

Resumable: the checkpoint (``backfill_runs.last_image_id``) only moves past a page once every
image of it is written or failed, in the same transaction as those rows. After a kill, the same
command resumes from the checkpoint and skips, through the selection itself, images already
written past it: only the images in flight at the kill are rendered again. A run that ends
is marked finished; the next run of the same selection starts over and finds (in SQL) only
what is still missing, e.g. images that failed for a transient S3 error.

An image is updated with ``status = 'ready'`` still required, so a concurrent change is never
undone; renditions of sizes or formats no longer configured are kept in the row. Objects of an
older profile stay in S3 (clients may have cached pages naming them).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import asyncpg
from botocore.exceptions import BotoCoreError, ClientError
from ingest_common.aws import Aws, ObjectTooLarge
from pydantic import Field

from ingest_processor.pool import RenderCrashed, RenderPool, render_pool
from ingest_processor.render import RenderRejected, RenderSpec
from ingest_processor.renditions import render_profile, store_renditions, target
from ingest_processor.settings import ProcessorSettings

_NIL = uuid.UUID(int=0)
_FLUSH_ROWS = 100
_FLUSH_SECONDS = 0.5


class BackfillSettings(ProcessorSettings):
    """The processor's settings (what to render, how, S3/DB caps) plus the scan's page size."""

    service_name: str = "ingest-backfill"
    backfill_batch_size: int = Field(
        500, ge=1, le=10_000, description="images read per keyset page by `ingest backfill`"
    )


class SelectionError(ValueError):
    """The selection cannot be satisfied by the configured widths and formats."""


@dataclass(frozen=True)
class Selection:
    """Which ready images to consider. Filters combine with AND; ``everything`` is ``--all``."""

    everything: bool = False
    family: str | None = None
    product: uuid.UUID | None = None
    missing_format: str | None = None
    missing_width: int | None = None

    def __post_init__(self) -> None:
        narrowed = (self.family, self.product, self.missing_format, self.missing_width)
        if not self.everything and all(v is None for v in narrowed):
            raise SelectionError(
                "say what to backfill: --all, --family, --product, --missing-format "
                "or --missing-width"
            )

    def check(self, spec: RenderSpec) -> None:
        if self.missing_format is not None and self.missing_format not in spec.formats:
            raise SelectionError(
                f"{self.missing_format} is not a configured format (INGEST_RENDER_FORMATS="
                f"{json.dumps(list(spec.formats))}): nothing would render it"
            )
        if self.missing_width is not None and self.missing_width not in spec.widths:
            raise SelectionError(
                f"{self.missing_width} is not a configured width (INGEST_RENDER_WIDTHS="
                f"{json.dumps(list(spec.widths))}): add it there first"
            )

    def describe(self) -> str:
        parts = [
            f"family {self.family}" if self.family else "",
            f"product {self.product}" if self.product else "",
            f"missing {self.missing_format}" if self.missing_format else "",
            f"missing width {self.missing_width}" if self.missing_width else "",
        ]
        return ", ".join(p for p in parts if p) or "all images"


@dataclass
class BackfillStats:
    """What a run did; live while it runs (the progress line reads it)."""

    profile: str = ""
    in_scope: int = 0  # ready images matching the filter, past the checkpoint
    to_render: int = 0  # of those, not up to date when the run started
    rendered: int = 0  # renders finished by the pool in this run
    done: int = 0  # rows updated in this run
    failed: int = 0
    outputs: int = 0  # renditions stored
    output_bytes: int = 0
    resumed_from: uuid.UUID | None = None
    earlier_done: int = 0  # done and failed by earlier sessions of a resumed run
    earlier_failed: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    failure_examples: dict[str, uuid.UUID] = field(default_factory=dict)
    # Seconds the pool had fewer renders submitted than workers (a worker free, nothing to
    # render): the pipeline starving the CPU. Near 0 means I/O never held the renders back.
    pool_starved: float = 0.0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def skipped(self) -> int:
        """In the selection but already up to date (no render)."""
        return self.in_scope - self.to_render

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def fail(self, image: uuid.UUID, reason: str) -> None:
        self.failed += 1
        self.failures[reason] += 1
        self.failure_examples.setdefault(reason, image)


@dataclass
class _Page:
    last_id: uuid.UUID
    remaining: int


@dataclass(frozen=True)
class _Item:
    image: uuid.UUID
    original_key: str
    renditions: list[dict[str, Any]]
    page: _Page


@dataclass(frozen=True)
class _Outcome:
    item: _Item
    width: int = 0
    height: int = 0
    renditions: list[dict[str, Any]] | None = None  # None: failed


class Backfill:
    """``await Backfill(settings, aws, db, selection).run()``; ``stats`` is live meanwhile."""

    def __init__(
        self,
        settings: BackfillSettings,
        aws: Aws,
        db: asyncpg.Pool,
        selection: Selection,
        *,
        pool: RenderPool | None = None,
    ) -> None:
        self.settings = settings
        self.aws = aws
        self.db = db
        self.selection = selection
        self.spec = pool.spec if pool else settings.render_spec()
        selection.check(self.spec)
        self.profile = render_profile(self.spec)
        self.target = target(self.spec, self.profile)
        self._every = frozenset((t["width"], t["format"]) for t in self.target)
        self.stats = BackfillStats(profile=self.profile)
        self._pool = pool
        workers = pool.workers if pool else settings.render_workers
        # Every render the pool admits, plus enough for S3 to overlap with them.
        self.in_flight = RenderPool.capacity_for(workers) + settings.s3_concurrency
        self._workers = workers
        self._at_pool = 0  # renders submitted to the pool (running or waiting for a worker)
        self._at_pool_since = 0.0
        self._draining = False
        self._pages: deque[_Page] = deque()
        self._run_id = 0
        self._where, self._params = self._filter()

    # --- the run -----------------------------------------------------------------------

    async def run(self) -> BackfillStats:
        if self._pool is not None:
            return await self._run(self._pool)
        async with render_pool(self.settings) as pool:
            return await self._run(pool)

    async def _run(self, pool: RenderPool) -> BackfillStats:
        self.stats.started = self._at_pool_since = time.monotonic()
        start = await self._open_run()
        await self._count(start)
        work: asyncio.Queue[_Item | None] = asyncio.Queue(self.in_flight)
        outcomes: asyncio.Queue[_Outcome | None] = asyncio.Queue(2 * _FLUSH_ROWS)
        try:
            async with asyncio.TaskGroup() as outer:
                outer.create_task(self._write(outcomes))
                async with asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._scan(start, work))
                    for _ in range(self.in_flight):
                        tasks.create_task(self._work(pool, work, outcomes))
                await outcomes.put(None)
        except BaseExceptionGroup as group:
            raise _first(group) from None
        async with self.db.acquire() as connection:
            await connection.execute(
                "UPDATE backfill_runs SET finished_at = now(), updated_at = now() WHERE id = $1",
                self._run_id,
            )
        self.stats.finished = time.monotonic()
        return self.stats

    def _filter(self) -> tuple[str, list[Any]]:
        """The selection as SQL conditions on ``images i``; parameters start at $2."""
        conditions = ["i.status = 'ready'"]
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params) + 1}"

        s = self.selection
        if s.product is not None:
            conditions.append(f"i.product_id = {param(s.product)}")
        if s.family is not None:
            conditions.append(
                "i.product_id IN (SELECT p.id FROM products p JOIN families f "
                f"ON f.id = p.family_id WHERE f.slug = {param(s.family)})"
            )
        if s.missing_format is not None:
            fmt = param([{"format": s.missing_format}])
            conditions.append(f"NOT i.renditions @> {fmt}::jsonb")
        if s.missing_width is not None:
            width = param([{"width": s.missing_width}])
            conditions.append(f"NOT i.renditions @> {width}::jsonb")
        return " AND ".join(conditions), params

    def _stale(self) -> str:
        """Not every target rendition, with the current profile, is in the row."""
        # One containment test per target rendition; the uncorrelated ARRAY is computed once.
        wanted = f"${len(self._params) + 2}::jsonb"
        return (
            "NOT (i.renditions @> ALL (ARRAY(SELECT jsonb_build_array(t) "
            f"FROM jsonb_array_elements({wanted}) t)))"
        )

    async def _open_run(self) -> uuid.UUID:
        key = json.dumps(
            {
                "filter": {
                    "all": self.selection.everything,
                    "family": self.selection.family,
                    "product": str(self.selection.product) if self.selection.product else None,
                    "missing_format": self.selection.missing_format,
                    "missing_width": self.selection.missing_width,
                },
                "widths": list(self.spec.widths),
                "formats": list(self.spec.formats),
                "profile": self.profile,
            },
            sort_keys=True,
        )
        async with self.db.acquire() as connection:
            row = await connection.fetchrow(
                """SELECT id, last_image_id, done, failed FROM backfill_runs
                    WHERE selection = $1 AND finished_at IS NULL""",
                key,
            )
            if row is None:
                row = await connection.fetchrow(
                    """INSERT INTO backfill_runs (selection) VALUES ($1)
                       RETURNING id, last_image_id, done, failed""",
                    key,
                )
            assert row is not None
        self._run_id = row["id"]
        self.stats.resumed_from = row["last_image_id"]
        self.stats.earlier_done = row["done"]
        self.stats.earlier_failed = row["failed"]
        return row["last_image_id"] or _NIL

    async def _count(self, start: uuid.UUID) -> None:
        async with self.db.acquire() as connection:
            row = await connection.fetchrow(
                f"""SELECT count(*) AS in_scope, count(*) FILTER (WHERE {self._stale()}) AS stale
                      FROM images i WHERE i.id > $1 AND {self._where}""",
                start,
                *self._params,
                self.target,
            )
        assert row is not None
        self.stats.in_scope = row["in_scope"]
        self.stats.to_render = row["stale"]

    async def _scan(self, start: uuid.UUID, work: asyncio.Queue[_Item | None]) -> None:
        """Keyset pages of stale images, in id order; the bounded queue keeps memory flat."""
        query = f"""SELECT i.id, i.original_key, i.renditions FROM images i
                     WHERE i.id > $1 AND {self._where} AND {self._stale()}
                     ORDER BY i.id LIMIT ${len(self._params) + 3}"""
        batch = self.settings.backfill_batch_size
        last = start
        while True:
            async with self.db.acquire() as connection:
                rows = await connection.fetch(query, last, *self._params, self.target, batch)
            if not rows:
                break
            last = rows[-1]["id"]
            page = _Page(last, len(rows))
            self._pages.append(page)
            for row in rows:
                await work.put(_Item(row["id"], row["original_key"], row["renditions"], page))
            if len(rows) < batch:
                break
        for _ in range(self.in_flight):
            await work.put(None)

    async def _work(
        self,
        pool: RenderPool,
        work: asyncio.Queue[_Item | None],
        outcomes: asyncio.Queue[_Outcome | None],
    ) -> None:
        while (item := await work.get()) is not None:
            await outcomes.put(await self._one(pool, item))
        # Nothing left to render: the tail (last uploads and writes) is not starvation.
        self._pool_enter(0)
        self._draining = True

    async def _one(self, pool: RenderPool, item: _Item) -> _Outcome:
        settings = self.settings
        try:
            svg = await self.aws.get_bytes(
                settings.uploads_bucket, item.original_key, max_bytes=settings.max_svg_bytes
            )
            # Same profile, same key, same bytes: what the row already holds is neither
            # rendered nor put again (``--missing-width 32`` renders the 32 px renditions).
            have = {
                (r.get("width"), r.get("format"))
                for r in item.renditions
                if r.get("profile") == self.profile
            }
            missing = self._every - have
            self._pool_enter(1)
            try:
                result = await pool.render(svg, None if missing == self._every else missing)
            finally:
                self._pool_enter(-1)
            self.stats.rendered += 1
            stored = await store_renditions(
                self.aws, settings, item.image, result.renditions, self.profile
            )
        except ObjectTooLarge as exc:
            reason = f"original is {exc.size:,} bytes, over the limit of {exc.limit:,}"
        except RenderRejected as exc:
            reason = exc.reason
        except RenderCrashed as exc:
            reason = str(exc)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") in ("NoSuchKey", "404"):
                reason = "original missing from S3"
            else:
                reason = f"S3 error: {error.get('Code', 'unknown')}"
        except BotoCoreError as exc:
            reason = f"S3 error: {type(exc).__name__}"
        else:
            self.stats.outputs += len(stored)
            self.stats.output_bytes += sum(r["bytes"] for r in stored)
            made = {(r["width"], r["format"]) for r in stored}
            kept = [r for r in item.renditions if (r.get("width"), r.get("format")) not in made]
            return _Outcome(item, result.source_width, result.source_height, stored + kept)
        self.stats.fail(item.image, reason)
        return _Outcome(item)

    def _pool_enter(self, change: int) -> None:
        now = time.monotonic()
        if self._at_pool < self._workers and not self._draining:
            self.stats.pool_starved += now - self._at_pool_since
        self._at_pool += change
        self._at_pool_since = now

    async def _write(self, outcomes: asyncio.Queue[_Outcome | None]) -> None:
        """Update rows in batches, with the checkpoint in the same transaction."""
        pending: list[_Outcome] = []
        deadline = 0.0
        try:
            while True:
                timeout = max(0.0, deadline - time.monotonic()) if pending else None
                try:
                    outcome = await asyncio.wait_for(outcomes.get(), timeout)
                except TimeoutError:
                    outcome = _FLUSH
                if outcome is None:
                    break
                if outcome is not _FLUSH:
                    if not pending:
                        deadline = time.monotonic() + _FLUSH_SECONDS
                    pending.append(outcome)
                    if len(pending) < _FLUSH_ROWS:
                        continue
                batch, pending = pending, []
                await _uninterrupted(self._flush(batch))
            batch, pending = pending, []
            await _uninterrupted(self._flush(batch))
        except asyncio.CancelledError:
            # Interrupted: keep what is already rendered and stored, so a rerun skips it.
            # ``pending`` never holds a batch already written: flushes are not interruptible.
            while not outcomes.empty():
                if (outcome := outcomes.get_nowait()) not in (None, _FLUSH):
                    pending.append(outcome)
            if pending:
                async with asyncio.timeout(10):
                    await self._flush(pending)
            raise

    async def _flush(self, outcomes: Sequence[_Outcome]) -> None:
        if not outcomes:
            return
        updates = [
            (o.item.image, o.renditions, o.width, o.height)
            for o in outcomes
            if o.renditions is not None
        ]
        # The checkpoint moves past the leading pages these outcomes complete; counters change
        # only once the transaction commits (flushes are never cut in the middle: _uninterrupted).
        finishing = Counter(id(o.item.page) for o in outcomes)
        complete = 0
        for page in self._pages:
            if page.remaining - finishing[id(page)] > 0:
                break
            complete += 1
        checkpoint = self._pages[complete - 1].last_id if complete else None
        done, failed = len(updates), len(outcomes) - len(updates)
        async with self.db.acquire() as connection:
            async with connection.transaction():
                await connection.executemany(
                    """UPDATE images SET renditions = $2, width = $3, height = $4
                        WHERE id = $1 AND status = 'ready'""",
                    updates,
                )
                await connection.execute(
                    """UPDATE backfill_runs
                          SET last_image_id = coalesce($2, last_image_id), done = done + $3,
                              failed = failed + $4, updated_at = now()
                        WHERE id = $1""",
                    self._run_id,
                    checkpoint,
                    done,
                    failed,
                )
            for outcome in outcomes:
                outcome.item.page.remaining -= 1
            for _ in range(complete):
                self._pages.popleft()
            self.stats.done += done


async def _uninterrupted(flush: Coroutine[Any, Any, None]) -> None:
    """Run a flush to its end even if the caller is cancelled meanwhile, then re-raise.

    A flush cancelled between its commit and its bookkeeping would count the rows twice
    and move the checkpoint past pages not yet written, so it is never cut in the middle.
    """
    task = asyncio.ensure_future(flush)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real error of nested task groups (a DB or bug error, not a cancellation)."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


_FLUSH = _Outcome(_Item(_NIL, "", [], _Page(_NIL, 0)))  # the writer's "flush now" marker


# --- progress and summary --------------------------------------------------------------------


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def progress_line(stats: BackfillStats, width: int = 24) -> str:
    finished = stats.done + stats.failed
    total = max(stats.to_render, finished)
    share = finished / total if total else 1.0
    filled = int(share * width)
    rate = finished / stats.elapsed if stats.elapsed > 0 else 0.0
    eta = _duration((total - finished) / rate) if rate > 0 else "--:--"
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {finished:,}/{total:,} {share:4.0%}  "
        f"{rate:6.1f} SVG/s  {stats.outputs / max(stats.elapsed, 1e-9):7.1f} out/s  "
        f"ETA {eta}  failed {stats.failed:,}"
    )


async def show_progress(
    stats: BackfillStats, stream: TextIO = sys.stderr, interval: float = 0.5
) -> None:
    """Refresh one stderr line (\\r) until cancelled; without a terminal, a line every 10 s."""
    tty = stream.isatty()
    every = interval if tty else 10.0
    try:
        while True:
            await asyncio.sleep(every)
            stream.write(("\r" if tty else "") + progress_line(stats) + ("" if tty else "\n"))
            stream.flush()
    finally:
        stream.write(("\r" if tty else "") + progress_line(stats) + "\n")
        stream.flush()


def summary(stats: BackfillStats, selection: Selection, *, interrupted: bool = False) -> str:
    elapsed = stats.elapsed
    lines = [
        f"backfill   {selection.describe()}, profile {stats.profile}"
        + (" (interrupted: rerun the same command to resume)" if interrupted else ""),
    ]
    if stats.resumed_from is not None:
        lines.append(
            f"resumed    after image {stats.resumed_from} "
            f"({stats.earlier_done:,} done, {stats.earlier_failed:,} failed before)"
        )
    lines += [
        f"done       {stats.done:,} images, {stats.outputs:,} renditions "
        f"({stats.output_bytes / 2**20:.1f} MiB)",
        f"skipped    {stats.skipped:,} already up to date",
        f"failed     {stats.failed:,}",
    ]
    for reason, count in stats.failures.most_common(10):
        lines.append(f"  {count:>6,} × {reason}  (e.g. image {stats.failure_examples[reason]})")
    if len(stats.failures) > 10:
        lines.append(f"  … and {len(stats.failures) - 10} other reasons")
    rate = (stats.done + stats.failed) / elapsed if elapsed > 0 else 0.0
    lines.append(
        f"elapsed    {_duration(elapsed)} ({elapsed:.1f} s), {rate:.1f} SVGs/s, "
        f"{stats.outputs / elapsed if elapsed > 0 else 0:.1f} renditions/s, render pool fed "
        f"{1 - stats.pool_starved / elapsed if elapsed > 0 else 1:.0%} of the time"
    )
    return "\n".join(lines)
