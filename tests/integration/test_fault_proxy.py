"""The fault proxy in front of the real PostgreSQL and the moto server: each mode does what
the reliability tests rely on, for a database protocol and for HTTP alike."""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from contextlib import closing
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.reliability.proxy import FaultProxy

pytestmark = pytest.mark.timeout(60)

QUICK = 1.0  # a refusal or reset comes back at once, well within this
WAIT = 1.0  # the clients' own timeout while black-holed


def target(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


@pytest.fixture
def pg_proxy(database_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(*target(database_url)) as proxy:
        yield proxy


@pytest.fixture
def moto_proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    with FaultProxy(*target(moto_endpoint)) as proxy:
        yield proxy


def get(connection: http.client.HTTPConnection) -> int:
    connection.request("GET", "/moto-api/")
    response = connection.getresponse()
    response.read()
    return response.status


def http_connection(proxy: FaultProxy, timeout: float = WAIT) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=timeout)


def get_on_new_connection(proxy: FaultProxy) -> int:
    with closing(http_connection(proxy)) as connection:
        return get(connection)


async def test_dsn_points_at_the_proxy(pg_proxy: FaultProxy) -> None:
    dsn = pg_proxy.dsn("postgresql://user:secret@db.example:5432/name?sslmode=disable")
    assert dsn == f"postgresql://user:secret@127.0.0.1:{pg_proxy.port}/name?sslmode=disable"
    assert pg_proxy.dsn("postgres://h/d") == f"postgres://127.0.0.1:{pg_proxy.port}/d"


async def test_postgres_refused_then_up_on_the_same_port(
    pg_proxy: FaultProxy, database_url: str
) -> None:
    dsn = pg_proxy.dsn(database_url)
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        assert await connection.fetchval("SELECT 1") == 1
        counters = pg_proxy.counters
        assert (counters.accepted, counters.open) == (1, 1)
        assert counters.bytes_to_target > 0
        assert counters.bytes_to_client > 0

        pg_proxy.refuse()
        started = time.monotonic()
        with pytest.raises(asyncpg.ConnectionDoesNotExistError):
            await connection.fetchval("SELECT 1", timeout=5)  # reset, not left hanging
        with pytest.raises(ConnectionRefusedError):
            await asyncpg.connect(dsn, timeout=5)
        assert time.monotonic() - started < QUICK
    finally:
        connection.terminate()

    port = pg_proxy.port
    pg_proxy.up()
    assert pg_proxy.port == port
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        assert await connection.fetchval("SELECT 2") == 2
    finally:
        await connection.close()


async def test_postgres_black_holed_then_up(pg_proxy: FaultProxy, database_url: str) -> None:
    dsn = pg_proxy.dsn(database_url)
    busy = await asyncpg.connect(dsn, timeout=5)
    idle = await asyncpg.connect(dsn, timeout=5)
    try:
        pg_proxy.blackhole()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await busy.fetchval("SELECT 1", timeout=WAIT)
        with pytest.raises(TimeoutError):
            await asyncpg.connect(dsn, timeout=WAIT)
        assert time.monotonic() - started >= 2 * WAIT * 0.9, "each waited for its own timeout"
        assert not idle.is_closed(), "no FIN or RST reached the client"

        pg_proxy.up()
        # The held connection is broken now, as after a real partition.
        with pytest.raises((asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError)):
            await idle.fetchval("SELECT 1", timeout=5)
        fresh = await asyncpg.connect(dsn, timeout=5)
        try:
            assert await fresh.fetchval("SELECT 3") == 3
        finally:
            await fresh.close()
    finally:
        busy.terminate()
        idle.terminate()


def test_http_refused_then_up_on_the_same_port(moto_proxy: FaultProxy) -> None:
    kept = http_connection(moto_proxy)
    try:
        assert get(kept) == 200
        moto_proxy.refuse()
        started = time.monotonic()
        with pytest.raises(ConnectionError):  # the kept-alive connection was reset
            get(kept)
        with pytest.raises(ConnectionRefusedError):
            get_on_new_connection(moto_proxy)
        assert time.monotonic() - started < QUICK
    finally:
        kept.close()

    port = moto_proxy.port
    moto_proxy.up()
    assert moto_proxy.port == port
    assert get_on_new_connection(moto_proxy) == 200


def test_http_black_holed_then_up(moto_proxy: FaultProxy) -> None:
    busy, idle = http_connection(moto_proxy), http_connection(moto_proxy)
    try:
        assert get(busy) == 200
        assert get(idle) == 200
        moto_proxy.blackhole()
        before = moto_proxy.counters
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            get(busy)  # the request is sent, no answer comes
        with pytest.raises(TimeoutError):
            get_on_new_connection(moto_proxy)  # the connect succeeds, then nothing
        assert time.monotonic() - started >= 2 * WAIT * 0.9
        after = moto_proxy.counters
        assert after.accepted == before.accepted + 1
        assert after.bytes_to_target == before.bytes_to_target, "nothing forwarded"

        moto_proxy.up()
        with pytest.raises(ConnectionError):  # the held connection is broken now
            get(idle)
        assert get_on_new_connection(moto_proxy) == 200
    finally:
        busy.close()
        idle.close()


async def test_serves_while_the_test_loop_is_blocked(moto_proxy: FaultProxy) -> None:
    """The proxy's loop is its own: blocking calls in a test's coroutine still get through."""
    moto_proxy.refuse()  # switched from the test's loop thread
    moto_proxy.up()
    connection = http_connection(moto_proxy, timeout=5)
    try:
        assert get(connection) == 200  # blocks this loop for the whole request
    finally:
        connection.close()
