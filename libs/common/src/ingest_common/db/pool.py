"""The asyncpg pool: JSON columns decode to Python, and every connection is checked."""

from __future__ import annotations

import json
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ingest_common.settings import IngestSettings


async def init_connection(connection: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await connection.set_type_codec(
            name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def no_session_state(connection: asyncpg.Connection) -> None:
    """What a pooled connection needs reset on release beyond what asyncpg always does (roll
    back an open transaction, drop listeners): nothing. Pooled connections keep no session
    state; LISTEN, session advisory locks and SET belong on a connection of their own
    (`connect`). asyncpg's default reset is a round trip to the server on every release
    (`SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`), two or three per
    rendered image."""


async def create_pool(settings: IngestSettings) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        command_timeout=settings.db_command_timeout,
        timeout=settings.db_connect_timeout,
        init=init_connection,
        reset=no_session_state,
    )
    assert pool is not None
    return pool


async def connect(dsn: str, *, connect_timeout: float = 60) -> asyncpg.Connection:
    """One connection outside the pool (commands, tests, the outbox's LISTEN), with the
    pool's JSON codecs."""
    connection = await asyncpg.connect(dsn, timeout=connect_timeout)
    await init_connection(connection)
    return connection


# What handlers pass around: a plain connection or one borrowed from the pool.
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
