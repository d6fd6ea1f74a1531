"""The reliability suite's harness: the stack as processes, the sample uploads, waiting
out a fault (on connections of the test's own), and the final check of the end state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from ingest_cli.status import UploadStatus, load_status
from ingest_cli.upload import Uploaded, upload_set
from ingest_common.aws import Aws
from ingest_common.db.pool import connect
from ingest_devstack.local import ServiceProcesses

from tests.conftest import SAMPLE
from tests.reliability.delivered import events_delivered, listen, listening
from tests.reliability.endstate import end_state, sweep_all

SETS = (SAMPLE / "mdi-essentials", SAMPLE / "openmoji-sampler")
IMAGES = 24 + 12

# Short timeouts so that a crashed consumer's messages come back within the test.
FAST = {
    "receive_wait_seconds": "2",
    "visibility_timeout": "15",
    "heartbeat_interval": "4",
    "retry_base_delay": "0.5",
    "retry_max_delay": "5",
    "drain_timeout": "10",
    "safety_net_delay": "60",
    "render_workers": "1",
    "log_format": "json",
    "garbage_delay": "0",  # the end state is checked after a sweep: nothing left to wait for
}


@asynccontextmanager
async def stack(env: dict[str, str], logs: Path) -> AsyncIterator[ServiceProcesses]:
    """The four services as processes; waiting happens off the event loop, which may be
    serving a proxy the services talk through."""
    logs.mkdir(parents=True, exist_ok=True)
    running = ServiceProcesses(env, logs)
    try:
        for name in ("batcher", "processor", "previewer", "indexer"):
            running.start(name)
        await asyncio.to_thread(running.wait_ready)
        yield running
    finally:
        await asyncio.to_thread(running.stop)


async def upload_sets(aws: Aws) -> list[Uploaded]:
    """The sample sets, uploaded after subscribing to the domain events (checked at the end)."""
    await listen(aws)
    return [await upload_set(aws, folder, "acme") for folder in SETS]


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.1)


async def finish_and_check(
    aws: Aws,
    dsn: str,
    uploads: list[Uploaded],
    data_lost: Callable[[int], None],
    *,
    expected_ready: int = IMAGES,
    expected_failed: int = 0,
    timeout: float = 180,
) -> None:
    """Wait until every upload has finished, sweep, then check the complete end state."""
    statuses = await wait_finished(dsn, uploads, timeout)
    await sweep_all(aws, dsn)
    state = await end_state(
        aws, dsn, expected_ready=expected_ready, expected_failed=expected_failed
    )
    data_lost(state.lost)
    assert len(statuses) == len(uploads)
    assert all(s.finished for s in statuses), [s.upload["status"] for s in statuses]
    state.assert_complete()
    if url := await listening(aws):
        products = {str(s.product["id"]) for s in statuses if s.product}
        told = await events_delivered(aws, dsn, url, products)
        data_lost(told.lost)
        told.assert_complete()


async def wait_finished(
    dsn: str, uploads: list[Uploaded], timeout: float = 180
) -> list[UploadStatus]:
    """Poll (on a connection of its own) until every upload is searchable, or give up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            connection = await connect(dsn)
            try:
                statuses = [await load_status(connection, u.upload_id) for u in uploads]
            finally:
                await connection.close()
        except (OSError, asyncpg.PostgresError):
            statuses = []  # the database is being interfered with: look again
        if statuses and all(s is not None and s.finished for s in statuses):
            return [s for s in statuses if s is not None]
        if time.monotonic() > deadline:
            return [s for s in statuses if s is not None]
        await asyncio.sleep(0.5)


async def count_ready(dsn: str) -> int:
    connection = await connect(dsn)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM images WHERE status = 'ready'"))
    finally:
        await connection.close()
