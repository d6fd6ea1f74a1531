"""A backfill as shard processes: the S3 client and SQL work spread over the cores like renders.

One event loop spends a few ms of CPU per image on S3 requests, SQL and pickling, and can
spend at most one CPU: on many cores it, not the render workers, would set the pace
(``bench/backfill.py`` projects a 16-core machine). So a run of K shards is K processes, each
a ``Backfill`` of one shard (the images whose id hashes to it, ``Shard``) with its own event
loop, S3 client, database pool (two connections busy), checkpoint and share of the render
workers. This process only starts them and combines the stats they send.

A shard's checkpoint is its own run row, so a killed run resumes shard by shard; every image
belongs to exactly one shard, so none is rendered by two. Resuming with another shard count
starts new runs, which skip (in SQL) every image already up to date.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import pickle
import signal
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

from ingest_common.aws import Aws
from ingest_common.db.pool import create_pool

from ingest_processor.backfill.pipeline import Backfill
from ingest_processor.backfill.selection import Selection, SelectionError, Shard
from ingest_processor.backfill.settings import BackfillSettings
from ingest_processor.backfill.stats import BackfillStats, combine
from ingest_processor.renditions import render_profile
from ingest_processor.worker import die_with_parent

_SPAWN = multiprocessing.get_context("spawn")
_REPORT_SECONDS = 0.25  # how often a shard sends its stats (the progress line's refresh)
_STOP_SECONDS = 30.0  # a stopped shard's time to write what it has before it is killed


def default_shards(settings: BackfillSettings) -> int:
    """One shard per render worker: each render worker gets an event loop of its own."""
    return settings.render_workers


class ShardedBackfill:
    """``await ShardedBackfill(settings, selection, shards).run()``; ``stats`` (all shards
    combined) is live meanwhile. One shard runs in this process, more in their own."""

    def __init__(self, settings: BackfillSettings, selection: Selection, shards: int) -> None:
        Shard(0, shards)  # a valid count
        if shards > settings.render_workers:
            raise SelectionError(
                f"{shards} shards need at least as many render workers, got "
                f"{settings.render_workers}"
            )
        selection.check(settings.render_spec())
        self.settings = settings
        self.selection = selection
        self.shards = shards
        profile = render_profile(settings.render_spec())
        self._parts = [BackfillStats(profile=profile) for _ in range(shards)]
        self._here: Backfill | None = None
        self._started = time.monotonic()
        self._finished: float | None = None

    @property
    def stats(self) -> BackfillStats:
        if self._here is not None:
            return self._here.stats
        return combine(self._parts, self._started, self._finished)

    async def run(self) -> BackfillStats:
        self._started = time.monotonic()
        if self.shards == 1:
            return await self._run_here()
        processes = [
            _ShardProcess(shard_settings(self.settings, shard), self.selection, shard)
            for shard in (Shard(index, self.shards) for index in range(self.shards))
        ]
        try:
            async with asyncio.TaskGroup() as group:
                for index, process in enumerate(processes):
                    group.create_task(process.watch(self._parts, index))
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        finally:
            self._finished = time.monotonic()
        return self.stats

    async def _run_here(self) -> BackfillStats:
        db = await create_pool(self.settings)
        try:
            async with Aws(self.settings) as aws:
                self._here = Backfill(self.settings, aws, db, self.selection)
                return await self._here.run()
        finally:
            await db.close()


def shard_settings(settings: BackfillSettings, shard: Shard) -> BackfillSettings:
    """A shard's settings: its share of the render workers. S3 and database caps are per
    process already (each shard keeps enough requests in flight for its own workers)."""
    workers, extra = divmod(settings.render_workers, shard.count)
    return settings.model_copy(update={"render_workers": workers + (shard.index < extra)})


class _ShardProcess:
    """One shard's process, and the stats and error it sends over a pipe."""

    def __init__(self, settings: BackfillSettings, selection: Selection, shard: Shard) -> None:
        self.shard = shard
        self._pipe, self._sending = _SPAWN.Pipe(duplex=False)
        self._process = _SPAWN.Process(
            target=_shard_main,
            args=(settings, selection, shard, self._sending, os.getpid()),
            name=f"backfill-shard-{shard.index}",
        )
        self._messages: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue()
        self._error: BaseException | None = None

    async def watch(self, parts: list[BackfillStats], index: int) -> None:
        """Start the shard; until it exits, put its stats in ``parts[index]``; raise its error.
        Cancelled, stop the shard (it writes what it has) and wait for it."""
        # From the event loop's (the main) thread: the shard's parent-death signal fires when
        # the thread that started it ends, and this one lasts as long as the process.
        self._process.start()
        self._sending.close()
        loop = asyncio.get_running_loop()
        loop.add_reader(self._pipe.fileno(), self._readable)
        try:
            try:
                await self._receive(parts, index)
            except asyncio.CancelledError:
                self._process.terminate()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_STOP_SECONDS):
                        await self._receive(parts, index)
                self._process.kill()  # if it is still there
                raise
        finally:
            loop.remove_reader(self._pipe.fileno())
            self._pipe.close()
            await asyncio.to_thread(self._process.join)
        if self._error is not None:
            raise self._error
        if self._process.exitcode != 0:
            raise RuntimeError(
                f"backfill shard {self.shard.index} of {self.shard.count} exited with "
                f"status {self._process.exitcode}"
            )

    def _readable(self) -> None:
        try:
            while self._pipe.poll():
                self._messages.put_nowait(self._pipe.recv())
        except (EOFError, OSError):
            self._messages.put_nowait(None)  # the shard is gone
            asyncio.get_running_loop().remove_reader(self._pipe.fileno())

    async def _receive(self, parts: list[BackfillStats], index: int) -> None:
        while (message := await self._messages.get()) is not None:
            kind, value = message
            if kind == "stats":
                parts[index] = value
            else:
                self._error = value


# --- in the shard's process --------------------------------------------------------------------


def _shard_main(
    settings: BackfillSettings, selection: Selection, shard: Shard, report: Connection, parent: int
) -> None:
    # A parent killed with SIGKILL runs no clean-up: the kernel stops its shards (which stop
    # their render workers) with SIGTERM, so each writes what it has rendered.
    die_with_parent(parent, signal.SIGTERM)
    code = 0
    try:
        asyncio.run(_run_shard(settings, selection, shard, report))
    except (asyncio.CancelledError, KeyboardInterrupt):
        code = 130  # stopped; what was rendered is written (Backfill's writer)
    except Exception as exc:  # every error goes to the parent, which raises it
        _send(report, ("error", _portable(exc)))
        code = 1
    report.close()
    sys.exit(code)


async def _run_shard(
    settings: BackfillSettings, selection: Selection, shard: Shard, report: Connection
) -> None:
    # SIGTERM (the parent stopping the run) cancels like Ctrl-C: the writer keeps what is done.
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    db = await create_pool(settings)
    try:
        async with Aws(settings) as aws:
            backfill = Backfill(settings, aws, db, selection, shard=shard)
            reporter = asyncio.create_task(_report_every(backfill.stats, report))
            try:
                await backfill.run()
            finally:
                reporter.cancel()
                _send(report, ("stats", backfill.stats))
    finally:
        await db.close()


async def _report_every(stats: BackfillStats, report: Connection) -> None:
    while True:
        await asyncio.sleep(_REPORT_SECONDS)
        _send(report, ("stats", stats))


def _send(report: Connection, message: tuple[str, Any]) -> None:
    with contextlib.suppress(OSError):  # the parent is gone: nobody to tell
        report.send(message)


def _portable(exc: Exception) -> Exception:
    """The error itself if it survives pickling (the CLI explains known ones), else its text."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # any failure to round-trip: send the text
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc
