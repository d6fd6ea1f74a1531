"""Outages and backlogs: a dependency gone for minutes, or work queued for longer than the
stall timeout, ends in the same complete state as a quiet day.

The four services run as processes and reach PostgreSQL and the AWS endpoint through
fault proxies (`tests/reliability/proxy.py`) that refuse or black-hole connections while
the database and moto keep their state. The tests upload straight to moto, as
contributors keep uploading during an outage.

Timings: every duration setting of the services is 1/8 of its default (`SCALED`), so a
real 30 s outage here is as long, relative to visibility timeouts, retry delays, checks
and the stall timeout, as a 4-minute outage at the defaults, and 120 s as 16 minutes.
The 10-minute case runs 75 s at that scale.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import asyncpg
import pytest
from ingest_cli.upload import upload_set
from ingest_common.aws import Aws
from ingest_devstack.local import ServiceProcesses, local_env

from tests.integration.pipeline import make_zip, manifest, mdi_set
from tests.reliability.faults import (
    IMAGES,
    count_ready,
    finish_and_check,
    stack,
    until,
    upload_sets,
)
from tests.reliability.proxy import FaultProxy
from tests.svgs import blurred_taking, cpu_seconds_to_render

pytestmark = [pytest.mark.e2e, pytest.mark.outage]

# Every duration at 1/8 of its default (a floor where a probe must fit a loaded machine).
SCALED = {
    "receive_wait_seconds": "2",  # 20
    "visibility_timeout": "15",  # 120
    "heartbeat_interval": "4",  # 30
    "retry_base_delay": "0.25",  # 2
    "retry_max_delay": "37",  # 300
    "drain_timeout": "7",  # 60
    "db_command_timeout": "4",  # 30
    "db_connect_timeout": "2",  # 10
    "dependency_check_interval": "1.5",  # 10
    "outage_probe_interval": "0.5",  # 2
    "probe_timeout": "1",  # 5
    "outage_requeue_delay": "1",  # 5
    "safety_net_delay": "37",  # 300
    "stall_timeout": "112",  # 900
    "reconcile_interval": "15",  # 900 (more often: it must not trip over an outage either)
    "reconcile_grace": "37",  # 300
    "sweep_interval": "5",  # 300
    "garbage_delay": "0",
    "render_workers": "1",
    "log_format": "json",
}
NOT_READY_WITHIN = 8.0  # seconds: a check interval plus a probe timeout, with room
Target = Literal["postgres", "aws"]
Fault = Literal["refuse", "blackhole"]


class Stack:
    """The services behind one proxy to PostgreSQL and one to the AWS endpoint."""

    def __init__(self, aws: Aws, database_url: str) -> None:
        endpoint = urlparse(aws.settings.aws_endpoint_url or "")
        database = urlparse(database_url)
        self.aws_link = FaultProxy(endpoint.hostname or "127.0.0.1", endpoint.port or 80)
        self.db_link = FaultProxy(database.hostname or "127.0.0.1", database.port or 5432)
        self.database_url = database_url

    def __enter__(self) -> Stack:
        self.aws_link.start()
        self.db_link.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.aws_link.close()
        self.db_link.close()

    def env(self, **overrides: str) -> dict[str, str]:
        return local_env(
            self.aws_link.endpoint,
            self.db_link.dsn(self.database_url),
            **{**SCALED, **overrides},
        )

    def link(self, target: Target) -> FaultProxy:
        return self.db_link if target == "postgres" else self.aws_link


def readiness(running: ServiceProcesses) -> dict[str, int]:
    """Each service's /readyz status (0: no answer)."""
    statuses = {}
    for name, port in running.health_ports.items():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                statuses[name] = r.status
        except urllib.error.HTTPError as exc:
            statuses[name] = exc.code
        except OSError:
            statuses[name] = 0
    return statuses


async def wait_readiness(running: ServiceProcesses, status: int, timeout: float) -> float:
    """Seconds until every service answers /readyz with `status`."""
    started = time.monotonic()
    while True:
        seen = await asyncio.to_thread(readiness, running)
        if all(code == status for code in seen.values()):
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"/readyz after {timeout} s: {seen}"
        await asyncio.sleep(0.25)


def assert_alive(running: ServiceProcesses) -> None:
    dead = {name: p.returncode for name, p in running.processes.items() if p.poll() is not None}
    assert not dead, f"services died: {dead}"


def log_events(logs: Path, event: str) -> list[dict[str, object]]:
    """The services' JSON log lines of one event."""
    found = []
    for log in logs.glob("*.log"):
        for line in log.read_text().splitlines():
            if line.startswith("{") and (entry := json.loads(line)).get("event") == event:
                found.append(entry)
    return found


def handed_back(logs: Path) -> int:
    """Messages the services handed back during the outage."""
    return len(log_events(logs, "message.outage"))


def logged(logs: Path, event: str, *, why: str) -> bool:
    return any(why in str(entry.get("why", "")) for entry in log_events(logs, event))


async def outage(
    aws: Aws,
    database_url: str,
    tmp_path: Path,
    data_lost: Callable[[int], None],
    figure: Callable[[str, float], None],
    *,
    target: Target,
    fault: Fault,
    seconds: float,
    upload_during: bool = False,
) -> None:
    """Upload, cut `target` for `seconds` mid-way (uploading once more if asked), restore
    it, and check the end state; the figures go to the reliability summary."""
    logs = tmp_path / "logs"
    with Stack(aws, database_url) as links:
        async with stack(links.env(), logs) as running:
            uploads = await upload_sets(aws)
            await until(lambda: _ready_at_least(database_url, 3))
            link = links.link(target)
            getattr(link, fault)()
            cut_at = time.monotonic()
            noticed = await wait_readiness(running, 503, NOT_READY_WITHIN)
            if upload_during:
                late = mdi_subset(tmp_path, 6)
                uploads.append(await upload_set(aws, late, "acme"))
            await asyncio.sleep(max(0.0, seconds - (time.monotonic() - cut_at)))
            assert_alive(running)
            link.up()
            restored_at = time.monotonic()
            ready_again = await wait_readiness(running, 200, 60)
            expected = IMAGES + (6 if upload_during else 0)
            await finish_and_check(aws, database_url, uploads, data_lost, expected_ready=expected)
            assert_alive(running)
            figure("not ready after (s)", noticed)
            figure("ready again after (s)", ready_again)
            figure("finished after (s)", time.monotonic() - restored_at)
            figure("handed back", handed_back(logs))


def mdi_subset(tmp_path: Path, count: int) -> Path:
    return mdi_set(tmp_path / "during-the-outage", count, title="Uploaded during the outage")


async def _ready_at_least(dsn: str, count: int) -> bool:
    try:
        return await count_ready(dsn) >= count
    except (OSError, asyncpg.PostgresError):
        return False


# --- PostgreSQL and the AWS endpoint ------------------------------------------------------


@dataclass(frozen=True)
class Outage:
    target: Target
    fault: Fault
    seconds: float
    upload_during: bool = False


OUTAGES = {
    "postgres refused 30 s": Outage("postgres", "refuse", 30),
    "postgres black-holed 120 s": Outage("postgres", "blackhole", 120),
    "postgres refused 10 min at 1/8 scale": Outage("postgres", "refuse", 75),
    "an upload during a database outage": Outage("postgres", "blackhole", 30, True),
    "aws refused 120 s, an upload during it": Outage("aws", "refuse", 120, True),
    "aws black-holed 120 s": Outage("aws", "blackhole", 120),
}


@pytest.mark.parametrize("case", list(OUTAGES.values()), ids=list(OUTAGES))
async def test_an_outage_ends_in_the_complete_state(
    aws: Aws,
    db: asyncpg.Pool,
    database_url: str,
    tmp_path: Path,
    data_lost: Callable[[int], None],
    figure: Callable[[str, float], None],
    case: Outage,
) -> None:
    await outage(
        aws,
        database_url,
        tmp_path,
        data_lost,
        figure,
        target=case.target,
        fault=case.fault,
        seconds=case.seconds,
        upload_during=case.upload_during,
    )


# --- backlogs ----------------------------------------------------------------------------


async def test_backlog_three_times_the_stall_timeout(
    aws: Aws,
    db: asyncpg.Pool,
    database_url: str,
    tmp_path: Path,
    data_lost: Callable[[int], None],
    figure: Callable[[str, float], None],
) -> None:
    """One image at a time through a queue that holds 3× the stall timeout of work: the
    safety net waits for every image, however long the queue, and fails none."""
    stall = 3
    # The queue's work in CPU seconds, measured here, not in icons: on a faster stack four
    # sets of icons no longer outlasted 3× the stall timeout. Each SVG renders in about
    # 0.4 s, well inside the main lane (render_slow_after, 2 s), 4× the stall timeout in all.
    slow = blurred_taking(0.4)
    count = math.ceil(4 * stall / (cpu_seconds_to_render(slow) or 0.4))
    heavy = {f"heavy-{n}.svg": slow + b" " * n for n in range(count)}  # distinct contents
    archive = tmp_path / "heavy.zip"
    archive.write_bytes(make_zip({"manifest.json": manifest(list(heavy)), **heavy}))
    with Stack(aws, database_url) as links:
        env = links.env(
            stall_timeout=str(stall), safety_net_delay="1", concurrency="1", render_workers="1"
        )
        async with stack(env, tmp_path / "logs"):
            started = time.monotonic()
            # The heavy set first: the others wait behind it long past the stall timeout.
            uploads = [await upload_set(aws, archive, "acme")]
            uploads += await upload_sets(aws)
            expected = IMAGES + count
            await finish_and_check(
                aws, database_url, uploads, data_lost, expected_ready=expected, timeout=240
            )
            took = time.monotonic() - started
    figure("backlog (s)", took)
    assert took > 3 * stall, f"the backlog lasted {took:.0f} s, not 3× the stall timeout"
    # Not a vacuous pass: the safety net did look at stalled-looking sets, and waited.
    assert logged(tmp_path / "logs", "previewer.safety_net_wait", why="render messages queued")


async def test_processor_stopped_longer_than_the_stall_timeout(
    aws: Aws,
    db: asyncpg.Pool,
    database_url: str,
    tmp_path: Path,
    data_lost: Callable[[int], None],
    figure: Callable[[str, float], None],
) -> None:
    """A processor redeployed slowly: the render queue waits, the safety net looks again
    and again, and nothing is failed; the new processor renders everything."""
    stall = 4
    with Stack(aws, database_url) as links:
        env = links.env(stall_timeout=str(stall), safety_net_delay="1")
        async with stack(env, tmp_path / "logs") as running:
            running.processes["processor"].terminate()
            await asyncio.to_thread(running.processes["processor"].wait, 30)
            uploads = await upload_sets(aws)
            await asyncio.sleep(3 * stall)
            assert await count_ready(database_url) == 0
            assert logged(
                tmp_path / "logs", "previewer.safety_net_wait", why="render messages queued"
            ), "the safety net looked at the stalled sets meanwhile"
            running.start("processor")
            await asyncio.to_thread(running.wait_ready)
            restarted = time.monotonic()
            await finish_and_check(aws, database_url, uploads, data_lost)
            figure("finished after the restart (s)", time.monotonic() - restarted)
