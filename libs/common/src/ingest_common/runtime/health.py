"""Health and readiness over HTTP, read from counters the consumer keeps up to date.

`/healthz` answers 200 while the poll loop has shown a sign of life within its TTL (a
stuck event loop or a dead poller turns it 503, so the orchestrator restarts the task);
`/readyz` answers 200 once the service is connected and not draining. `/metrics` answers
the OpenTelemetry metrics of the process in Prometheus text format (see
`ingest_common.telemetry.metrics`), 404 when metrics are not configured.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ingest_common.telemetry.metrics import prometheus_text


@dataclass
class Health:
    queue: str
    liveness_ttl: float
    ready: bool = False
    draining: bool = False
    last_beat: float = field(default_factory=time.monotonic)
    received: int = 0
    succeeded: int = 0
    retried: int = 0
    failed: int = 0
    invalid: int = 0
    in_flight: int = 0

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    @property
    def alive(self) -> bool:
        return time.monotonic() - self.last_beat < self.liveness_ttl

    def snapshot(self) -> dict[str, object]:
        data = asdict(self)
        data["alive"] = self.alive
        data["seconds_since_beat"] = round(time.monotonic() - self.last_beat, 3)
        return data


def health_app(health: Health) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response(health.snapshot(), status=200 if health.alive else 503)

    async def readyz(_: web.Request) -> web.Response:
        ok = health.ready and not health.draining and health.alive
        return web.json_response(health.snapshot(), status=200 if ok else 503)

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


async def start_health_server(health: Health, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(health_app(health), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port actually bound (settings may ask for 0, any free port)."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("health server is not listening")
