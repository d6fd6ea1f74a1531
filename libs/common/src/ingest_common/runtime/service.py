"""Wiring shared by every service: logging, tracing, clients, pool, health, signals.

A service's `main` is three lines: read its settings, name its queue, and pass the
factory that builds its handler from the shared resources.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar, cast

import asyncpg
import structlog
from pydantic import BaseModel

from ingest_common.aws import Aws
from ingest_common.db.pool import create_pool
from ingest_common.runtime.consumer import Consumer, Delivery
from ingest_common.runtime.health import Health, bound_port, start_health_server
from ingest_common.settings import IngestSettings
from ingest_common.telemetry import configure_telemetry

M = TypeVar("M")
log = structlog.get_logger("ingest.service")


@dataclass(frozen=True)
class Resources:
    """What a handler may touch; handlers get these, never globals."""

    settings: IngestSettings
    aws: Aws
    db: asyncpg.Pool


class Handler(Protocol[M]):
    def parse(self, body: str) -> M: ...

    async def handle(self, message: M, delivery: Delivery) -> None: ...


HandlerFactory = Callable[[Resources], AbstractAsyncContextManager[Handler[Any]]]

ModelT = TypeVar("ModelT", bound=BaseModel)
SettingsT = TypeVar("SettingsT", bound=IngestSettings)


class ServiceHandler(Generic[ModelT, SettingsT]):
    """What every service's handler shares: its resources, its settings, parsing its model.

    A service names its message model and settings class and writes `handle`; it
    overrides `open` only to hold resources of its own (the processor's render pool).
    """

    message_model: ClassVar[type[BaseModel]]
    settings_class: ClassVar[type[IngestSettings]]

    def __init__(self, resources: Resources) -> None:
        if not isinstance(resources.settings, self.settings_class):
            raise TypeError(f"{type(self).__name__} needs {self.settings_class.__name__}")
        self.settings = cast(SettingsT, resources.settings)
        self.aws = resources.aws
        self.db = resources.db

    @classmethod
    @asynccontextmanager
    async def open(cls, resources: Resources) -> AsyncIterator[Self]:
        yield cls(resources)

    def parse(self, body: str) -> ModelT:
        return cast(ModelT, self.message_model.model_validate_json(body))


def run_service(settings: IngestSettings, queue: str, build: HandlerFactory) -> None:
    """The entry point of every service process."""
    telemetry = configure_telemetry(
        settings.service_name, log_format=settings.log_format, log_level=settings.log_level
    )
    try:
        asyncio.run(serve(settings, queue, build))
    finally:
        telemetry.shutdown()


async def serve(settings: IngestSettings, queue: str, build: HandlerFactory) -> None:
    health = Health(queue=queue, liveness_ttl=settings.receive_wait_seconds + 60)
    runner = await start_health_server(health, settings.health_host, settings.health_port)
    log.info("service.starting", queue=queue, health_port=bound_port(runner))
    try:
        db = await _connect_with_retry(settings)
        try:
            async with Aws(settings) as aws, build(Resources(settings, aws, db)) as handler:
                consumer = Consumer(settings, aws, queue, handler.parse, handler.handle, health)
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, consumer.stop)
                await consumer.run()
        finally:
            await db.close()
    finally:
        await runner.cleanup()


async def _connect_with_retry(settings: IngestSettings, attempts: int = 10) -> asyncpg.Pool:
    """Containers start in any order: wait for the database rather than crash-looping."""
    for attempt in range(1, attempts + 1):
        try:
            return await create_pool(settings)
        except (OSError, asyncpg.PostgresError) as exc:
            if attempt == attempts:
                raise
            log.warning("service.db_unavailable", attempt=attempt, error=str(exc))
            await asyncio.sleep(min(10.0, 0.5 * 2**attempt))
    raise AssertionError("unreachable")
