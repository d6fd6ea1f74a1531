"""The services' asyncpg pool: JSON decodes to Python, and a release costs no round trip."""

from __future__ import annotations

import asyncpg
from ingest_common.db.pool import create_pool
from ingest_common.settings import IngestSettings


async def _last_query(dsn: str, pid: int) -> str:
    observer = await asyncpg.connect(dsn)
    try:
        query = await observer.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid)
    finally:
        await observer.close()
    assert isinstance(query, str)
    return query


async def test_a_release_sends_nothing_and_rolls_back_an_open_transaction(
    settings: IngestSettings,
) -> None:
    small = settings.model_copy(update={"db_pool_min": 1, "db_pool_max": 1})
    pool = await create_pool(small)
    try:
        async with pool.acquire() as connection:
            pid = connection.get_server_pid()
            assert await connection.fetchval("SELECT '{\"a\": 1}'::jsonb") == {"a": 1}
        # asyncpg's default reset would be the backend's last statement now.
        assert await _last_query(settings.database_url, pid) == ("SELECT '{\"a\": 1}'::jsonb")

        async with pool.acquire() as connection:
            await connection.execute("BEGIN")  # not a managed transaction: left open
            await connection.execute("CREATE TEMP TABLE left_open (x int)")
        async with pool.acquire() as connection:
            assert connection.get_server_pid() == pid
            assert not connection.is_in_transaction()
            # Rolled back, so the table went with it.
            assert await connection.fetchval("SELECT to_regclass('pg_temp.left_open')") is None
    finally:
        await pool.close()
