"""Periodic maintenance a service hosts beside its consumer (reconciliation, sweeping).

Every process of the service may host the same task; a row per task in
`maintenance_runs` says whose turn it is: the process that claims the row runs the task,
and the others find it claimed until `interval` seconds have passed. A task that fails is
logged and tried again at the next turn. Nothing runs while a dependency is down.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import structlog

from ingest_common.runtime.dependencies import Dependencies

log = structlog.get_logger("ingest.periodic")

MAX_CHECK_PERIOD = 60.0  # seconds between looking whether it is this process's turn

_CLAIM = """
INSERT INTO maintenance_runs (task, claimed_at) VALUES ($1, now())
ON CONFLICT (task) DO UPDATE SET claimed_at = now(), finished_at = NULL, summary = NULL
 WHERE maintenance_runs.claimed_at <= now() - make_interval(secs => $2)
RETURNING task
"""
_FINISHED = "UPDATE maintenance_runs SET finished_at = now(), summary = $2 WHERE task = $1"


@dataclass(frozen=True)
class Periodic:
    name: str
    interval: float  # seconds between runs across all processes; 0 disables the task
    run: Callable[[], Awaitable[dict[str, object]]]  # returns a summary, logged and stored


async def claim(db: asyncpg.Pool, name: str, interval: float) -> bool:
    """Whether this process takes this turn of `name`."""
    return await db.fetchval(_CLAIM, name, interval) is not None


async def run_periodic(task: Periodic, db: asyncpg.Pool, dependencies: Dependencies) -> None:
    """Forever: at each turn this process claims, run the task (cancel to stop)."""
    if task.interval <= 0:
        return
    period = min(task.interval, MAX_CHECK_PERIOD)
    while True:
        # Jitter: processes started together do not all ask at the same moment.
        await asyncio.sleep(period * random.uniform(0.5, 1.0))
        if not dependencies.up:
            continue
        try:
            if not await claim(db, task.name, task.interval):
                continue
            started = time.monotonic()
            summary = await task.run()
            await db.execute(_FINISHED, task.name, json.loads(json.dumps(summary, default=str)))
        except Exception:
            log.exception("periodic.failed", task=task.name)
            continue
        log.info(
            "periodic.done", task=task.name, seconds=round(time.monotonic() - started, 3), **summary
        )
