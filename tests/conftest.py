"""Real components for every test: PostgreSQL and a moto server over HTTP on loopback.

- PostgreSQL: the server at DATABASE_URL (default: the local one). Each test run creates
  its own database, migrates it, and drops it at the end; tables are emptied between
  tests. With INGEST_TEST_POSTGRES=container, testcontainers starts postgres:15 instead
  (for machines with a Docker engine).
- AWS: one moto server per run (`ingest_devstack.local.moto_server`: moto's app under gunicorn,
  keep-alive connections) on a free loopback port, reset before each test and
  bootstrapped with the real topology.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from ingest_common.aws import Aws
from ingest_common.db.pool import create_pool
from ingest_common.settings import IngestSettings
from ingest_common.telemetry.tracing import configure_tracing
from ingest_common.topology import apply_topology, load_topology
from ingest_devstack.local import LOCAL_CREDENTIALS, moto_server, scratch_database
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

# Shared helpers that assert (tests.integration.pipeline): pytest explains their failures too.
pytest.register_assert_rewrite("tests.integration.pipeline")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
TABLES = (
    "outbox, object_garbage, maintenance_runs, backfill_runs, search_documents, family_previews, images,"
    " products, uploads, families, contributors"
)


# The outage tests hold a dependency down for minutes and mostly wait. Run under
# `--dist loadgroup` (make test), they are collected first in this many xdist groups, so they
# overlap the CPU-bound rest instead of running last, alone; at most this many run at once, as
# each runs the whole stack and, when its outage ends, every service reconnects to PostgreSQL
# (four at once ran the machine's server out of its 100 connections).
OUTAGE_LANES = 2


# First: xdist's own hook turns each item's group marks into its node ID, and would not see
# marks added after it. tests/unit/test_xdist_groups.py checks that the lanes hold.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # In an xdist worker, "dist" reads "no": xdist leaves "loadgroup" there instead.
    if config.getoption("dist", "no") != "loadgroup" and not config.getoption("loadgroup", False):
        return
    outages = [item for item in items if item.get_closest_marker("outage") is not None]
    for n, item in enumerate(outages):
        item.add_marker(pytest.mark.xdist_group(f"outage-{n % OUTAGE_LANES}"))
    first = set(outages)
    items.sort(key=lambda item: item not in first)


# --- the reliability summary: cases tried, passed, data lost ---------------------------

_RELIABILITY: list[tuple[str, str, bool, int]] = []
_FIGURES: list[tuple[str, str, float]] = []  # (case, what, value)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability-results",
        metavar="FILE",
        help="add this run's reliability cases to FILE (JSON) and print the table of all of"
        " them: `make test` runs the `quiet` tests in a second pytest run, and one table"
        " shows both. Write it --reliability-results=FILE: pytest reads an existing FILE"
        " after a space as a test path before it knows this option",
    )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "tests/reliability/" not in report.nodeid.replace("\\", "/"):
        return
    if report.when == "call" or (report.when == "setup" and report.failed):
        lost = _data_lost(report)
        module, _, case = report.nodeid.partition("::")
        if case.rfind("@") > case.rfind("]"):  # xdist's "@group" suffix (loadgroup)
            case = case[: case.rfind("@")]
        _RELIABILITY.append((Path(module).stem.removeprefix("test_"), case, report.passed, lost))
        _FIGURES.extend(
            (case, str(value[0]), float(value[1]))
            for key, value in report.user_properties
            if key == "figure" and isinstance(value, (tuple, list))
        )


def _data_lost(report: pytest.TestReport) -> int:
    """The items a case lost, as recorded by the `data_lost` fixture."""
    lost = 0
    for key, value in report.user_properties:
        if key == "data_lost":
            assert isinstance(value, int), f"data_lost must be an int, got {value!r}"
            lost += value
    return lost


def _with_earlier_runs(config: pytest.Config) -> None:
    """Prepend the cases the earlier runs saved in --reliability-results, then save all."""
    option = config.getoption("reliability_results")
    if option is None or hasattr(config, "workerinput"):  # xdist's controller saves, once
        return
    path = Path(option)
    if path.exists():
        earlier = json.loads(path.read_text())
        _RELIABILITY[:0] = [(g, c, bool(p), int(n)) for g, c, p, n in earlier["cases"]]
        _FIGURES[:0] = [(c, w, float(v)) for c, w, v in earlier["figures"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cases": _RELIABILITY, "figures": _FIGURES}))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    _with_earlier_runs(terminalreporter.config)
    if not _RELIABILITY:
        return
    write = terminalreporter.write_line
    terminalreporter.section("reliability: hostile input and faults")
    write(f"{'group':<18} {'tried':>6} {'passed':>7} {'data lost':>10}")
    groups = sorted({group for group, *_ in _RELIABILITY})
    for group in [*groups, "total"]:
        rows = [r for r in _RELIABILITY if group in ("total", r[0])]
        write(
            f"{group:<18} {len(rows):>6} {sum(r[2] for r in rows):>7} {sum(r[3] for r in rows):>10}"
        )
    for group, case, passed, lost in _RELIABILITY:
        if not passed or lost:
            write(f"  FAILED {group}::{case}  (data lost: {lost})")
    if _FIGURES:
        write("figures (seconds unless said otherwise):")
        for case in dict.fromkeys(case for case, _, _ in _FIGURES):
            shown = ", ".join(f"{what} {value:.1f}" for c, what, value in _FIGURES if c == case)
            write(f"  {case}: {shown}")


@pytest.fixture
def data_lost(request: pytest.FixtureRequest) -> Callable[[int], None]:
    """Record how many items a reliability case lost, for the summary table."""

    def record(count: int) -> None:
        request.node.user_properties.append(("data_lost", count))

    return record


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[[str, float], None]:
    """Record a measured figure of a reliability case (a recovery time), for the summary."""

    def record(what: str, value: float) -> None:
        request.node.user_properties.append(("figure", (what, value)))

    return record


@pytest.fixture(scope="session", autouse=True)
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span the test process makes, so tests can check trace propagation."""
    exporter = InMemorySpanExporter()
    provider = configure_tracing("tests", exporter, client_spans=1.0)  # every span, to check
    yield exporter
    provider.shutdown()


@pytest.fixture
def new_spans(spans: InMemorySpanExporter) -> Callable[[], list[ReadableSpan]]:
    """The spans finished since the test started (the exporter serves the whole session)."""
    before = {id(s) for s in spans.get_finished_spans()}

    def finished() -> list[ReadableSpan]:
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider)
        provider.force_flush()
        return [s for s in spans.get_finished_spans() if id(s) not in before]

    return finished


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    if os.environ.get("INGEST_TEST_POSTGRES") == "container":
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:15", driver=None) as container:
            yield container.get_connection_url()
    else:
        yield os.environ.get("DATABASE_URL", DEFAULT_DSN)


@pytest.fixture(scope="session")
async def database_url(postgres_server: str) -> AsyncIterator[str]:
    """A database of this test run's own, migrated, dropped at the end."""
    async with scratch_database(postgres_server, "ingest_test") as dsn:
        yield dsn


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    os.environ.update(LOCAL_CREDENTIALS)
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        yield endpoint


@pytest.fixture
def settings(database_url: str, moto_endpoint: str) -> IngestSettings:
    return IngestSettings(
        database_url=database_url,
        aws_endpoint_url=moto_endpoint,
        receive_wait_seconds=1,
        retry_base_delay=0,
        retry_max_delay=1,
        heartbeat_interval=1,
        drain_timeout=10,
        garbage_delay=0,
    )


@pytest.fixture
async def aws(settings: IngestSettings) -> AsyncIterator[Aws]:
    """A reset AWS endpoint with the real topology applied."""
    request = urllib.request.Request(f"{settings.aws_endpoint_url}/moto-api/reset", method="POST")
    urllib.request.urlopen(request).close()
    async with Aws(settings) as client:
        await apply_topology(client, load_topology(settings))
        yield client


@pytest.fixture
async def db(settings: IngestSettings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(settings)
    await pool.execute(f"TRUNCATE {TABLES} CASCADE")
    try:
        yield pool
    finally:
        await pool.close()
