"""The checkpointed pipeline: one shard of a selection, rendered and stored, resumable.

    scan (keyset pages of ``batch_size`` rows, one connection)
      → ``in_flight`` image tasks (the pool's capacity + 8 per render worker): get the
        original (S3, capped by ``s3_concurrency``)
        → render in the RenderPool (``render_workers`` processes; the other tasks wait with
          their SVG in memory, so the pool always has the next render queued), where the
          worker that rendered an image also puts its renditions (its store threads)
      → one writer: ``executemany`` of the row updates plus the checkpoint, in one transaction,
        every 100 images or half a second (one connection).

Resumable: the checkpoint (``backfill_runs.last_image_id``, one run row per shard) only moves
past a page once every image of it is written or failed, in the same transaction as those
rows. After a kill, the same command resumes from the checkpoint and skips, through the
selection itself, images already written past it: only the images in flight at the kill are
rendered again. A run that ends is marked finished; the next run of the same selection starts
over and finds (in SQL) only what is still missing, e.g. images that failed for a transient
S3 error.

An image is updated with ``status = 'ready'`` still required, so a concurrent change is never
undone; renditions of sizes or formats no longer configured are kept in the row. Objects of an
older profile stay in S3 (clients may have cached pages naming them).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from botocore.exceptions import BotoCoreError, ClientError
from ingest_common.aws import Aws, ObjectTooLarge

from ingest_processor.backfill.selection import Selection, SelectionSql, Shard
from ingest_processor.backfill.settings import BackfillSettings
from ingest_processor.backfill.stats import BackfillStats, CpuMeter
from ingest_processor.pool import RenderCrashed, RenderPool, render_pool
from ingest_processor.render import RenderRejected
from ingest_processor.renditions import render_profile, store_order, target
from ingest_processor.settings import IN_FLIGHT_PER_WORKER
from ingest_processor.stored import stored_entries

_NIL = uuid.UUID(int=0)
_FLUSH_ROWS = 100
_FLUSH_SECONDS = 0.5


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


def in_flight_for(workers: int) -> int:
    """Images a shard with ``workers`` render workers holds at once (the most a kill renders
    twice): every render the pool admits, plus the processor's images per worker for S3 to
    overlap with them. Not from ``s3_concurrency``: that caps requests, and a shard inherits
    it for the whole machine."""
    return RenderPool.capacity_for(workers) + IN_FLIGHT_PER_WORKER * workers


class Backfill:
    """``await Backfill(settings, aws, db, selection).run()``; ``stats`` is live meanwhile.

    With ``shard``, only that shard's images, under that shard's own checkpoint.
    """

    def __init__(
        self,
        settings: BackfillSettings,
        aws: Aws,
        db: asyncpg.Pool,
        selection: Selection,
        *,
        shard: Shard | None = None,
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
        self.shard = shard or Shard()
        self.sql = SelectionSql(selection, self.shard, self.target, self.profile)
        self.stats = BackfillStats(profile=self.profile)
        self._pool = pool
        workers = pool.workers if pool else settings.render_workers
        self.in_flight = in_flight_for(workers)
        self._workers = workers
        self._at_pool = 0  # renders submitted to the pool (running or waiting for a worker)
        self._at_pool_since = 0.0
        self._draining = False
        self._pages: deque[_Page] = deque()
        self._run_id = 0

    # --- the run -----------------------------------------------------------------------

    async def run(self) -> BackfillStats:
        if self._pool is not None:
            return await self._run(self._pool)
        async with render_pool(self.settings, puts=self.aws.put_settings()) as pool:
            return await self._run(pool)

    async def _run(self, pool: RenderPool) -> BackfillStats:
        self.stats.started = self._at_pool_since = time.monotonic()
        cpu = CpuMeter(pool.worker_pids)
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
        self.stats.cpu_render, self.stats.cpu_client = cpu.read()
        self.stats.finished = time.monotonic()
        return self.stats

    async def _open_run(self) -> uuid.UUID:
        key = self.sql.run_key()
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
        self.stats.shards_resumed = int(row["last_image_id"] is not None)
        self.stats.earlier_done = row["done"]
        self.stats.earlier_failed = row["failed"]
        return row["last_image_id"] or _NIL

    async def _count(self, start: uuid.UUID) -> None:
        query, params = self.sql.count()
        async with self.db.acquire() as connection:
            row = await connection.fetchrow(query, start, *params)
        assert row is not None
        self.stats.in_scope = row["in_scope"]
        self.stats.to_render = row["stale"]

    async def _scan(self, start: uuid.UUID, work: asyncio.Queue[_Item | None]) -> None:
        """Keyset pages of stale images, in id order; the bounded queue keeps memory flat."""
        batch = self.settings.backfill_batch_size
        query, params = self.sql.page(batch)
        last = start
        while True:
            async with self.db.acquire() as connection:
                rows = await connection.fetch(query, last, *params)
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
            store = store_order(
                settings, item.image, self.profile, await self.aws.s3_objects.credentials()
            )
            self._pool_enter(1)
            try:
                result = await pool.render(
                    svg, None if missing == self._every else missing, store=store
                )
            finally:
                self._pool_enter(-1)
            self.stats.rendered += 1
            # Its worker put them; this records them.
            stored = stored_entries(result, self.aws.s3_objects.endpoint, self.profile)
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
