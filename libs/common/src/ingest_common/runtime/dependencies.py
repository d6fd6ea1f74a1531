"""Whether PostgreSQL, SQS and S3 answer: checked in the background and whenever work fails.

An outage must pause work, not burn it. So a failure counts as an outage only when a check
confirms it (a dependency did not answer within `probe_timeout`), and a check is what
ends one: the consumer stops receiving while any dependency is down and starts again by
itself once every check passes. Checks run every `dependency_check_interval` seconds while
all is well, every `outage_probe_interval` seconds during an outage, and when a handler
fails: a check that starts after the failure (failures that arrive together share one).

What counts as "answers": PostgreSQL runs `SELECT 1` on a connection of the checker's own
(a pooled connection may be half-open after a failover; a fresh one proves the path);
SQS and S3 answer any HTTP response below 500 — a 403 or 404 is an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import structlog
from botocore.exceptions import ClientError

from ingest_common.aws import Aws
from ingest_common.settings import IngestSettings

log = structlog.get_logger("ingest.dependencies")

Probe = Callable[[], Awaitable[None]]  # returns if the dependency answers, raises if not


@dataclass
class DependencyState:
    name: str
    up: bool = True
    changed_at: float = 0.0  # monotonic
    error: str | None = None

    def snapshot(self) -> dict[str, object]:
        return {
            "up": self.up,
            "for_seconds": round(time.monotonic() - self.changed_at, 1),
            **({"error": self.error} if self.error else {}),
        }


class Dependencies:
    """The reachability of a service's dependencies, each checked by a probe."""

    def __init__(
        self,
        settings: IngestSettings,
        probes: dict[str, Probe],
        *,
        on_recovered: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.probes = probes
        self.on_recovered = on_recovered
        now = time.monotonic()
        self.states = {name: DependencyState(name, changed_at=now) for name in probes}
        self._changed = asyncio.Event()  # for wait_up
        self._wake = asyncio.Event()  # for run: a state changed, change pace
        self._checking: asyncio.Task[bool] | None = None
        self._next: asyncio.Task[bool] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._users = 0

    @property
    def up(self) -> bool:
        return all(state.up for state in self.states.values())

    def down(self) -> list[str]:
        return [name for name, state in self.states.items() if not state.up]

    def snapshot(self) -> dict[str, dict[str, object]]:
        return {name: state.snapshot() for name, state in self.states.items()}

    async def check(self) -> bool:
        """Probe every dependency (or join the check under way); True if all answer."""
        if self._checking is None or self._checking.done():
            self._checking = asyncio.create_task(self._check_all(), name="dependency-check")
        return await asyncio.shield(self._checking)

    async def confirm_outage(self) -> bool:
        """After a failure: is a dependency down (an outage), or did the work fail on its own?

        Only a check that starts after the failure can say: one under way may have probed
        before it. So wait for the next check; failures that arrive together share it.
        """
        if self._next is None:
            self._next = asyncio.create_task(self._check_next(), name="dependency-confirm")
        return not await asyncio.shield(self._next)

    async def _check_next(self) -> bool:
        if self._checking is not None and not self._checking.done():
            await asyncio.wait([self._checking])
        # From here on, a failure needs a check that starts later than this one.
        self._next = None
        return await self.check()

    async def wait_up(self, stopping: asyncio.Event) -> None:
        """Return when every dependency answers again, or when `stopping` is set."""
        while not self.up and not stopping.is_set():
            self._changed.clear()
            waiters = [asyncio.ensure_future(e.wait()) for e in (self._changed, stopping)]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def run(self) -> None:
        """Check forever: slowly while all is well, quickly during an outage (and switch
        pace at once when a handler's failure reveals one).

        The consumers of one service share their dependencies: the first to call this
        starts the checks, the others join them, and the last to be cancelled stops them.
        """
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._check_forever(), name="dependency-checks")
        runner = self._runner
        self._users += 1
        try:
            await asyncio.shield(runner)
        finally:
            self._users -= 1
            if self._users == 0:
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)

    async def _check_forever(self) -> None:
        while True:
            await self.check()
            self._wake.clear()
            interval = (
                self.settings.dependency_check_interval
                if self.up
                else self.settings.outage_probe_interval
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()

    async def _check_all(self) -> bool:
        names = list(self.probes)
        results = await asyncio.gather(*(self._probe(name) for name in names))
        for name, error in zip(names, results, strict=True):
            await self._record(name, error)
        return self.up

    async def _probe(self, name: str) -> str | None:
        """None if `name` answered in time, else why not."""
        try:
            async with asyncio.timeout(self.settings.probe_timeout):
                await self.probes[name]()
        except TimeoutError:
            return f"no answer within {self.settings.probe_timeout:g} s"
        except Exception as exc:  # whatever stops it answering is the outage's reason
            return str(exc) or type(exc).__name__
        return None

    async def _record(self, name: str, error: str | None) -> None:
        state = self.states[name]
        if (error is None) == state.up:
            state.error = error
            return
        state.up, state.error, state.changed_at = error is None, error, time.monotonic()
        self._changed.set()
        self._wake.set()
        if error is None:
            log.warning("dependency.recovered", dependency=name)
            if self.on_recovered is not None:
                await self.on_recovered(name)
        else:
            log.error("dependency.down", dependency=name, error=error)


# --- the probes ----------------------------------------------------------------------------


class PostgresProbe:
    """`SELECT 1` on a connection of its own, reopened after any failure."""

    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self._connection: asyncpg.Connection | None = None

    async def __call__(self) -> None:
        try:
            if self._connection is None or self._connection.is_closed():
                self._connection = await asyncpg.connect(
                    self.settings.database_url, timeout=self.settings.probe_timeout
                )
            await self._connection.fetchval("SELECT 1")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        # terminate, not close: a graceful close waits for a server that may not answer.
        if self._connection is not None:
            self._connection.terminate()
            self._connection = None


def sqs_probe(aws: Aws, queue: str) -> Probe:
    async def probe() -> None:
        url = await aws.queue_url(queue)
        await _answers(aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))

    return probe


def s3_probe(aws: Aws, bucket: str) -> Probe:
    async def probe() -> None:
        await _answers(aws.s3.head_bucket(Bucket=bucket))

    return probe


async def _answers(call: Awaitable[object]) -> None:
    """An HTTP answer below 500 (403 and 404 included) means the endpoint is there."""
    try:
        await call
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)
        if status >= 500:
            raise
