"""Wiring shared by every service: logging, tracing, clients, pool, health, signals.

A service's `main` is three lines: read its settings, and name each queue it consumes
with the factory that builds its handler from the shared resources (`Consumes`).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar, cast

import asyncpg
import structlog
from pydantic import BaseModel

from ingest_common.aws import Aws
from ingest_common.db.pool import create_pool
from ingest_common.runtime.consumer import Consumer, Delivery
from ingest_common.runtime.dependencies import (
    Dependencies,
    PostgresProbe,
    Probe,
    s3_probe,
    sqs_probe,
)
from ingest_common.runtime.health import (
    Health,
    ServiceHealth,
    bound_port,
    start_health_server,
)
from ingest_common.runtime.periodic import Periodic, run_periodic
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
    uses_s3: ClassVar[bool]

    def parse(self, body: str) -> M: ...

    async def handle(self, message: M, delivery: Delivery) -> None: ...

    async def gave_up(self, message: M, reason: str) -> None: ...

    def periodic(self) -> list[Periodic]: ...

    def background(self, dependencies: Dependencies) -> list[Coroutine[Any, Any, None]]: ...


HandlerFactory = Callable[[Resources], AbstractAsyncContextManager[Handler[Any]]]

ModelT = TypeVar("ModelT", bound=BaseModel)
SettingsT = TypeVar("SettingsT", bound=IngestSettings)


class ServiceHandler(Generic[ModelT, SettingsT]):
    """What every service's handler shares: its resources, its settings, parsing its model.

    A service names its message model and settings class and writes `handle`; it
    overrides `open` only to hold resources of its own (the processor's render pool),
    `gave_up` to record a message that failed its last try before it goes to the DLQ, and
    `periodic` to host maintenance beside its consumer.
    """

    message_model: ClassVar[type[BaseModel]]
    settings_class: ClassVar[type[IngestSettings]]
    uses_s3: ClassVar[bool] = True  # S3 is one of the dependencies its consumer checks

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

    async def gave_up(self, message: ModelT, reason: str) -> None:
        """Nothing to record by default: the DLQ holds the message and its reason."""

    def periodic(self) -> list[Periodic]:
        return []

    def background(self, dependencies: Dependencies) -> list[Coroutine[Any, Any, None]]:
        """Work that runs for the service's life beside its consumer (the outbox's publisher);
        cancelled when it stops. The service's dependency checks are given to pause on."""
        return []


def service_dependencies(
    settings: IngestSettings, aws: Aws, db: asyncpg.Pool, queue: str, *, uses_s3: bool
) -> Dependencies:
    """What a consumer of `queue` checks: PostgreSQL, SQS, and S3 if its handler uses it."""
    postgres = PostgresProbe(settings)
    probes: dict[str, Probe] = {"postgres": postgres, "sqs": sqs_probe(aws, queue)}
    if uses_s3:
        probes["s3"] = s3_probe(aws, settings.uploads_bucket)

    async def recovered(name: str) -> None:
        if name == "postgres":
            # Connections opened before the outage may be half-open (a failover moved the
            # server): replace them all as they come back to the pool.
            await db.expire_connections()

    return Dependencies(settings, probes, on_recovered=recovered)


def consumer_for(
    settings: IngestSettings,
    aws: Aws,
    db: asyncpg.Pool,
    queue: str,
    handler: Handler[Any],
    health: Health,
    dependencies: Dependencies | None = None,
) -> Consumer[Any]:
    """The consumer of `queue` running `handler`, checking the dependencies it uses (or
    `dependencies`, shared by the consumers of one service)."""
    if dependencies is None:
        dependencies = service_dependencies(settings, aws, db, queue, uses_s3=handler.uses_s3)
    return Consumer(
        settings,
        aws,
        queue,
        handler.parse,
        handler.handle,
        health,
        dependencies,
        gave_up=handler.gave_up,
    )


@dataclass(frozen=True)
class Consumes:
    """A queue a service consumes and the factory of the handler that does its messages."""

    queue: str
    build: HandlerFactory
    concurrency: int | None = None  # messages at once; None: INGEST_CONCURRENCY


def run_service(settings: IngestSettings, *consumes: Consumes) -> None:
    """The entry point of every service process."""
    telemetry = configure_telemetry(settings)
    try:
        asyncio.run(serve(settings, *consumes))
    finally:
        telemetry.shutdown()


async def serve(settings: IngestSettings, *consumes: Consumes) -> None:
    healths = [Health(queue=c.queue) for c in consumes]
    health = ServiceHealth(healths)
    stopping = asyncio.Event()
    consumers: list[Consumer[Any]] = []

    def stop() -> None:
        stopping.set()
        for consumer in consumers:
            consumer.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    runner = await start_health_server(
        health, settings.health_host, settings.health_port, settings.health_fd
    )
    log.info("service.starting", queues=[c.queue for c in consumes], health_port=bound_port(runner))
    ticker = asyncio.create_task(_tick(health))
    try:
        db = await connect_until_up(settings, stopping)
        if db is None:
            return
        try:
            async with Aws(settings) as aws, AsyncExitStack() as stack:
                handlers = [
                    await stack.enter_async_context(c.build(Resources(settings, aws, db)))
                    for c in consumes
                ]
                # One set of checks for the whole process: its consumers share them.
                dependencies = service_dependencies(
                    settings,
                    aws,
                    db,
                    consumes[0].queue,
                    uses_s3=any(h.uses_s3 for h in handlers),
                )
                consumers.extend(
                    consumer_for(
                        settings
                        if c.concurrency is None
                        else settings.model_copy(update={"concurrency": c.concurrency}),
                        aws,
                        db,
                        c.queue,
                        h,
                        hc,
                        dependencies,
                    )
                    for c, h, hc in zip(consumes, handlers, healths, strict=True)
                )
                ticker.cancel()  # the consumers tick from their first line on
                if stopping.is_set():
                    return
                maintenance = [
                    asyncio.create_task(run_periodic(task, db, dependencies), name=task.name)
                    for h in handlers
                    for task in h.periodic()
                ] + [
                    asyncio.create_task(work)
                    for h in handlers
                    for work in h.background(dependencies)
                ]
                try:
                    await _run_all(consumers)
                finally:
                    for task in maintenance:
                        task.cancel()
                    await asyncio.gather(*maintenance, return_exceptions=True)
        finally:
            await db.close()
    finally:
        ticker.cancel()
        await runner.cleanup()


async def _run_all(consumers: list[Consumer[Any]]) -> None:
    """Run every consumer; if one crashes, stop the others (they drain), then raise."""
    tasks = [asyncio.create_task(c.run(), name=f"consume {c.queue}") for c in consumers]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for consumer in consumers:
            consumer.stop()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _tick(health: ServiceHealth) -> None:
    """Liveness while the service waits for its dependencies at start-up."""
    while True:
        health.tick()
        await asyncio.sleep(1.0)


async def connect_until_up(
    settings: IngestSettings, stopping: asyncio.Event
) -> asyncpg.Pool | None:
    """Containers start in any order, and a database may be failing over: wait for it
    (not ready meanwhile) rather than crash-loop. None if told to stop first."""
    attempt = 0
    while not stopping.is_set():
        attempt += 1
        try:
            return await create_pool(settings)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("service.db_unavailable", attempt=attempt, error=str(exc))
        try:
            async with asyncio.timeout(min(10.0, 0.5 * 2**attempt)):
                await stopping.wait()
        except TimeoutError:
            pass
    return None
