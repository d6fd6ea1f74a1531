"""A backfill flush is never cut between its commit and its bookkeeping, nor repeated."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest
from ingest_processor.backfill.pipeline import Backfill, _Item, _Outcome, _Page, _uninterrupted


async def test_a_cancelled_caller_waits_for_the_flush_to_finish_then_is_cancelled() -> None:
    steps: list[str] = []
    committed = asyncio.Event()

    async def flush() -> None:
        steps.append("commit")
        committed.set()
        await asyncio.sleep(0.05)  # e.g. releasing the connection after COMMIT
        steps.append("bookkeeping")

    caller = asyncio.create_task(_uninterrupted(flush()))
    await committed.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert steps == ["commit", "bookkeeping"]


async def test_a_failing_flush_raises_its_own_error() -> None:
    async def flush() -> None:
        raise ConnectionResetError("gone")

    with pytest.raises(ConnectionResetError, match="gone"):
        await _uninterrupted(flush())


class _Writer(Backfill):
    """The backfill's writer alone, flushing into a list (no database)."""

    def __init__(self) -> None:  # the writer needs nothing Backfill.__init__ sets up
        self.flushed: list[list[_Outcome]] = []
        self.flushing = asyncio.Event()

    async def _flush(self, outcomes: Sequence[_Outcome]) -> None:
        if outcomes:
            self.flushed.append(list(outcomes))
            self.flushing.set()
            await asyncio.sleep(0.05)  # the transaction


async def test_the_last_batch_is_written_once_when_the_writer_is_cancelled_during_it() -> None:
    # A short run's only flush is its last: a cancel during it must not write it again.
    writer = _Writer()
    outcomes: asyncio.Queue[_Outcome | None] = asyncio.Queue()
    image = uuid.uuid4()
    outcome = _Outcome(_Item(image, "originals/a.svg", [], _Page(image, 1)), 64, 64, [])
    outcomes.put_nowait(outcome)
    outcomes.put_nowait(None)

    task = asyncio.create_task(writer._write(outcomes))
    await writer.flushing.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert writer.flushed == [[outcome]]
