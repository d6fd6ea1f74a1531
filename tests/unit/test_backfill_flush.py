"""A backfill flush is never cut between its commit and its bookkeeping."""

from __future__ import annotations

import asyncio

import pytest
from ingest_processor.backfill import _uninterrupted


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
