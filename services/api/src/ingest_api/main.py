"""The API process: the routes on INGEST_API_PORT, /healthz, /readyz and /metrics on
INGEST_HEALTH_PORT (as every service), PostgreSQL and S3 checked in the background.

`/healthz` fails only for a stuck process (its event loop, its dependency checks or its
LISTEN loop died); `/readyz` follows PostgreSQL and S3 (ingest_common.runtime). SIGTERM:
not ready, event streams end (clients reconnect elsewhere), requests under way finish
(within INGEST_DRAIN_TIMEOUT).
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass

import asyncpg
import structlog
from aiohttp import web
from ingest_common.aws import Aws
from ingest_common.runtime.dependencies import Dependencies, PostgresProbe, Probe, s3_probe
from ingest_common.runtime.health import Health, bound_port, start_health_server
from ingest_common.runtime.service import connect_until_up
from ingest_common.settings import load_settings
from ingest_common.telemetry import configure_telemetry

from ingest_api.app import Api, build_app, hub_reader
from ingest_api.progress import ProgressHub
from ingest_api.settings import ApiSettings

log = structlog.get_logger("ingest.api")


@dataclass
class ApiHealth(Health):
    """The consumers' health, without a queue: alive, ready, the dependencies."""

    queue: str = "-"

    def snapshot(self) -> dict[str, object]:
        return {
            "alive": self.alive,
            "ready": self.accepting,
            "draining": self.draining,
            "seconds_since_tick": round(time.monotonic() - self.last_tick, 3),
            "dead_loops": self.dead_loops(),
            "dependencies": self.dependencies(),
        }


def api_dependencies(settings: ApiSettings, aws: Aws, db: asyncpg.Pool) -> Dependencies:
    """What the API checks: PostgreSQL and S3 (it sends to no queue)."""
    probes: dict[str, Probe] = {
        "postgres": PostgresProbe(settings),
        "s3": s3_probe(aws, settings.uploads_bucket),
    }

    async def recovered(name: str) -> None:
        if name == "postgres":
            await db.expire_connections()

    return Dependencies(settings, probes, on_recovered=recovered)


def run() -> None:
    settings = load_settings(ApiSettings)
    telemetry = configure_telemetry(settings)
    try:
        asyncio.run(serve(settings))
    finally:
        telemetry.shutdown()


async def serve(settings: ApiSettings) -> None:
    health = ApiHealth()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    health_runner = await start_health_server(
        health, settings.health_host, settings.health_port, settings.health_fd
    )
    ticker = asyncio.create_task(_tick(health))
    log.info("api.starting", health_port=bound_port(health_runner))
    try:
        db = await connect_until_up(settings, stopping)
        if db is None:
            return
        try:
            async with Aws(settings) as aws:
                await _serve_api(settings, db, aws, health, stopping)
        finally:
            await db.close()
    finally:
        ticker.cancel()
        await health_runner.cleanup()


async def _serve_api(
    settings: ApiSettings, db: asyncpg.Pool, aws: Aws, health: ApiHealth, stopping: asyncio.Event
) -> None:
    dependencies = api_dependencies(settings, aws, db)
    hub = ProgressHub(settings, hub_reader(settings, db, aws))
    api = Api(settings, db, aws, hub)
    health.dependencies = dependencies.snapshot
    health.loops = {
        "dependency-checks": asyncio.create_task(dependencies.run(), name="dependency-checks"),
        "progress-listener": asyncio.create_task(hub.run(), name="progress-listener"),
    }
    # On SIGTERM requests under way may take INGEST_DRAIN_TIMEOUT seconds to finish.
    runner = web.AppRunner(build_app(api), access_log=None, shutdown_timeout=settings.drain_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.api_host, settings.api_port)
        await site.start()
        health.ready = True
        log.info("api.listening", port=bound_port(runner), public_base=settings.public_base())
        await stopping.wait()
        log.info("api.stopping")
        health.draining = True
        hub.closing.set()  # event streams end; clients reconnect to another task
    finally:
        await runner.cleanup()
        for task in health.loops.values():
            task.cancel()
        await asyncio.gather(*health.loops.values(), return_exceptions=True)


async def _tick(health: Health) -> None:
    while True:
        health.tick()
        await asyncio.sleep(1.0)
