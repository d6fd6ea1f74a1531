"""The services as real processes: SIGTERM on an idle service ends it at once, and a service
started before its database is reachable waits for it, alive and not ready."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from ingest_common.aws import Aws
from ingest_devstack.local import SERVICES, ServiceProcesses, local_env, stop_process

from tests.reliability.proxy import FaultProxy

pytestmark = pytest.mark.e2e

# Seconds from SIGTERM to exit for an idle service, mid long poll: well within Docker's and
# ECS's 10 s grace (an idle service exits in about 1 s alone; CI's parallel outage cases
# load both cores, and 2.0 s was missed by half a second there).
EXIT_WITHIN = 3.0
LONG_POLL = "20"  # the default: SIGTERM must not wait for the poll in progress to end


def health(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of a health endpoint (0 and {} if nothing answers)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


async def wait_health(
    port: int,
    path: str,
    status: int,
    timeout: float,
    process: subprocess.Popen[bytes],
    also: Callable[[dict[str, Any]], bool] = lambda _: True,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen: tuple[int, dict[str, Any]] = (0, {})
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited with {process.returncode}"
        seen = await asyncio.to_thread(health, port, path)
        if seen[0] == status and also(seen[1]):
            return seen[1]
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} did not answer {status} within {timeout} s; last: {seen}")


def idle(body: dict[str, Any]) -> bool:
    return body["in_flight"] == 0 and body["paused"] is False


async def until_empty(aws: Aws, queue: str, timeout: float = 30) -> None:
    url = await aws.queue_url(queue)
    names: list[Any] = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    deadline = time.monotonic() + timeout
    while True:
        response = await aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)
        counts = {name: int(response["Attributes"][name]) for name in names}
        if not any(counts.values()):
            return
        assert time.monotonic() < deadline, f"{queue} not empty after {timeout} s: {counts}"
        await asyncio.sleep(0.2)


def seconds_to_exit(process: subprocess.Popen[bytes], timeout: float = 30) -> float:
    """SIGTERM, then the seconds until the process has exited (killed after `timeout`)."""
    signalled = time.monotonic()
    stop_process(process, timeout)
    return time.monotonic() - signalled


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], ServiceProcesses]]:
    """Service processes that a test starts; whatever is still running at the end is stopped."""
    started: list[ServiceProcesses] = []

    def make(env: dict[str, str]) -> ServiceProcesses:
        (tmp_path / "logs").mkdir(exist_ok=True)
        running = ServiceProcesses(env, tmp_path / "logs")
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop(timeout=10)


async def test_sigterm_on_an_idle_service_exits_at_once(
    aws: Aws,
    database_url: str,
    moto_endpoint: str,
    stack: Callable[[dict[str, str]], ServiceProcesses],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    env = local_env(
        moto_endpoint,
        database_url,
        receive_wait_seconds=LONG_POLL,
        render_workers="1",
        log_format="json",
    )
    running = stack(env)
    for name in SERVICES:
        running.start(name)
    for name in SERVICES:
        body = await wait_health(
            running.health_ports[name], "/readyz", 200, 60, running.processes[name]
        )
        # The batcher may get moto's s3:TestEvent from the bootstrap: idle once it is gone.
        for queue in body.get("queues", [body.get("queue")]):
            await until_empty(aws, queue)
        await wait_health(
            running.health_ports[name], "/readyz", 200, 10, running.processes[name], also=idle
        )
    # Every poller is now inside its 20 s long poll on an empty queue.
    await asyncio.sleep(1)

    exits: dict[str, tuple[int | None, float]] = {}
    for name in SERVICES:
        process = running.processes[name]
        assert process.poll() is None, f"{name} exited before its SIGTERM"
        took = await asyncio.to_thread(seconds_to_exit, process)
        exits[name] = (process.returncode, took)
        record_property(f"{name}_exit_seconds", round(took, 2))
    logs = {name: (tmp_path / "logs" / f"{name}.log").read_text() for name in SERVICES}
    for name, (code, took) in exits.items():
        assert code == 0, f"{name} exited with {code}:\n{logs[name][-3000:]}"
        assert took < EXIT_WITHIN, f"{name} took {took:.2f} s to exit: {exits}"
        assert "consumer.stopped" in logs[name], logs[name][-3000:]
        assert "Traceback" not in logs[name], logs[name][-3000:]


async def test_a_service_started_before_its_database_waits_for_it(
    aws: Aws,
    database_url: str,
    moto_endpoint: str,
    stack: Callable[[dict[str, str]], ServiceProcesses],
) -> None:
    parts = urlsplit(database_url)
    assert parts.hostname is not None
    assert parts.port is not None
    with FaultProxy(parts.hostname, parts.port) as db_link:
        await asyncio.to_thread(db_link.refuse)
        env = local_env(moto_endpoint, db_link.dsn(database_url), log_format="json")
        running = stack(env)
        process = running.start("indexer")
        port = running.health_ports["indexer"]

        await wait_health(port, "/healthz", 200, 30, process)
        # A few reconnection attempts' worth: alive all along, never ready.
        answers: list[tuple[int, int]] = []
        for _ in range(12):
            live, _ = await asyncio.to_thread(health, port, "/healthz")
            ready, _ = await asyncio.to_thread(health, port, "/readyz")
            answers.append((live, ready))
            await asyncio.sleep(0.25)
        assert set(answers) == {(200, 503)}, answers
        assert process.poll() is None, f"exited with {process.returncode}"
        assert db_link.counters.accepted == 0  # it kept trying a refused address, nothing else

        await asyncio.to_thread(db_link.up)
        # Its reconnection backoff is at most 10 s, plus the start-up after it.
        body = await wait_health(port, "/readyz", 200, 30, process)
        assert body["dependencies"]["postgres"]["up"] is True
        assert db_link.counters.accepted > 0, "ready without reaching PostgreSQL?"
        took = await asyncio.to_thread(seconds_to_exit, process)
    assert process.returncode == 0
    assert took < EXIT_WITHIN
