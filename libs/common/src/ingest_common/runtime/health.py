"""Health and readiness over HTTP, read from state the consumer keeps up to date.

`/healthz` (liveness: restart me?) answers 503 only for a stuck process: its event loop
has not ticked within `liveness_ttl` seconds (a blocked loop does not answer at all, which
a probe with a timeout also reads as unhealthy), or one of the consumer's own loops
(poller, heartbeat, deleter, dependency checks) has died. Busy handler slots, a long
backlog and an outage are not failures of the process: restarting it would not help.

`/readyz` (readiness: should I get work?) answers 200 once the service is connected, while
it is not draining and not paused, i.e. every dependency answers its checks. It turns 503
within one check interval of PostgreSQL or AWS going away, and back to 200 by itself.

`/metrics` answers the OpenTelemetry metrics of the process in Prometheus text format (see
`ingest_common.telemetry.metrics`), 404 when metrics are not configured.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ingest_common.telemetry.metrics import prometheus_text

LIVENESS_TTL = 30.0  # seconds without an event-loop tick that mean the process is stuck


@dataclass
class Health:
    queue: str
    liveness_ttl: float = LIVENESS_TTL
    ready: bool = False
    draining: bool = False
    paused: bool = False  # an outage: not receiving until every dependency answers
    last_tick: float = field(default_factory=time.monotonic)
    received: int = 0
    succeeded: int = 0
    retried: int = 0
    failed: int = 0
    invalid: int = 0
    handed_back: int = 0  # during outages, at no cost to their tries
    in_flight: int = 0
    # What else the answers show: the dependencies' states, the loops that must stay alive.
    dependencies: Callable[[], dict[str, dict[str, object]]] = field(default=dict, repr=False)
    loops: dict[str, asyncio.Task[None]] = field(default_factory=dict, repr=False)

    def tick(self) -> None:
        self.last_tick = time.monotonic()

    def dead_loops(self) -> list[str]:
        """Loops that ended on their own. While draining they end as asked, unless they
        raised."""
        return [
            name
            for name, task in self.loops.items()
            if task.done()
            and (not self.draining or (not task.cancelled() and task.exception() is not None))
        ]

    @property
    def alive(self) -> bool:
        return time.monotonic() - self.last_tick < self.liveness_ttl and not self.dead_loops()

    @property
    def accepting(self) -> bool:
        """Ready for work: connected, not draining, every dependency answering (the poller
        pauses as soon as it looks; a receive under way may still hold it), and alive."""
        dependencies_up = all(state["up"] for state in self.dependencies().values())
        return (
            self.ready and not self.draining and not self.paused and dependencies_up and self.alive
        )

    def snapshot(self) -> dict[str, object]:
        return {
            "queue": self.queue,
            "alive": self.alive,
            "ready": self.accepting,
            "draining": self.draining,
            "paused": self.paused,
            "seconds_since_tick": round(time.monotonic() - self.last_tick, 3),
            "dead_loops": self.dead_loops(),
            "dependencies": self.dependencies(),
            "in_flight": self.in_flight,
            "received": self.received,
            "succeeded": self.succeeded,
            "retried": self.retried,
            "failed": self.failed,
            "invalid": self.invalid,
            "handed_back": self.handed_back,
        }


@dataclass
class ServiceHealth:
    """A service's health over its consumers (the processor consumes two queues): alive if
    all are, ready if all are."""

    consumers: list[Health]

    @property
    def alive(self) -> bool:
        return all(health.alive for health in self.consumers)

    @property
    def accepting(self) -> bool:
        return all(health.accepting for health in self.consumers)

    def tick(self) -> None:
        for health in self.consumers:
            health.tick()

    def snapshot(self) -> dict[str, object]:
        if len(self.consumers) == 1:
            return self.consumers[0].snapshot()
        return {
            "alive": self.alive,
            "ready": self.accepting,
            "paused": any(health.paused for health in self.consumers),
            "in_flight": sum(health.in_flight for health in self.consumers),
            "queues": [health.queue for health in self.consumers],
            "dependencies": self.consumers[0].dependencies(),
            "consumers": {health.queue: health.snapshot() for health in self.consumers},
        }


def health_app(health: Health | ServiceHealth) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response(health.snapshot(), status=200 if health.alive else 503)

    async def readyz(_: web.Request) -> web.Response:
        return web.json_response(health.snapshot(), status=200 if health.accepting else 503)

    async def metrics(_: web.Request) -> web.Response:
        text = prometheus_text()
        if text is None:
            return web.Response(status=404, text="metrics are not configured\n")
        return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def start_health_server(
    health: Health | ServiceHealth, host: str, port: int, fd: int | None = None
) -> web.AppRunner:
    """Serve health on host:port, or on the listening socket ``fd`` when one is inherited."""
    runner = web.AppRunner(health_app(health), access_log=None)
    await runner.setup()
    if fd is None:
        site: web.BaseSite = web.TCPSite(runner, host, port)
    else:
        site = web.SockSite(runner, socket.socket(fileno=fd))
    await site.start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port actually bound (settings may ask for 0, any free port)."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("health server is not listening")
