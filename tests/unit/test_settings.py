"""Settings that cannot work together are refused, naming the variables and their values,
and a service started with them exits at once with code 2 and one line per problem."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import pytest
from ingest_batcher.settings import BatcherSettings
from ingest_common.settings import IngestSettings, settings_problems
from ingest_indexer.settings import IndexerSettings
from ingest_previewer.settings import PreviewerSettings
from ingest_previewer.spec import MosaicSpec
from ingest_processor.settings import ProcessorSettings
from pydantic import ValidationError

SETTINGS_CLASSES: list[type[IngestSettings]] = [
    IngestSettings,
    BatcherSettings,
    ProcessorSettings,
    PreviewerSettings,
    IndexerSettings,
]
EXIT_WITHIN = 15.0  # seconds for a refused start: imports (pyvips) on a loaded 2-core machine


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets: the developer's or CI's own INGEST_* variables must not count."""
    for name in list(os.environ):
        if name.startswith("INGEST_") or name in ("DATABASE_URL", "AWS_ENDPOINT_URL"):
            monkeypatch.delenv(name)


def refusal(settings_class: type[IngestSettings], **values: Any) -> str:
    """The message of the ValidationError that constructing `settings_class` raises."""
    with pytest.raises(ValidationError) as caught:
        settings_class(**values)
    return str(caught.value)


# (settings class, values, the variables and values the message must name)
CONFLICTS = [
    pytest.param(
        IngestSettings,
        {"heartbeat_interval": 61, "visibility_timeout": 120},
        ["INGEST_HEARTBEAT_INTERVAL (61 s)", "INGEST_VISIBILITY_TIMEOUT (120 s)"],
        id="heartbeat-over-half-the-visibility",
    ),
    pytest.param(
        IngestSettings,
        {"drain_timeout": 120, "visibility_timeout": 120},
        ["INGEST_DRAIN_TIMEOUT (120 s)", "INGEST_VISIBILITY_TIMEOUT (120 s)"],
        id="drain-not-shorter-than-visibility",
    ),
    pytest.param(
        IngestSettings,
        {"retry_base_delay": 10, "retry_max_delay": 5},
        ["INGEST_RETRY_BASE_DELAY (10 s)", "INGEST_RETRY_MAX_DELAY (5 s)"],
        id="retry-base-over-max",
    ),
    pytest.param(
        IngestSettings,
        {"db_pool_min": 11, "db_pool_max": 10},
        ["INGEST_DB_POOL_MIN (11)", "INGEST_DB_POOL_MAX (10)"],
        id="pool-min-over-max",
    ),
    pytest.param(
        IngestSettings,
        {"probe_timeout": 10, "dependency_check_interval": 10},
        ["INGEST_PROBE_TIMEOUT (10 s)", "INGEST_DEPENDENCY_CHECK_INTERVAL (10 s)"],
        id="probe-timeout-not-shorter-than-check-interval",
    ),
    pytest.param(
        ProcessorSettings,
        {"render_timeout": 600, "handler_timeout": 600},
        ["INGEST_RENDER_TIMEOUT (600 s)", "INGEST_HANDLER_TIMEOUT (600 s)"],
        id="render-timeout-not-shorter-than-handler-timeout",
    ),
    pytest.param(
        # A service's own default takes part: the batcher's visibility is 300 s, not 120.
        BatcherSettings,
        {"heartbeat_interval": 151},
        ["INGEST_HEARTBEAT_INTERVAL (151 s)", "INGEST_VISIBILITY_TIMEOUT (300 s)"],
        id="batcher-heartbeat-against-its-own-visibility",
    ),
]


@pytest.mark.parametrize(("settings_class", "values", "named"), CONFLICTS)
def test_each_conflict_is_refused_naming_both_variables_and_values(
    settings_class: type[IngestSettings], values: dict[str, Any], named: list[str]
) -> None:
    message = refusal(settings_class, **values)
    for words in named:
        assert words in message, f"{words!r} not in {message!r}"


@pytest.mark.parametrize(
    ("settings_class", "values"),
    [
        # Each conflict's boundary: the closest values that still work.
        (IngestSettings, {"heartbeat_interval": 60, "visibility_timeout": 120}),
        (IngestSettings, {"drain_timeout": 119.5, "visibility_timeout": 120}),
        (IngestSettings, {"retry_base_delay": 5, "retry_max_delay": 5}),
        (IngestSettings, {"db_pool_min": 10, "db_pool_max": 10}),
        (IngestSettings, {"probe_timeout": 9.9, "dependency_check_interval": 10}),
        (ProcessorSettings, {"render_timeout": 599, "handler_timeout": 600}),
        (BatcherSettings, {"heartbeat_interval": 150}),
    ],
)
def test_the_boundary_of_each_conflict_is_accepted(
    settings_class: type[IngestSettings], values: dict[str, Any]
) -> None:
    settings = settings_class(**values)
    assert settings.conflicts() == []
    for field, value in values.items():
        assert getattr(settings, field) == value


def test_every_conflict_is_reported_not_only_the_first() -> None:
    with pytest.raises(ValidationError) as caught:
        IngestSettings(heartbeat_interval=100, drain_timeout=150, db_pool_min=20)
    lines = settings_problems(IngestSettings, caught.value)
    assert len(lines) == 3, lines
    assert lines[0].startswith("INGEST_HEARTBEAT_INTERVAL (100 s)")
    assert lines[1].startswith("INGEST_DRAIN_TIMEOUT (150 s)")
    assert lines[2].startswith("INGEST_DB_POOL_MIN (20)")


@pytest.mark.parametrize("settings_class", SETTINGS_CLASSES, ids=lambda c: c.__name__)
def test_the_defaults_of_every_settings_class_work(settings_class: type[IngestSettings]) -> None:
    settings = settings_class()
    assert settings.conflicts() == []
    assert settings.heartbeat_interval * 2 <= settings.visibility_timeout


def test_a_conflict_read_from_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGEST_VISIBILITY_TIMEOUT", "60")  # the heartbeat's 30 s still fit
    monkeypatch.setenv("INGEST_DRAIN_TIMEOUT", "90")
    with pytest.raises(ValidationError) as caught:
        IndexerSettings()
    assert settings_problems(IndexerSettings, caught.value) == [
        "INGEST_DRAIN_TIMEOUT (90 s) must be shorter than INGEST_VISIBILITY_TIMEOUT (60 s)"
    ]


def test_field_errors_are_formatted_as_variable_value_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INGEST_CONCURRENCY", "0")
    monkeypatch.setenv("INGEST_LOG_FORMAT", "xml")
    monkeypatch.setenv("INGEST_RECEIVE_WAIT_SECONDS", "soon")
    with pytest.raises(ValidationError) as caught:
        PreviewerSettings()
    assert sorted(settings_problems(PreviewerSettings, caught.value)) == [
        "INGEST_CONCURRENCY='0': Input should be greater than or equal to 1",
        "INGEST_LOG_FORMAT='xml': String should match pattern '^(json|console)$'",
        "INGEST_RECEIVE_WAIT_SECONDS='soon': Input should be a valid integer,"
        " unable to parse string as an integer",
    ]


def test_a_service_field_error_names_the_service_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGEST_RENDER_TIMEOUT", "-1")
    with pytest.raises(ValidationError) as caught:
        ProcessorSettings()
    assert settings_problems(ProcessorSettings, caught.value) == [
        "INGEST_RENDER_TIMEOUT='-1': Input should be greater than 0"
    ]


# --- as a real process ---------------------------------------------------------------------


@pytest.mark.parametrize("service", ["processor", "indexer"])
def test_a_service_with_settings_that_cannot_work_exits_with_code_2_and_the_reason(
    service: str,
) -> None:
    # The environment is the test process's, cleaned of INGEST_* by the fixture: only the
    # heartbeat is wrong (130 s against the default visibility timeout of 120 s).
    env = {**os.environ, "INGEST_HEARTBEAT_INTERVAL": "130"}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", f"ingest_{service}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    assert elapsed < EXIT_WITHIN, f"took {elapsed:.1f} s to refuse its settings"
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"{service}: the settings cannot work:"
    problems = [line for line in lines[1:] if line.startswith("  - ")]
    assert len(problems) == 1, result.stderr
    assert "INGEST_HEARTBEAT_INTERVAL (130 s)" in problems[0]
    assert "INGEST_VISIBILITY_TIMEOUT (120 s)" in problems[0]
    assert len(lines) == 2, f"nothing but the reason: {result.stderr!r}"
    assert result.stdout == ""


def test_the_mosaics_look_and_cost_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert PreviewerSettings().mosaic_spec() == MosaicSpec()  # the defaults live in one place
    monkeypatch.setenv("INGEST_MOSAIC_WEBP_QUALITY", "70")
    monkeypatch.setenv("INGEST_MOSAIC_WEBP_EFFORT", "2")
    monkeypatch.setenv("INGEST_MOSAIC_WEBP_MODE", "lossy")
    spec = PreviewerSettings().mosaic_spec()
    assert (spec.webp_quality, spec.webp_effort, spec.webp_mode) == (70, 2, "lossy")
    monkeypatch.setenv("INGEST_MOSAIC_WEBP_EFFORT", "7")
    monkeypatch.setenv("INGEST_MOSAIC_WEBP_MODE", "lossless")
    with pytest.raises(ValidationError) as caught:
        PreviewerSettings()
    assert settings_problems(PreviewerSettings, caught.value) == [
        "INGEST_MOSAIC_WEBP_EFFORT='7': Input should be less than or equal to 6",
        "INGEST_MOSAIC_WEBP_MODE='lossless': Input should be 'auto' or 'lossy'",
    ]
