"""A local stack: a moto server on loopback and the four services as OS processes.

Used by `ingest demo` and by the end-to-end tests, so both run the services exactly as a
deployment does: separate processes, configured only through the environment.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from ingest_common.db.migrate import migrate

SERVICES = ("batcher", "processor", "previewer", "indexer")
LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections while the context lasts: bound, never
    listening, so no other socket can take it meanwhile (a port found free and closed can
    be taken before it is used)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def listening_socket() -> socket.socket:
    """A TCP socket listening on a free loopback port, for a child process to inherit (or
    for a server of this process): bound before anyone is told its port, so never taken."""
    return socket.create_server(("127.0.0.1", 0), backlog=128)


def wait_http(
    url: str, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def requests_answered(endpoint: str) -> dict[str, int]:
    """How many requests the local emulator at ``endpoint`` has answered, by "<service>
    <operation>" (`moto_app.CountedRequests`)."""
    with urllib.request.urlopen(f"{endpoint}/_ingest/requests", timeout=10) as response:
        counts: dict[str, int] = json.loads(response.read())
    return counts


@contextmanager
def moto_server(log_file: Path | None = None) -> Iterator[str]:
    """Start moto on a free loopback port, with keep-alive connections; yield its endpoint URL.

    One gunicorn worker (moto keeps its state in memory: one process holds it), with threads
    for every long poll and S3 call the services, tests and benchmarks make at once.
    """
    listener = listening_socket()  # gunicorn serves it (fd://): no port to race for
    port = int(listener.getsockname()[1])
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    # moto names itself in some URLs it returns (MOTO_PORT), as `moto.server` would set it.
    env = {**os.environ, "MOTO_PORT": str(port)}
    process = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn",
            "--bind", f"fd://{listener.fileno()}",
            "--worker-class", "gthread", "--workers", "1", "--threads", "128",
            # Longer than any client keeps an idle connection (aiohttp: 15 s), so a client
            # never reuses a connection the server is closing.
            "--keep-alive", "75",
            # A long poll in flight need not hold up the stop for gunicorn's default 30 s.
            "--graceful-timeout", "2",
            # S3 keys (up to 1,024 bytes, URL-encoded) can exceed gunicorn's request-line cap.
            "--limit-request-line", "0", "--limit-request-field_size", "0",
            "--log-level", "warning",
            "ingest_devstack.moto_app:app",
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        pass_fds=(listener.fileno(),),
    )  # fmt: skip
    listener.close()  # gunicorn holds it now
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{endpoint}/moto-api/", process=process)
        yield endpoint
    finally:
        stop_process(process, timeout=5)
        if log_file:
            out.close()  # type: ignore[union-attr]


def stop_process(
    process: subprocess.Popen[bytes], timeout: float, *, signalled: bool = False
) -> int | None:
    """SIGTERM (once: a second one would hit a process already shutting down), then wait."""
    if process.poll() is None:
        if not signalled:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@dataclass
class ServiceProcesses:
    """The four services, each its own process, with its health port and log file."""

    env: Mapping[str, str]
    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    health_ports: dict[str, int] = field(default_factory=dict)

    def start(self, name: str) -> subprocess.Popen[bytes]:
        # The service serves health on a socket bound and listening here, which it inherits:
        # a free port picked and closed here could be taken (by any client's ephemeral port)
        # before the service bound it, and CI saw that happen.
        with listening_socket() as listener:
            env = {**self.env, "INGEST_HEALTH_FD": str(listener.fileno())}
            log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115
            process = subprocess.Popen(
                [sys.executable, "-m", f"ingest_{name}"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(listener.fileno(),),
            )
            log.close()  # the child holds its own descriptors
            self.health_ports[name] = int(listener.getsockname()[1])
        self.processes[name] = process
        return process

    def wait_ready(self, timeout: float = 60.0) -> None:
        for name, process in self.processes.items():
            wait_http(f"http://127.0.0.1:{self.health_ports[name]}/readyz", timeout, process)

    def stop(self, timeout: float = 30.0) -> dict[str, int | None]:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        return {
            name: stop_process(p, timeout, signalled=True) for name, p in self.processes.items()
        }


@contextmanager
def services(
    env: Mapping[str, str],
    log_dir: Path,
    names: tuple[str, ...] = SERVICES,
    *,
    placement: Callable[[str], AbstractContextManager[object]] | None = None,
) -> Iterator[ServiceProcesses]:
    """The services ``names``, started and ready; ``placement(name)``: the context a service
    is started within (a benchmark's CPU quota, say), which its process keeps."""
    log_dir.mkdir(parents=True, exist_ok=True)
    running = ServiceProcesses(env, log_dir)
    try:
        for name in names:
            with placement(name) if placement is not None else nullcontext():
                running.start(name)
        running.wait_ready()
        yield running
    finally:
        running.stop()


def local_env(endpoint: str, database_url: str, **settings: str) -> dict[str, str]:
    """The environment of a local run: loopback AWS endpoint, test credentials, settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
    env.update(LOCAL_CREDENTIALS)
    env.update({"AWS_ENDPOINT_URL": endpoint, "DATABASE_URL": database_url})
    env.update({f"INGEST_{k.upper()}": v for k, v in settings.items()})
    return env


def database_on(server_dsn: str, name: str) -> str:
    """The DSN of database `name` on the server of `server_dsn`."""
    return f"{server_dsn.rpartition('/')[0]}/{name}"


async def _drop_database(server_dsn: str, name: str, *, create: bool = False) -> None:
    """Drop `name` on the server of `server_dsn` (then create it empty if `create`)."""
    admin = await asyncpg.connect(server_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


async def fresh_database(server_dsn: str, name: str) -> str:
    """Drop and create `name` on the server of `server_dsn`, migrate it; return its DSN."""
    await _drop_database(server_dsn, name, create=True)
    dsn = database_on(server_dsn, name)
    await migrate(dsn)
    return dsn


@asynccontextmanager
async def scratch_database(server_dsn: str, prefix: str) -> AsyncIterator[str]:
    """A migrated database of its own (tests, benchmarks), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    dsn = await fresh_database(server_dsn, name)
    try:
        yield dsn
    finally:
        await _drop_database(server_dsn, name)
