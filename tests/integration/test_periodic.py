"""Periodic maintenance against the real PostgreSQL: one claim per turn however many
processes ask, a turn every `interval`, and a task that fails runs again at its next turn."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from ingest_common.runtime.dependencies import Dependencies
from ingest_common.runtime.periodic import Periodic, claim, run_periodic
from ingest_common.settings import IngestSettings

from tests.integration.pipeline import fetch_row

pytestmark = pytest.mark.timeout(120)


async def test_two_concurrent_claims_one_wins(db: asyncpg.Pool) -> None:
    # Each claim on a connection of its own, in flight at the same time.
    for round_ in range(5):
        name = f"race-{round_}"
        results = await asyncio.gather(claim(db, name, 60), claim(db, name, 60))
        assert sorted(results) == [False, True], f"round {round_}: {results}"


async def test_a_claim_within_the_interval_is_refused_and_after_it_granted(
    db: asyncpg.Pool,
) -> None:
    assert await claim(db, "x", 60)
    assert not await claim(db, "x", 60)
    assert not await claim(db, "x", 60)
    # The turn ends `interval` seconds after the claim: move the claim back past it.
    await db.execute(
        "UPDATE maintenance_runs SET claimed_at = claimed_at - interval '59 seconds'"
        " WHERE task = 'x'"
    )
    assert not await claim(db, "x", 60), "claimed 59 s ago: still this turn"
    await db.execute(
        "UPDATE maintenance_runs SET claimed_at = claimed_at - interval '2 seconds'"
        " WHERE task = 'x'"
    )
    assert await claim(db, "x", 60)
    row = await fetch_row(db, "SELECT now() - claimed_at AS age FROM maintenance_runs")
    assert row["age"].total_seconds() < 5, "the new claim starts a new turn"
    assert not await claim(db, "x", 60)


async def test_a_short_interval_passes_by_itself(db: asyncpg.Pool) -> None:
    assert await claim(db, "quick", 0.5)
    assert not await claim(db, "quick", 0.5)
    await asyncio.sleep(0.7)
    assert await claim(db, "quick", 0.5)
    # Tasks are independent: another name has its own turn.
    assert await claim(db, "other", 0.5)


def always_up(settings: IngestSettings) -> Dependencies:
    """No probes: every dependency (there are none) is up."""
    return Dependencies(settings, {})


async def run_for(
    seconds: float, runners: list[Awaitable[None]], *, settled: Callable[[], Awaitable[bool]]
) -> None:
    """Run the runners for `seconds`, then until `settled` (so no run is cut off mid-way)."""
    tasks = [asyncio.ensure_future(runner) for runner in runners]
    try:
        await asyncio.sleep(seconds)
        async with asyncio.timeout(10):
            while not await settled():
                await asyncio.sleep(0.02)
        for task in tasks:
            assert not task.done(), f"a runner ended: {task}"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def at_once() -> bool:
    return True


def finished(db: asyncpg.Pool, name: str) -> Callable[[], Awaitable[bool]]:
    """Whether the last turn of `name` has finished (its summary is stored)."""

    async def check() -> bool:
        return bool(
            await db.fetchval(
                "SELECT finished_at IS NOT NULL FROM maintenance_runs WHERE task = $1", name
            )
        )

    return check


async def test_two_runners_run_a_task_about_once_per_interval(
    db: asyncpg.Pool, settings: IngestSettings
) -> None:
    interval, window = 1.0, 8.0
    runs: list[tuple[str, float]] = []

    def task_for(runner: str) -> Callable[[], Awaitable[dict[str, object]]]:
        async def run() -> dict[str, object]:
            runs.append((runner, time.monotonic()))
            return {"runner": runner, "run": len(runs)}

        return run

    await run_for(
        window,
        [
            run_periodic(Periodic("tidy", interval, task_for(r)), db, always_up(settings))
            for r in ("a", "b")
        ],
        settled=finished(db, "tidy"),
    )
    starts = [at for _, at in runs]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    # Each runner looks every 0.5–1 interval, so a turn is taken within 1–2 intervals.
    assert window / (2 * interval) - 1 <= len(runs) <= window / interval + 1, runs
    assert all(gap > interval - 0.1 for gap in gaps), f"two runs in one turn: {gaps}"
    row = await fetch_row(db, "SELECT * FROM maintenance_runs WHERE task = 'tidy'")
    assert row["summary"] == {"runner": runs[-1][0], "run": len(runs)}, "the last turn's summary"


async def test_a_task_that_raises_runs_again_at_its_next_turn(
    db: asyncpg.Pool, settings: IngestSettings
) -> None:
    attempts: list[float] = []

    async def flaky() -> dict[str, object]:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise RuntimeError("the bucket listing broke")
        return {"attempt": len(attempts)}

    await run_for(
        3.0,
        [run_periodic(Periodic("flaky", 1.0, flaky), db, always_up(settings))],
        settled=finished(db, "flaky"),
    )
    assert len(attempts) >= 2, "no turn after the failure"
    assert attempts[1] - attempts[0] > 0.9, "the failed turn was retried at once, not next turn"
    row = await fetch_row(db, "SELECT * FROM maintenance_runs WHERE task = 'flaky'")
    assert row["summary"] == {"attempt": len(attempts)}, "a later turn succeeded and recorded it"


async def test_nothing_runs_while_a_dependency_is_down(
    db: asyncpg.Pool, settings: IngestSettings
) -> None:
    async def unreachable() -> None:
        raise ConnectionRefusedError("the dependency is down")

    dependencies = Dependencies(settings, {"s3": unreachable})
    assert not await dependencies.check()
    runs: list[float] = []

    async def task() -> dict[str, object]:
        runs.append(time.monotonic())
        return {}

    await run_for(
        3.0,
        [run_periodic(Periodic("held", 0.5, task), db, dependencies)],
        settled=at_once,
    )
    assert runs == []
    assert await db.fetchval("SELECT count(*) FROM maintenance_runs WHERE task = 'held'") == 0


async def test_an_interval_of_zero_disables_the_task(
    db: asyncpg.Pool, settings: IngestSettings
) -> None:
    async def task() -> dict[str, object]:
        raise AssertionError("a disabled task ran")

    # It returns at once instead of looping.
    await asyncio.wait_for(run_periodic(Periodic("off", 0, task), db, always_up(settings)), 1)
    assert await db.fetchval("SELECT count(*) FROM maintenance_runs WHERE task = 'off'") == 0
